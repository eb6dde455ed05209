"""Renderers: text, notebook HTML, Mermaid and rich (bounded, escaped, iterative)."""

from __future__ import annotations

import io
import random
import re
import sys
import time
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convtree import ConversationState, Message
from convtree.render import (
    describe_node,
    message_html,
    node_html,
    render_tree,
    rich_tree,
    to_html,
    to_mermaid,
)

from .conftest import make_branching

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '" onmouseover="alert(1)',
    "' onfocus='alert(1)' autofocus='",
    "</div></details><script>alert(2)</script>",
    "&lt;not an entity&gt; &amp;",
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
MB = 1_000_000


class Page(HTMLParser):
    """Parses an HTML fragment strictly enough to catch what escaping must prevent."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.rows: list[dict[str, str | None]] = []
        self.folds: list[str] = []
        self.details: list[dict[str, str | None]] = []
        self.summaries: list[str] = []
        self.open: list[str] = []
        self.depth = 0
        self.max_depth = 0
        self.chunks: list[str] = []
        self._capture: list[list[str]] = []
        self.feed(text)
        self.close()
        assert self.open == [], f"unclosed elements: {self.open[-5:]}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if "ct-node" in classes:
            self.rows.append(found)
        if tag == "details":
            self.details.append(found)
        if tag in VOID:
            return
        self.open.append(tag)
        self.max_depth = max(self.max_depth, len(self.open))
        if "ct-fold" in classes or tag == "summary" or self._capture:
            self._capture.append([tag])

    def handle_endtag(self, tag: str) -> None:
        assert self.open[-1:] == [tag], f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        if self._capture:
            done = self._capture.pop()
            if self._capture:
                self._capture[-1].extend(done[1:])
            elif done[0] == "summary":
                self.summaries.append("".join(done[1:]))
            else:
                self.folds.append("".join(done[1:]))

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)
        if self._capture:
            self._capture[-1].append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def row_ids(self, cls: str | None = None) -> list[str]:
        return [
            str(row["data-node-id"])
            for row in self.rows
            if cls is None or cls in str(row["class"]).split()
        ]


def assert_inert(page: Page) -> None:
    """No element or attribute that could run code came out of the data."""
    assert not {"script", "img", "iframe", "svg", "style", "object"} & set(page.tags)
    assert not [name for name, _ in page.attrs if name.startswith("on")]
    assert not [name for name, _ in page.attrs if name in {"src", "href", "autofocus"}]


def chain(n: int, state: ConversationState | None = None) -> ConversationState:
    state = state or ConversationState("chain")
    for i in range(n):
        state.add_message("user" if i % 2 else "assistant", f"message {i}")
    return state


def comb(depth: int, text: str = "turn") -> ConversationState:
    """A path of ``depth`` messages, each with a sibling leaf: ``depth`` nested branch points."""
    state = ConversationState("comb")
    for i in range(depth):
        parent = state.current_node_id
        state.add_message("user", f"side {i} {text}", parent_id=parent)
        state.add_message("assistant", f"path {i} {text}", parent_id=parent)
    return state


@pytest.fixture(scope="module")
def deep() -> ConversationState:
    return chain(100_000, ConversationState("deep"))


@pytest.fixture(scope="module")
def bushy() -> ConversationState:
    """10,000 nodes: mostly chains, a third of the messages added under a random node."""
    rng = random.Random(7)
    state = ConversationState("bushy")
    ids = [state.current_node_id]
    for i in range(9_999):
        parent = rng.choice(ids) if rng.random() < 0.3 else ids[-1]
        node = state.add_message("user" if i % 2 else "assistant", f"m{i} " * 20, parent_id=parent)
        ids.append(node.node_id)
    return state


# ---------------------------------------------------------------------- text


def test_render_tree_unchanged() -> None:
    state = make_branching()
    state.add_message("assistant", None, parent_id="q2", node_id="calls", tool_calls=[{"id": "c"}])
    state.add_message(
        "user",
        [{"type": "text", "text": "look  at\nthis"}, {"type": "image_url", "image_url": {}}],
        parent_id="sys",
        node_id="mm",
    )
    state.switch_to("a2")
    root = state.root.node_id
    assert render_tree(state, width=12) == "\n".join(
        [
            f"* (root)  {root}",
            "* system: sys  sys",
            "├─* user: question  q",
            "│ ├─  assistant: answer 0 [first]  a0",
            "│ ├─* assistant: answer 1 [second]  a1",
            "│ │ * user: follow-up  q2",
            "│ │ ├─* assistant: answer 2  a2",
            "│ │ └─  assistant: <1 tool cal…  calls",
            "│ └─  assistant: answer 3  a3",
            "└─  user: look at this  mm",
        ]
    )
    assert describe_node(state.get_node("a1"), ids=False) == "assistant: answer 1 [second]"
    assert describe_node(state.get_node("a1"), width=5) == "assistant: answ… [second]  a1"


# ---------------------------------------------------------------------- HTML


def test_html_layout_and_active_path() -> None:
    state = make_branching()
    text = to_html(state)
    page = Page(text)
    assert_inert(page)
    assert text.startswith('<div class="convtree" data-conversation-id="branching"')
    assert page.tags.count("div") >= 1
    assert page.tags[0] == "div"
    header = page.text.split("(root)")[0]
    assert "branching" in header
    assert "7 messages" in header
    assert "3 branch ends" in header
    assert "cursor a2" in header
    root = state.root.node_id
    assert page.row_ids() == [root, "sys", "q", "a0", "a1", "q2", "a2", "a3"]
    assert page.row_ids("ct-active") == [node.node_id for node in state.get_path()]
    assert page.row_ids("ct-cursor") == ["a2"]
    roles = {str(row["data-node-id"]): str(row["class"]).split()[1] for row in page.rows}
    assert roles == {
        root: "ct-root",
        "sys": "ct-role-system",
        "q": "ct-role-user",
        "a0": "ct-role-assistant",
        "a1": "ct-role-assistant",
        "q2": "ct-role-user",
        "a2": "ct-role-assistant",
        "a3": "ct-role-assistant",
    }
    active_style = {str(row["style"]) for row in page.rows if "ct-active" in str(row["class"])}
    other_style = {str(row["style"]) for row in page.rows if "ct-active" not in str(row["class"])}
    assert all("background" in style for style in active_style)
    assert not any("background" in style for style in other_style)
    assert all(
        str(row["title"]).startswith(str(row["data-node-id"]) + " · 20") for row in page.rows
    )
    # A chain is flat; only the branch point q nests its three children.
    assert len(page.details) == 3
    assert [("open" in d) for d in page.details] == [False, True, False]
    assert [s.split(" · ")[0] for s in page.summaries] == ["1 of 3", "2 of 3", "3 of 3"]
    assert "first" in page.summaries[0]
    assert "assistant: answer 0" in page.summaries[0]
    assert "second" in page.text
    assert "first" in page.text
    assert to_html(state, ids=False).count(">a3<") == 0
    assert ">a3<" in text


def test_html_branches_at_the_root() -> None:
    state = ConversationState("two prompts")
    state.add_message("system", "be brief", node_id="s1")
    state.add_message("user", "hi", node_id="u1")
    state.add_message("system", "be verbose", parent_id=state.root.node_id, node_id="s2")
    page = Page(to_html(state))
    assert [s.split(" · ")[0] for s in page.summaries] == ["1 of 2", "2 of 2"]
    assert [("open" in d) for d in page.details] == [False, True]
    assert page.row_ids("ct-active") == [state.root.node_id, "s2"]


def test_html_tool_calls_results_and_content_parts() -> None:
    state = ConversationState("tools")
    state.add_message("user", "find btrees")
    state.add_message(
        "assistant",
        None,
        tool_calls=[
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "search_docs", "arguments": '{"q": "btree"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "fetch", "arguments": "{" + "x" * 500},
            },
        ],
    )
    state.add_message("tool", '{"hits": 3}', tool_call_id="call_1", name="search_docs")
    state.add_message(
        "assistant", None, function_call={"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    )
    state.add_message(
        "user",
        [
            {"type": "text", "text": "what is"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "input_audio", "input_audio": {"data": "...", "format": "wav"}},
            {"type": "file", "file": {"file_id": "f1"}},
            {"type": "video", "video": {}},
            {"type": "text", "text": "this?"},
        ],
    )
    state.add_message("assistant", None)
    page_text = Page(to_html(state)).text
    assert 'calls search_docs({"q": "btree"})' in page_text
    assert "calls fetch({" + "x" * 100 in page_text
    assert "x" * 130 not in page_text  # arguments truncated
    assert "result of call_1" in page_text
    assert "(search_docs)" in page_text
    assert 'calls get_weather({"city": "Oslo"})' in page_text
    assert "what is [image] [audio] [file] [video] this?" in page_text
    assert "(no content)" in page_text
    assert "https://example.com" not in to_html(state)
    assert page_text.count("(no content)") == 1  # not for messages that only call tools


def test_html_preview_and_whitespace() -> None:
    state = ConversationState("long")
    state.add_message("user", "line one\nline two\n" + "y" * 2_000)
    text = to_html(state, preview=300)
    page = Page(text)
    assert "… (1,718 more characters)" in page.text
    assert "line one\nline two\n" in page.text
    assert "white-space:pre-wrap" in text
    assert "more characters" not in Page(to_html(state, preview=5_000)).text


def test_html_escapes_everything_from_the_data() -> None:
    state = ConversationState('c"><script>alert(0)</script>', metadata={"k": HOSTILE[0]})
    for i, bad in enumerate(HOSTILE):
        state.add_message(
            "user",
            bad,
            node_id=f'id{i}"><img src=x onerror=alert({i})>',
            branch_name=bad,
            name=bad,
            metadata={"note": bad},
            prompt_name=bad,
        )
        state.add_message(
            bad,
            [{"type": "text", "text": bad}, {"type": bad}],
            tool_calls=[{"id": bad, "function": {"name": bad, "arguments": bad}}],
            tool_call_id=bad,
        )
    state.add_message("user", "nul\x00 surrogate\ud800 escape\x1b[31m end")
    tool_message = state.get_path()[-2].message
    assert tool_message is not None
    text = to_html(state)
    text.encode("utf-8")  # no lone surrogate left
    assert "\x00" not in text
    assert "\x1b" not in text
    page = Page(text)
    assert_inert(page)
    for bad in HOSTILE:
        assert bad in page.text
    ids = page.row_ids()
    assert 'id0"><img src=x onerror=alert(0)>' in ids
    assert page.tags.count("div") == text.count("<div")
    assert "<script" not in text
    assert "<img" not in text
    assert "nul\ufffd surrogate\ufffd escape\ufffd[31m end" in page.text
    for piece in (node_html(state.get_path()[-3]), message_html(tool_message)):
        piece.encode("utf-8")
        page = Page(piece)
        assert_inert(page)
        assert HOSTILE[-1] in page.text


def test_html_folds_a_100k_chain(deep: ConversationState) -> None:
    text = to_html(deep)
    assert len(text.encode()) < 100_000
    page = Page(text)
    assert len(page.rows) == 20
    assert page.folds == ["… 99,981 more messages"]
    for row in page.rows:
        assert "ct-fold" not in str(row["class"])
    assert page.row_ids("ct-cursor") == [deep.current_node_id]
    assert page.row_ids()[0] == deep.root.node_id


def test_html_cursor_in_the_middle_of_a_long_chain(deep: ConversationState) -> None:
    end = deep.current_node_id
    middle = deep.get_path()[50_000].node_id
    deep.switch_to(middle)
    try:
        page = Page(to_html(deep))
    finally:
        deep.switch_to(end)
    assert page.row_ids("ct-cursor") == [middle]
    assert len(page.rows) == 40
    assert page.folds == ["… 49,981 more messages", "… 49,980 more messages"]
    assert page.row_ids("ct-active")[-1] == middle
    assert len(page.row_ids("ct-active")) == 20


def test_html_bushy_tree_is_bounded_and_fast(bushy: ConversationState) -> None:
    start = time.perf_counter()
    text = to_html(bushy)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0  # ~25 ms; far more would mean quadratic work
    assert len(text.encode()) <= MB
    page = Page(text)
    assert_inert(page)
    assert 500 <= len(page.rows) <= 1000
    path = [node.node_id for node in bushy.get_path()]
    active = page.row_ids("ct-active")
    assert active[0] == path[0]
    assert active[-1] == path[-1]
    assert set(active) <= set(path)
    assert page.max_depth <= 64 + 8
    assert any(fold.endswith("not shown") for fold in page.folds)
    small = Page(to_html(bushy, max_nodes=50))
    assert len(small.rows) <= 50
    assert small.row_ids("ct-cursor") == [bushy.current_node_id]


def test_html_wide_fan_out() -> None:
    state = ConversationState("fan")
    root = state.root.node_id
    for i in range(20_000):
        state.add_message("assistant", f"reply {i}", parent_id=root)
    text = to_html(state)
    assert len(text.encode()) <= MB
    page = Page(text)
    assert 800 <= len(page.rows) <= 1000
    hidden = 20_000 - (len(page.rows) - 1)  # less the root's row
    assert page.folds == [f"… {hidden:,} more branches ({hidden:,} messages) not shown"]
    assert page.row_ids("ct-cursor") == [state.current_node_id]
    assert page.summaries[-1].startswith("20000 of 20000")
    assert page.max_depth <= 8
    assert len(Page(to_html(state, max_nodes=10)).rows) == 10


def test_html_deep_nesting_is_capped() -> None:
    page = Page(to_html(comb(150)))
    assert len(page.rows) == 301  # everything fits
    assert page.max_depth <= 64 + 8
    assert len(page.details) == 64 * 2  # deeper branch points continue unindented
    big = comb(3_000)
    text = to_html(big)
    page = Page(text)
    assert len(page.rows) <= 1000
    assert page.max_depth <= 64 + 8
    path = [node.node_id for node in big.get_path()]
    active = page.row_ids("ct-active")
    assert active[0] == path[0]
    assert active[-1] == path[-1]
    assert page.row_ids("ct-cursor") == [path[-1]]
    [middle] = [fold for fold in page.folds if "side branches" in fold]
    assert re.fullmatch(r"… [\d,]+ more messages \(with [\d,]+ side branches\)", middle)


@pytest.mark.parametrize("shape", ["fan", "chain", "comb"])
@pytest.mark.parametrize("heavy", [False, True])
def test_html_worst_case_stays_under_a_megabyte(shape: str, heavy: bool) -> None:
    quote = '"' * 400  # every character escapes to 6 bytes
    state = ConversationState(quote * 10, metadata={quote: quote})
    root = state.root.node_id
    fields: dict[str, Any] = {}
    if heavy:  # every field as long as it may be, and tool calls
        call = {"id": quote, "function": {"name": quote, "arguments": quote * 10}}
        fields = {
            "branch_name": quote,
            "name": quote,
            "tool_calls": [call] * 12,
            "tool_call_id": quote,
            "metadata": {quote: quote},
            "prompt_name": quote,
        }
    for i in range(300 if heavy else 1_200):
        parent = root if shape == "fan" else state.current_node_id
        if shape == "comb":
            state.add_message("user", quote, parent_id=parent)
        node_id = quote[:249] + f"{i:07d}"
        state.add_message(quote, quote, parent_id=parent, node_id=node_id, **fields)
    text = to_html(state)
    assert len(text.encode()) <= MB
    page = Page(text)
    assert_inert(page)
    assert page.row_ids("ct-cursor") == [state.current_node_id]
    if shape == "chain":
        assert len(page.rows) == 20
    else:
        assert len(page.rows) > (10 if heavy else 100)


def test_html_budget() -> None:
    state = make_branching()
    root = state.root.node_id
    page = Page(to_html(state, max_nodes=6))  # the active path exactly
    assert page.row_ids() == page.row_ids("ct-active") == [root, "sys", "q", "a1", "q2", "a2"]
    assert page.folds == ["… 2 more branches (2 messages) not shown"]
    page = Page(to_html(state, max_nodes=5))  # the path's middle folds
    assert page.row_ids() == [root, "sys", "a1", "q2", "a2"]
    assert page.folds == ["… 3 more messages (with 2 side branches)"]
    page = Page(to_html(state, max_nodes=1))
    assert page.row_ids() == ["a2"]
    assert page.folds == ["… 6 more messages (with 2 side branches)"]
    with pytest.raises(ValueError, match="max_nodes"):
        to_html(state, max_nodes=0)
    with pytest.raises(ValueError, match="preview"):
        to_html(state, preview=-1)


def test_html_fill_order_is_path_then_breadth_first() -> None:
    state = ConversationState("order")
    state.add_message("user", "u1", node_id="u1")
    state.add_message("assistant", "x", node_id="x")
    chain(30, state)  # a long chain under the alternative x
    state.add_message("assistant", "p1", parent_id="u1", node_id="p1")
    state.add_message("user", "y", node_id="y")
    state.add_message("user", "p2", parent_id="p1", node_id="p2")
    # path: root u1 p1 p2 (4 rows); then the alternatives x and y, before x's chain.
    page = Page(to_html(state, max_nodes=6))
    assert page.row_ids() == [state.root.node_id, "u1", "x", "p1", "y", "p2"]
    assert page.folds == ["… 30 more messages not shown"]
    page = Page(to_html(state, max_nodes=8))
    assert len(page.rows) == 8
    assert page.folds == ["… 28 more messages not shown"]


def test_node_and_message_html() -> None:
    state = make_branching()
    node = state.get_node("a1")
    page = Page(node_html(node))
    assert page.row_ids() == ["a1"]
    assert "answer 1" in page.text
    assert "second" in page.text
    assert "ct-active" not in str(page.rows[0]["class"])
    message = Message(role="tool", content="<b>x</b>", tool_call_id="call_9")
    page = Page(message_html(message))
    assert_inert(page)
    assert page.tags == ["div", "b", "span", "span"]
    assert "result of call_9" in page.text
    assert "<b>x</b>" in page.text
    assert "ct-message ct-role-tool" in message_html(message)
    assert "ct-role-other" in message_html(Message(role="Weird Role!", content="x"))
    assert "…" in Page(message_html(Message(role="user", content="abcdef"), preview=3)).text


# ------------------------------------------------------------------- Mermaid

NODE_LINE = re.compile(r'    (n\d+)(\["[^"\n]*"\]|\(\["[^"\n]*"\]\))')
EDGE_LINE = re.compile(r'    (n\d+) (-->|-\.->)(\|"\d+ of \d+"\|)? (n\d+)')
CLASS_LINE = re.compile(r"    class (n\d+(?:,n\d+)*) (active|cursor|fold)")
CLASSDEF_LINE = re.compile(r"    classDef (active|cursor|fold) [a-z0-9:#,\- ]+")


def parse_mermaid(text: str) -> dict[str, Any]:
    lines = text.split("\n")
    assert lines[0] in {
        "flowchart TD",
        "flowchart TB",
        "flowchart BT",
        "flowchart LR",
        "flowchart RL",
    }
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    classes: dict[str, list[str]] = {"active": [], "cursor": [], "fold": []}
    for line in lines[1:]:
        if m := NODE_LINE.fullmatch(line):
            assert m.group(1) not in nodes
            nodes[m.group(1)] = m.group(2)
        elif m := EDGE_LINE.fullmatch(line):
            assert m.group(1) in nodes
            assert m.group(4) in nodes
            edges.append((m.group(1), m.group(4), m.group(3) or ""))
        elif m := CLASS_LINE.fullmatch(line):
            classes[m.group(2)].extend(m.group(1).split(","))
        else:
            assert CLASSDEF_LINE.fullmatch(line), line
    return {"nodes": nodes, "edges": edges, "classes": classes}


def test_mermaid_structure() -> None:
    state = make_branching()
    text = to_mermaid(state)
    graph = parse_mermaid(text)
    assert len(graph["nodes"]) == 8
    assert len(graph["edges"]) == 7
    assert len(graph["classes"]["active"]) == 6
    assert len(graph["classes"]["cursor"]) == 1
    [cursor] = graph["classes"]["cursor"]
    assert "answer 2" in graph["nodes"][cursor]
    labels = sorted(label for _, _, label in graph["edges"] if label)
    assert labels == ['|"1 of 3"|', '|"2 of 3"|', '|"3 of 3"|']
    assert 'n0["#40;root#41;"]' in text
    assert "assistant: answer 0 #91;first#93;" in text
    assert set(graph["classes"]["active"]) | {cursor} == set(graph["classes"]["active"])
    for direction in ("TD", "TB", "BT", "LR", "RL"):
        assert to_mermaid(state, direction=direction).startswith(f"flowchart {direction}\n")
    for bad in ("td", "XY", "TD; click n0 call alert()", ""):
        with pytest.raises(ValueError, match="direction"):
            to_mermaid(state, direction=bad)
    with pytest.raises(ValueError, match="preview"):
        to_mermaid(state, preview=0)
    with pytest.raises(ValueError, match="max_nodes"):
        to_mermaid(state, max_nodes=0)
    graph = parse_mermaid(to_mermaid(state, max_nodes=1))
    assert list(graph["nodes"]) == ["n0", "n1"]  # the folded path, then the cursor
    assert graph["classes"] == {"active": ["n1"], "cursor": ["n1"], "fold": ["n0"]}


def test_mermaid_labels_cannot_break_out() -> None:
    state = ConversationState("m")
    for bad in [
        *HOSTILE,
        '"]] --> click n0 call alert()',
        'x"]\nclick n0 href "javascript:alert(1)"',
        "#quot; %%{init: {}}%% ; | ` [x] {y} (z) <b>",
        "ﬂ°°35¶ß",
    ]:
        state.add_message("user", bad, branch_name=bad)
        state.add_message(bad, bad, parent_id=state.root.node_id)
    text = to_mermaid(state, preview=200)
    graph = parse_mermaid(text)  # every line is one of the known statement forms
    assert not any(line.lstrip().startswith("click") for line in text.split("\n"))
    for label in graph["nodes"].values():
        inner = re.sub(r"#\d+;", "", label[2:-2] if label[0] == "[" else label[3:-3])
        assert not re.search(r"[\"<>;#%`|\[\]{}()\nﬂ°¶ß]", inner), label


def test_mermaid_folds_and_budget(deep: ConversationState) -> None:
    graph = parse_mermaid(to_mermaid(deep))
    assert len(graph["nodes"]) == 21
    assert graph["classes"]["fold"]
    assert "… 99,981 more messages" in str(graph["nodes"])
    state = ConversationState("fan")
    for i in range(1_000):
        state.add_message("user", f"q{i}", parent_id=state.root.node_id)
    graph = parse_mermaid(to_mermaid(state, max_nodes=20))
    rows = [n for n in graph["nodes"] if n not in graph["classes"]["fold"]]
    assert len(rows) == 20
    assert "… 981 more branches #40;981 messages#41; not shown" in str(graph["nodes"])


# ---------------------------------------------------------------------- rich


def render_rich(state: ConversationState, **kwargs: Any) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(rich_tree(state, **kwargs))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def test_rich_tree() -> None:
    state = make_branching()
    state.add_message("user", "[bold red]markup[/] \x1b[31mred", parent_id="a3")
    state.switch_to("a2")
    out = render_rich(state)
    lines = out.splitlines()
    assert "8 messages" in lines[0]
    assert "cursor a2" in lines[0]
    active = [line for line in lines if "●" in line]
    assert len(active) == 6
    assert "answer 2" in active[-1]
    assert "◀ cursor" in active[-1]
    assert "2 of 3" in out
    assert "3 of 3" in out
    assert "[bold red]markup[/]" in out
    assert "\x1b" not in out
    assert len(render_rich(state, max_nodes=3).splitlines()) < len(lines)
    with pytest.raises(ValueError, match="width"):
        rich_tree(state, width=0)


def test_rich_tree_deep_and_missing(
    deep: ConversationState, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = render_rich(deep)
    assert "… 99,981 more messages" in out
    assert "◀ cursor" in out
    assert len(render_rich(comb(40)).splitlines()[-1]) < 100
    monkeypatch.setitem(sys.modules, "rich.tree", None)
    with pytest.raises(ImportError, match=r"pip install 'convtree\[rich\]'"):
        rich_tree(deep)


# ------------------------------------------------------------------ property

TEXT = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
PART = st.fixed_dictionaries(
    {
        "type": st.one_of(
            st.sampled_from(["text", "image_url", "input_audio", "<x>"]), st.integers()
        )
    },
    optional={"text": st.one_of(TEXT, st.integers(), st.lists(st.integers(), max_size=3))},
)
OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add_under", "alternative", "edit", "switch"]),
        st.integers(min_value=0, max_value=10_000),
        st.one_of(TEXT, TEXT, st.none(), st.lists(PART, max_size=4)),
        st.sampled_from(["user", "assistant", "tool", "system", "<b>"]),
    ),
    max_size=80,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, max_nodes=st.integers(min_value=1, max_value=25))
def test_random_trees_render_safely(ops: list[tuple[str, int, Any, str]], max_nodes: int) -> None:
    state = ConversationState("prop")
    ids = [state.current_node_id]
    for op, pick, text, role in ops:
        target = ids[pick % len(ids)]
        if op == "add":
            ids.append(state.add_message(role, text).node_id)
        elif op == "add_under":
            branch = text if isinstance(text, str) else None
            ids.append(state.add_message(role, text, parent_id=target, branch_name=branch).node_id)
        elif op == "alternative" and state.current_node_id != ids[0]:
            ids.append(state.add_alternative(role, text).node_id)
        elif op == "edit" and target != ids[0]:
            ids.append(state.edit_message(target, text).node_id)
        elif op == "switch":
            state.switch_to(target)
    text = to_html(state, max_nodes=max_nodes)
    text.encode("utf-8")
    page = Page(text)
    assert_inert(page)
    assert 1 <= len(page.rows) <= max_nodes
    shown = page.row_ids()
    assert len(set(shown)) == len(shown)
    assert set(shown) <= set(ids)
    assert page.row_ids("ct-cursor") == [state.current_node_id]
    path = [node.node_id for node in state.get_path()]
    if len(path) <= min(max_nodes, 40):
        assert page.row_ids("ct-active") == path
    assert page.max_depth <= 64 + 8
    graph = parse_mermaid(to_mermaid(state, max_nodes=max_nodes))
    assert len(graph["classes"]["cursor"]) == 1
    assert render_rich(state, max_nodes=max_nodes)
