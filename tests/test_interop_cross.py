"""Converting between formats keeps the tree: ids, parents, sibling order, cursor, roles, texts.

ChatGPT -> convtree -> Open WebUI -> convtree -> LibreChat -> convtree (-> ChatGPT) keeps
every branch; random trees survive every format and every chain of formats.
"""

from __future__ import annotations

import io
import itertools
import json
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convtree import ConversationState
from convtree.interop import chatgpt, librechat, openwebui

FORMATS: dict[str, ModuleType] = {
    "chatgpt": chatgpt,
    "openwebui": openwebui,
    "librechat": librechat,
}
T0 = 1700000000.25


def gpt_message(
    node_id: str,
    role: str,
    content: dict[str, Any],
    at: float,
    *,
    name: str | None = None,
    recipient: str = "all",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": node_id,
        "author": {"role": role, "name": name, "metadata": {}},
        "create_time": at,
        "update_time": None,
        "content": content,
        "status": "finished_successfully",
        "end_turn": True if role == "assistant" else None,
        "weight": 1.0,
        "metadata": metadata or {},
        "recipient": recipient,
        "channel": None,
    }


def text(value: str) -> dict[str, Any]:
    return {"content_type": "text", "parts": [value]}


def chatgpt_conversation() -> dict[str, Any]:
    """Branches at several depths, a hidden system message, an image, code and its
    output, thoughts; the cursor on a branch that is not the last."""
    nodes: list[tuple[str, str | None, dict[str, Any] | None]] = [
        ("client-created-root", None, None),
        (
            "sys",
            "client-created-root",
            gpt_message(
                "sys",
                "system",
                text(""),
                T0,
                metadata={"is_visually_hidden_from_conversation": True},
            ),
        ),
        (
            "u1",
            "sys",
            gpt_message(
                "u1",
                "user",
                {
                    "content_type": "multimodal_text",
                    "parts": [
                        {
                            "content_type": "image_asset_pointer",
                            "asset_pointer": "file-service://file-1",
                            "width": 10,
                            "height": 10,
                        },
                        "What is in this picture? 🐈",
                    ],
                },
                T0 + 1,
            ),
        ),
        ("a1", "u1", gpt_message("a1", "assistant", text("A cat."), T0 + 2)),
        ("a1b", "u1", gpt_message("a1b", "assistant", text("A small cat."), T0 + 3)),
        ("u2", "a1", gpt_message("u2", "user", text("Count its legs with code"), T0 + 4)),
        ("u2b", "a1", gpt_message("u2b", "user", text("Count its legs"), T0 + 5)),
        (
            "code",
            "u2",
            gpt_message(
                "code",
                "assistant",
                {"content_type": "code", "language": "python", "text": "print(4)"},
                T0 + 6,
                recipient="python",
            ),
        ),
        (
            "out",
            "code",
            gpt_message(
                "out",
                "tool",
                {"content_type": "execution_output", "text": "4"},
                T0 + 7,
                name="python",
            ),
        ),
        ("a2", "out", gpt_message("a2", "assistant", text("Four legs."), T0 + 8)),
        ("a2b", "u2b", gpt_message("a2b", "assistant", text("4"), T0 + 9)),
        (
            "think",
            "a1b",
            gpt_message(
                "think",
                "assistant",
                {
                    "content_type": "thoughts",
                    "thoughts": [{"summary": "Size", "content": "It looks small."}],
                    "source_analysis_msg_id": "x",
                },
                T0 + 10,
            ),
        ),
    ]
    children: dict[str, list[str]] = {}
    for node_id, parent, _ in nodes:
        if parent is not None:
            children.setdefault(parent, []).append(node_id)
    mapping = {
        node_id: {
            "id": node_id,
            "message": message,
            "parent": parent,
            "children": children.get(node_id, []),
        }
        for node_id, parent, message in nodes
    }
    return {
        "title": "Cat legs",
        "create_time": T0,
        "update_time": T0 + 10,
        "mapping": mapping,
        "moderation_results": [],
        "current_node": "a2",
        "conversation_id": "conv-cat",
        "id": "conv-cat",
        "default_model_slug": "gpt-4o",
    }


def signature(state: ConversationState, *, names: bool = False) -> list[tuple[Any, ...]]:
    """The tree as data: depth-first (id, parent id, role, text, time[, name]), then the cursor."""
    rows: list[tuple[Any, ...]] = []
    for node in state.nodes():
        parent = state.parent(node.node_id)
        message = node.message
        row: tuple[Any, ...] = (
            node.node_id,
            None if parent is None else parent.node_id,
            None if message is None else message.role,
            None if message is None else message.text,
            None if message is None else node.timestamp,
        )
        if names:
            row += (None if message is None else message.name,)
        rows.append(row)
    rows.append(("cursor", state.current_node_id))
    return rows


def branches(state: ConversationState) -> list[list[str]]:
    """Every root-to-leaf path, as ids."""
    return [[n.node_id for n in state.get_path(leaf.node_id)] for leaf in state.leaves()]


def hop(state: ConversationState, name: str) -> ConversationState:
    """``state`` written in format ``name`` (as JSON text) and read back."""
    module = FORMATS[name]
    out = module.to_dict(state)
    back: ConversationState = module.from_dict(json.loads(json.dumps(out, ensure_ascii=False)))
    return back


def hop_through_a_file(state: ConversationState, name: str) -> ConversationState:
    """``state`` written to an export file of format ``name`` and streamed back."""
    module = FORMATS[name]
    buffer = io.BytesIO()
    assert module.write([state], buffer) == 1
    with module.read(io.BytesIO(buffer.getvalue()), errors="raise") as reader:
        [back] = reader
    assert isinstance(back, ConversationState)
    return back


