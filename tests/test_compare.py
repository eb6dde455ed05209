"""Comparing, replaying, re-running branches, and usage totals."""

from __future__ import annotations

import asyncio
import math
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convtree import ConversationState, FormatError, Message, TreeOperationError
from convtree.cli import build_demo


@pytest.fixture
def chat() -> ConversationState:
    state = ConversationState("chat")
    state.add_message("system", "Be brief.", node_id="sys")
    state.add_message("user", "What is a B-tree?", node_id="q")
    state.add_message("assistant", "A balanced search tree.", node_id="a1")
    state.add_message("user", "Why disks?", node_id="u1")
    state.add_message("assistant", "Wide nodes mean few reads.", node_id="r1")
    state.switch_to("a1")
    state.add_alternative("assistant", "A search tree for disks.", node_id="a2")
    state.add_message("user", "Why disks?", node_id="u2")
    state.add_message("assistant", "Few seeks per lookup.", node_id="r2")
    return state


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser


class TestDiff:
    def test_two_regenerated_branches(self, chat: ConversationState) -> None:
        d = chat.diff("r1", "r2")
        assert d.ancestor is not None
        assert d.ancestor.node_id == "q"
        assert [n.node_id for n in d.prefix][1:] == ["sys", "q"]
        assert [n.node_id for n in d.a_tail] == ["a1", "u1", "r1"]
        assert [n.node_id for n in d.b_tail] == ["a2", "u2", "r2"]
        assert [p.same for p in d.pairs] == [False, True, False]
        assert d.pairs[0].unified()[2:] == [
            "@@ -1 +1 @@",
            "-A balanced search tree.",
            "+A search tree for disks.",
        ]
        assert 0 < d.pairs[0].ratio() < 1
        assert not d.identical
        text = str(d)
        assert "common ancestor: user q" in text
        assert "[1] = user: Why disks?" in text

    def test_b_defaults_to_the_cursor(self, chat: ConversationState) -> None:
        assert chat.diff("r1").b.node_id == "r2"

    def test_a_node_and_its_ancestor(self, chat: ConversationState) -> None:
        d = chat.diff("q", "r2")
        assert d.ancestor is not None
        assert d.ancestor.node_id == "q"
        assert d.a_tail == []
        assert [p.a for p in d.pairs] == [None, None, None]

    def test_branches_at_the_root(self) -> None:
        state = ConversationState()
        state.add_message("system", "terse", node_id="s1")
        state.add_message("system", "verbose", parent_id=state.root, node_id="s2")
        d = state.diff("s1", "s2")
        assert d.ancestor is state.root
        assert len(d.prefix) == 1

    def test_a_fork_and_its_source(self, chat: ConversationState) -> None:
        fork = chat.fork("a1")
        fork.add_message("user", "And SSDs?", node_id="f1")
        d = fork.diff("f1", "r1", other=chat)
        assert d.ancestor is not None
        assert d.ancestor.node_id == "a1"
        assert fork.metadata["forked_from"]["node_id"] == d.ancestor.node_id
        assert [n.node_id for n in d.b_tail] == ["u1", "r1"]

    def test_unrelated_conversations_share_nothing(self, chat: ConversationState) -> None:
        other = ConversationState()
        other.add_message("user", "hi", node_id="x")
        d = chat.diff("r1", "x", other=other)
        assert d.ancestor is None
        assert d.prefix == []

    def test_html_is_side_by_side_and_escaped(self, chat: ConversationState) -> None:
        chat.switch_to("q")
        chat.add_message("assistant", '<script>alert(1)</script><img src=x onerror="x()">')
        html = chat.diff("r1").to_html()
        parsed = _parse(html)
        assert "script" not in parsed.tags
        assert "img" not in parsed.tags
        assert not [a for a in parsed.attrs if a.startswith("on")]
        assert "<script>alert(1)</script>" in "".join(parsed.text)
        assert parsed.tags.count("tr") == 1 + 3
        assert "ins" in parsed.tags or "del" in parsed.tags
        assert chat.diff("r1")._repr_html_() == html

    def test_html_of_long_branches_is_bounded(self) -> None:
        state = ConversationState()
        q = state.add_message("user", "q")
        for i in range(3000):
            state.add_message("assistant", "x" * 5000 + str(i))
        end_a = state.current_node
        state.switch_to(q)
        for i in range(3000):
            state.add_message("assistant", "y" * 5000 + str(i))
        html = state.diff(end_a).to_html()
        assert len(html) < 3_000_000
        assert "2,800 more step(s)" in html

    def test_100_000_deep_branches(self) -> None:
        state = ConversationState()
        top = state.add_message("user", "start")
        for i in range(100_000):
            state.add_message("assistant" if i % 2 else "user", f"a {i}")
        end_a = state.current_node
        state.switch_to(top)
        for i in range(100_000):
            state.add_message("assistant" if i % 2 else "user", f"b {i}" if i % 7 else f"a {i}")
        d = state.diff(end_a)
        assert d.ancestor is top
        assert len(d.pairs) == 100_000
        assert sum(not p.same for p in d.pairs) == 100_000 - len(range(0, 100_000, 7))
        assert "99,800 more step(s)" in d.text()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=30), st.data())
def test_diff_splits_both_paths_at_their_deepest_common_node(
    parents: list[int], data: st.DataObject
) -> None:
    state = ConversationState()
    ids = [state.root.node_id]
    for i, pick in enumerate(parents):
        node = state.add_message("user", f"m{i}", parent_id=ids[pick % len(ids)])
        ids.append(node.node_id)
    a = data.draw(st.sampled_from(ids))
    b = data.draw(st.sampled_from(ids))
    d = state.diff(a, b)
    assert [*d.prefix, *d.a_tail] == state.get_path(a)
    assert [*d.prefix, *d.b_tail] == state.get_path(b)
    assert d.prefix[-1] is d.ancestor
    if d.a_tail and d.b_tail:
        assert d.a_tail[0] is not d.b_tail[0]
    assert len(d.pairs) == max(len(d.a_tail), len(d.b_tail))


class TestReplay:
    def test_steps_context_and_alternatives(self, chat: ConversationState) -> None:
        steps = list(chat.replay("r1"))
        assert [s.node.node_id for s in steps] == ["sys", "q", "a1", "u1", "r1"]
        assert [s.index for s in steps] == [0, 1, 2, 3, 4]
        third = steps[2]
        assert [m.content for m in third.context] == ["Be brief.", "What is a B-tree?"]
        assert third.message.content == "A balanced search tree."
        assert [n.node_id for n in third.alternatives] == ["a1", "a2"]
        assert str(third.position) == "1 / 2"
        assert "alternative 1 / 2" in repr(third)
        assert "step 2" in third._repr_html_()

    def test_defaults_to_the_cursor(self, chat: ConversationState) -> None:
        assert [s.node.node_id for s in chat.replay()][-1] == "r2"

    def test_a_root_with_a_message_is_a_step(self) -> None:
        t = "2025-01-01T00:00:00+00:00"
        doc = {
            "schema_version": "1.1.0",
            "conversation_id": "old",
            "nodes": [
                {"node_id": "", "message": {"role": "system", "content": "hi"}, "timestamp": t},
                {"node_id": "0", "message": {"role": "user", "content": "q"}, "timestamp": t},
            ],
            "edges": [["", "0"]],
            "current_node_id": "0",
            "metadata": {},
            "created_at": t,
            "updated_at": t,
        }
        state = ConversationState.from_dict(doc)
        steps = list(state.replay())
        assert [s.message.content for s in steps] == ["hi", "q"]
        assert steps[0].alternatives == [state.root]

    def test_100_000_steps_are_linear(self) -> None:
        state = ConversationState()
        for i in range(100_000):
            state.add_message("user", str(i))
        count = 0
        for step in state.replay():
            count += 1
            last = step
        assert count == 100_000
        assert len(last.context) == 99_999