def test_chatgpt_to_open_webui_to_librechat_keeps_the_tree() -> None:
    first = chatgpt.from_dict(chatgpt_conversation())
    assert first.root.node_id == "client-created-root"
    assert len(first.leaves()) == 3
    via_openwebui = hop(first, "openwebui")
    via_librechat = hop(via_openwebui, "librechat")
    back_to_chatgpt = hop(via_librechat, "chatgpt")
    for state in (via_openwebui, via_librechat, back_to_chatgpt):
        assert signature(state) == signature(first)
        assert branches(state) == branches(first)
        assert state.conversation_id == "conv-cat"
        assert state.metadata["title"] == "Cat legs"
    # Open WebUI has no root node; the several first messages it allows are the root's children.
    chat = openwebui.to_dict(first)["chat"]
    assert chat["history"]["messages"]["sys"]["parentId"] is None
    assert chat["history"]["currentId"] == "a2"
    assert chat["convtree"] == {"root_id": "client-created-root"}
    assert [m["id"] for m in chat["messages"]] == ["sys", "u1", "a1", "u2", "code", "out", "a2"]
    # Texts shown by each: the image is a part of the ChatGPT message, text in the others.
    assert first.get_node("u1").message is not None
    assert via_librechat.get_node("code").message is not None
    assert via_librechat.get_node("code").message.text == "print(4)"  # type: ignore[union-attr]
    assert via_librechat.get_node("out").message.role == "tool"  # type: ignore[union-attr]


def test_chatgpt_to_open_webui_keeps_every_branch_in_every_mode() -> None:
    first = chatgpt.from_dict(chatgpt_conversation())
    chats = openwebui.to_dict(first, mode="branches")
    assert len(chats) == len(first.leaves())
    for chat, path in zip(chats, branches(first), strict=True):
        back = openwebui.from_dict(chat)
        assert [n.node_id for n in back.get_path()] == path
    active = openwebui.from_dict(openwebui.to_dict(first, mode="active"))
    assert [n.node_id for n in active.nodes()] == [n.node_id for n in first.get_path()]


@pytest.mark.parametrize("order", list(itertools.permutations(FORMATS)))
def test_every_chain_of_formats_keeps_the_tree(order: tuple[str, ...]) -> None:
    first = chatgpt.from_dict(chatgpt_conversation())
    state = first
    for name in order:
        state = hop_through_a_file(state, name)
        assert signature(state) == signature(first), name


# ------------------------------------------------------------------- properties

ROLES = st.sampled_from(["system", "user", "assistant", "tool"])
TEXT = st.text(max_size=12)
CONTENT = TEXT | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), min_size=1, max_size=2
)
TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
)
NODE_IDS = st.text(min_size=1, max_size=6).filter(lambda i: i.isprintable() and i == i.strip())


@st.composite
def random_trees(draw: st.DrawFn) -> ConversationState:
    """Random branching (at the root too), roles, Unicode texts and ids, times; any cursor."""
    state = ConversationState(draw(NODE_IDS), metadata={"title": draw(st.text(max_size=8))})
    ids = [state.root.node_id]
    for _ in range(draw(st.integers(0, 14))):
        node = state.add_message(
            draw(ROLES),
            draw(CONTENT),
            parent_id=draw(st.sampled_from(ids)),
            node_id=draw(NODE_IDS.filter(lambda i: i not in ids)),
            name=draw(st.none() | st.text(min_size=1, max_size=6)),
            timestamp=draw(TIMES),
        )
        ids.append(node.node_id)
    state.switch_to(draw(st.sampled_from(ids)))
    return state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_trees(), st.sampled_from(list(FORMATS)), st.booleans())
def test_property_random_trees_survive_each_format(
    state: ConversationState, name: str, through_file: bool
) -> None:
    back = hop_through_a_file(state, name) if through_file else hop(state, name)
    # LibreChat gives a message without an author its sender label ("User", ...).
    assert signature(back, names=name != "librechat") == signature(state, names=name != "librechat")
    assert back.conversation_id == state.conversation_id
    assert back.metadata["title"] == state.metadata["title"]
    # Read from that format now, it is written back exactly.
    module = FORMATS[name]
    assert hop(back, name) == back
    assert json.dumps(module.to_dict(hop(back, name))) == json.dumps(module.to_dict(back))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_trees(), st.permutations(list(FORMATS)))
def test_property_random_trees_survive_a_chain_of_formats(
    state: ConversationState, order: list[str]
) -> None:
    current = state
    for name in order:
        current = hop(current, name)
    assert signature(current) == signature(state)
    assert branches(current) == branches(state)


REAL = Path("/work/shared/fixtures/interchange")


@pytest.mark.skipif(not REAL.is_dir(), reason="the real exports are not on this machine")
@pytest.mark.parametrize(
    "path",
    sorted(str(p.relative_to(REAL)) for p in REAL.glob("*/*.json")) if REAL.is_dir() else [],
)
def test_real_exports_survive_every_other_format(path: str) -> None:
    source = FORMATS[path.split("/")[0]]
    with source.read(REAL / path, errors="raise") as reader:
        states = list(reader)
    assert states
    for first in states:
        for order in itertools.permutations([n for n in FORMATS if n != path.split("/")[0]]):
            state = first
            for name in order:
                state = hop(state, name)
            assert signature(state) == signature(first), order
            assert branches(state) == branches(first)