def _echo(messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    last = messages[-1]["content"]
    return f"re: {last}", {"model": "echo", "usage": {"prompt_tokens": len(messages)}}


class TestRerun:
    def test_a_new_sibling_branch_beside_the_old(self, chat: ConversationState) -> None:
        end = chat.rerun("r1", _echo, branch_name="echo")
        path = chat.get_path(end)
        assert [n.content for n in path[1:]] == [
            "Be brief.",
            "What is a B-tree?",
            "re: What is a B-tree?",
            "Why disks?",
            "re: Why disks?",
        ]
        new_first = path[3]
        assert new_first.branch_name == "echo"
        assert chat.sibling_position(new_first) == (2, 3)
        assert new_first.metadata == {
            "rerun_of": "a1",
            "model": "echo",
            "usage": {"prompt_tokens": 2},
        }
        assert path[4].metadata == {"rerun_of": "u1"}
        assert chat.current_node is end
        d = chat.diff("r1", end)
        assert [p.same for p in d.pairs] == [False, True, False]

    def test_the_context_sent_is_openai_style(self, chat: ConversationState) -> None:
        seen: list[list[dict[str, Any]]] = []

        def respond(messages: list[dict[str, Any]]) -> Any:
            seen.append(messages)
            if len(seen) == 2:  # the same call as the original, under another id
                return {"content": None, "tool_calls": [_call("new-1")]}
            return "ok"

        chat.switch_to("r1")
        chat.add_message("user", "Look it up.")
        chat.add_message("assistant", None, tool_calls=[_call("c1")], metadata={"k": 1})
        chat.add_message("tool", "42", tool_call_id="c1")
        chat.add_message("assistant", "the answer is 42")
        end = chat.rerun(None, respond, start="r1")
        assert len(seen) == 3
        assert seen[0][-1] == {"role": "user", "content": "Why disks?"}
        assert seen[2][-2:] == [
            {"role": "assistant", "content": None, "tool_calls": [_call("new-1")]},
            {"role": "tool", "content": "42", "tool_call_id": "new-1"},
        ]
        assert all("metadata" not in m for ms in seen for m in ms)
        assert end.content == "ok"

    def test_a_reply_making_other_calls_ends_the_new_branch(self, chat: ConversationState) -> None:
        chat.switch_to("r1")
        chat.add_message("assistant", None, tool_calls=[_call("c1")], node_id="call")
        chat.add_message("tool", "42", tool_call_id="c1", node_id="result")
        chat.add_message("assistant", "the answer is 42")
        other = {"id": "x", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        end = chat.rerun(None, lambda _: {"content": None, "tool_calls": [other]}, start="call")
        assert end.message is not None
        assert end.message.tool_calls == [other]
        assert chat.children(end) == []  # the original result is not carried over
        assert chat.get_path(end)[-2].node_id == "r1"

    def test_carried_over_turns_keep_every_field(self) -> None:
        state = ConversationState()
        state.add_message("assistant", "hello")
        state.add(
            Message(role="user", content="hi", name="ann", metadata={"lang": "en"}, refusal=None)
        )
        state.add_message("assistant", "bye")
        end = state.rerun(None, lambda _: "again")
        user = state.get_path(end)[-2]
        assert user.message is not None
        assert user.message.to_dict() == {
            "role": "user",
            "content": "hi",
            "name": "ann",
            "metadata": {"lang": "en"},
            "refusal": None,
        }

    @pytest.mark.parametrize(
        "reply",
        [
            "text",
            Message(role="assistant", content="text"),
            {"content": "text"},
            ({"role": "assistant", "content": "text"}, {"cost": 0.5}),
        ],
        ids=["str", "message", "dict", "tuple"],
    )
    def test_reply_shapes(self, chat: ConversationState, reply: object) -> None:
        end = chat.rerun("a1", lambda _: reply)
        assert end.content == "text"
        assert end.role == "assistant"

    def test_a_reply_with_tool_calls(self, chat: ConversationState) -> None:
        end = chat.rerun("a1", lambda _: {"content": None, "tool_calls": [_call("x")]})
        assert end.message is not None
        assert end.message.tool_calls == [_call("x")]

    @pytest.mark.parametrize(
        ("reply", "match"),
        [
            (42, "respond returned int for the re-run of 'a1'"),
            ({"role": "assistant", "content": 5}, "re-run of 'a1'.*content"),
            (("a", "b", "c"), "return \\(reply, metadata_dict\\)"),
        ],
    )
    def test_a_bad_reply_changes_nothing(
        self, chat: ConversationState, reply: object, match: str
    ) -> None:
        before = chat.to_dict()
        with pytest.raises(FormatError, match=match):
            chat.rerun("r1", lambda _: reply)
        assert chat.to_dict() == before

    def test_respond_failing_midway_changes_nothing(self, chat: ConversationState) -> None:
        calls = 0

        def flaky(_: list[dict[str, Any]]) -> str:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RuntimeError("model down")
            return "ok"

        before = chat.to_dict()
        with pytest.raises(RuntimeError, match="model down"):
            chat.rerun("r1", flaky)
        assert chat.to_dict() == before

    def test_nothing_to_rerun(self, chat: ConversationState) -> None:
        with pytest.raises(TreeOperationError, match="no assistant turn"):
            chat.rerun("q", _echo)
        with pytest.raises(TreeOperationError, match="not on that path"):
            chat.rerun("r1", _echo, start="r2")

    def test_an_async_respond(self, chat: ConversationState) -> None:
        async def respond(messages: list[dict[str, Any]]) -> str:
            await asyncio.sleep(0)
            return f"async {len(messages)}"

        assert chat.rerun("r1", respond).content == "async 4"  # no loop running: runs one
        assert asyncio.run(chat.arerun("r1", respond)).content == "async 4"
        assert asyncio.run(chat.arerun("r1", lambda _: "plain")).content == "plain"

    def test_an_async_respond_inside_a_running_loop_needs_arerun(
        self, chat: ConversationState
    ) -> None:
        async def respond(_: list[dict[str, Any]]) -> str:
            return "x"

        async def inside() -> None:
            with pytest.raises(TypeError, match=r"await state\.arerun"):
                chat.rerun("r1", respond)

        asyncio.run(inside())

    def test_a_plain_function_returning_a_coroutine(self, chat: ConversationState) -> None:
        async def later() -> str:
            return "x"

        before = chat.to_dict()
        with pytest.raises(TypeError, match="returned an awaitable"):
            chat.rerun("r1", lambda _: later())
        assert chat.to_dict() == before

    def test_a_100_000_deep_branch(self) -> None:
        state = ConversationState()
        for i in range(50_000):
            state.add_message("user", str(i))
            state.add_message("assistant", f"reply {i}")
        start = state.get_path()[-6]
        end = state.rerun(None, lambda ms: f"new {len(ms)}", start=start)
        assert state.depth(end) == 100_000
        assert end.content == "new 99999"
        assert state.sibling_position(state.get_path(end)[-5]) == (1, 2)

    def test_every_assistant_turn_of_a_long_branch(self) -> None:
        """Each call gets its whole context (a new list): O(depth) per call, as a model needs."""
        state = ConversationState()
        for i in range(5_000):
            state.add_message("user", str(i))
            state.add_message("assistant", f"reply {i}")
        calls: list[int] = []

        def respond(messages: list[dict[str, Any]]) -> str:
            calls.append(len(messages))
            messages.append({"role": "user", "content": "mutating my copy is harmless"})
            return "new"

        end = state.rerun(None, respond)
        assert calls == list(range(1, 10_000, 2))
        assert [n.content for n in state.get_path(end)[-3:]] == ["new", "4999", "new"]


def _call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


class TestUsage:
    def test_openai_and_anthropic_keys(self) -> None:
        state = ConversationState()
        state.add_message("user", "q")
        state.add_message(
            "assistant",
            "a",
            metadata={
                "model": "gpt",
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                "cost": 0.25,
            },
        )
        state.add_message("user", "q2")
        state.add_message(
            "assistant",
            "b",
            metadata={
                "model": "claude",
                "usage": {
                    "input_tokens": 7,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 3,
                    "output_tokens": 4,
                },
            },
        )
        usage = state.usage()
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (120, 9, 129)
        assert usage.cost == 0.25
        assert (usage.messages, usage.counted, usage.skipped) == (4, 2, 0)
        assert usage.by_model["claude"].prompt_tokens == 110
        assert usage.by_model["gpt"].cost == 0.25
        assert (
            str(usage) == "129 tokens (120 prompt + 9 completion), cost 0.25, from 2 of 4 messages"
        )
        assert "<table" in usage._repr_html_()

    def test_top_level_keys_and_usage_wins(self) -> None:
        state = ConversationState()
        state.add_message(
            "assistant", "a", metadata={"prompt_tokens": 1, "usage": {"prompt_tokens": 2}}
        )
        state.add_message("assistant", "b", metadata={"completion_tokens": 3})
        usage = state.usage()
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2, 3, 5)

    def test_values_that_are_not_numbers_are_skipped_and_said(self) -> None:
        state = ConversationState()
        state.add_message(
            "assistant",
            "a",
            metadata={
                "usage": {"prompt_tokens": True, "completion_tokens": "12", "total_tokens": 4}
            },
        )
        state.add_message("assistant", "b", metadata={"cost": math.inf, "prompt_tokens": 1})
        usage = state.usage()
        assert usage.skipped == 3
        assert (usage.prompt_tokens, usage.total_tokens, usage.cost) == (1, 5, None)
        assert "3 non-numeric value(s) skipped" in str(usage)

    def test_path_branch_and_whole_tree(self, chat: ConversationState) -> None:
        for node_id, tokens in (("a1", 1), ("r1", 10), ("a2", 100), ("r2", 1000)):
            chat.get_node(node_id).metadata["usage"] = {"total_tokens": tokens}
        assert chat.usage().total_tokens == 1100
        assert chat.usage("r1").total_tokens == 11
        assert chat.usage(scope="tree").total_tokens == 1111
        assert chat.usage("a2", scope="tree").total_tokens == 1100
        with pytest.raises(ValueError, match="scope"):
            chat.usage(scope="branch")  # type: ignore[arg-type]

    def test_the_demo_records_usage(self) -> None:
        assert build_demo().usage(scope="tree").completion_tokens == 17


class TestReprs:
    def test_a_message_repr_shows_what_is_set(self) -> None:
        assert repr(Message(role="user", content="hi")) == "Message(role='user', content='hi')"
        assert "tool_call_id='c'" in repr(Message(role="tool", content="1", tool_call_id="c"))

    def test_to_openai_leaves_out_convtree_fields(self) -> None:
        message = Message(role="user", content="hi", metadata={"x": 1}, refusal=None, name="a")
        assert message.to_openai() == {"role": "user", "content": "hi", "name": "a"}

    def test_html_of_a_node_and_a_message_is_escaped(self) -> None:
        state = ConversationState()
        node = state.add_message("user", "<script>x()</script>")
        for html in (node._repr_html_(), node.message._repr_html_()):  # type: ignore[union-attr]
            parsed = _parse(html)
            assert "script" not in parsed.tags
            assert "<script>x()</script>" in "".join(parsed.text)


def test_a_wide_fan_out() -> None:
    state = ConversationState()
    q = state.add_message("user", "q")
    for i in range(10_000):
        state.add_message("assistant", f"answer {i}", parent_id=q)
    last = state.current_node
    steps = list(state.replay())
    assert len(steps[1].alternatives) == 10_000
    assert str(steps[1].position) == "10000 / 10000"
    first = state.children(q)[0]
    assert [p.same for p in state.diff(first, last).pairs] == [False]
    assert state.usage(scope="tree").messages == 10_001
    end = state.rerun(first, lambda _: "again")
    assert state.sibling_position(end) == (10_000, 10_001)
