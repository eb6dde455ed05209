"""ChatGPT export format: import, export modes, exact round trips, bad input, real files."""

from __future__ import annotations

import asyncio
import copy
import importlib
import io
import itertools
import json
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convtree import ConversationState, FormatError, open_storage
from convtree.interop import chatgpt

REAL = Path("/work/shared/fixtures/interchange/chatgpt")
T0 = 1700000000.123456
IMAGE = {
    "content_type": "image_asset_pointer",
    "asset_pointer": "file-service://file-abc",
    "size_bytes": 1234,
    "width": 640,
    "height": 480,
    "fovea": None,
    "metadata": {"dalle": None, "sanitized": True},
}


def message(
    node_id: str,
    role: str,
    content: Any,
    at: float | None,
    *,
    name: str | None = None,
    status: str = "finished_successfully",
    recipient: str = "all",
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ChatGPT message in the order the exports write its fields."""
    if isinstance(content, str):
        content = {"content_type": "text", "parts": [content]}
    return {
        "id": node_id,
        "author": {"role": role, "name": name, "metadata": {}},
        "create_time": at,
        "update_time": None,
        "content": content,
        "status": status,
        "end_turn": True if role == "assistant" else None,
        "weight": 1.0,
        "metadata": {} if metadata is None else metadata,
        "recipient": recipient,
        "channel": None,
        **extra,
    }


def conversation(
    nodes: list[tuple[str, str | None, dict[str, Any] | None]],
    current: str | None,
    conversation_id: str = "conv-1",
    **top: Any,
) -> dict[str, Any]:
    """A conversation from (node id, parent id, message) in mapping order."""
    children: dict[str, list[str]] = {}
    for node_id, parent, _ in nodes:
        if parent is not None:
            children.setdefault(parent, []).append(node_id)
    mapping = {
        node_id: {
            "id": node_id,
            "message": msg,
            "parent": parent,
            "children": children.get(node_id, []),
        }
        for node_id, parent, msg in nodes
    }
    return {
        "title": "B-trees and more",
        "create_time": T0,
        "update_time": T0 + 100,
        "mapping": mapping,
        "moderation_results": [],
        "current_node": current,
        "plugin_ids": None,
        "conversation_id": conversation_id,
        "conversation_template_id": None,
        "gizmo_id": None,
        "is_archived": False,
        "safe_urls": ["https://example.com/"],
        "default_model_slug": "gpt-4o",
        "future_field": {"nested": [1, 2.5, None]},
        "id": conversation_id,
        **top,
    }


def branchy() -> dict[str, Any]:
    """Every shape: branches at several depths, edits, regenerations, each content type,
    a hidden system node without a time, an interrupted reply, missing optional fields."""
    model = {"model_slug": "gpt-4o", "default_model_slug": "gpt-4o"}
    sparse = {  # a message missing every optional field
        "id": "u2",
        "author": {"role": "user"},
        "content": {"content_type": "text", "parts": ["and then?"]},
    }
    nodes: list[tuple[str, str | None, dict[str, Any] | None]] = [
        ("root", None, None),
        (
            "sys",
            "root",
            message(
                "sys", "system", "", None, metadata={"is_visually_hidden_from_conversation": True}
            ),
        ),
        (
            "ctx",
            "sys",
            message(
                "ctx",
                "user",
                {
                    "content_type": "user_editable_context",
                    "user_profile": "I am a gardener.",
                    "user_instructions": "Be brief.",
                },
                T0 + 1,
            ),
        ),
        ("u1", "ctx", message("u1", "user", "What is a B-tree?", T0 + 2)),
        ("a1", "u1", message("a1", "assistant", "A balanced tree.", T0 + 3, metadata=model)),
        ("u2", "a1", sparse),
        (
            "a2",
            "u2",
            message("a2", "assistant", "It keeps", 1749687798.6946201, status="in_progress"),
        ),
        (
            "a1b",
            "u1",
            message(
                "a1b",
                "assistant",
                {
                    "content_type": "thoughts",
                    "thoughts": [
                        {"summary": "Recall", "content": "B-trees are wide.", "finished": True},
                        {"summary": "Answer", "content": "Say it simply.", "finished": True},
                    ],
                    "source_analysis_msg_id": "x",
                },
                T0 + 4,
                metadata={"model_slug": "o3"},
            ),
        ),
        (
            "a1c",
            "a1b",
            message(
                "a1c",
                "assistant",
                {"content_type": "reasoning_recap", "content": "Thought for 2 seconds"},
                T0 + 5,
            ),
        ),
        (
            "a1d",
            "a1c",
            message(
                "a1d",
                "assistant",
                {"content_type": "code", "language": "python", "text": "print(1)"},
                T0 + 6,
                recipient="python",
            ),
        ),
        (
            "t1",
            "a1d",
            message(
                "t1",
                "tool",
                {"content_type": "execution_output", "text": "1"},
                T0 + 7,
                name="python",
            ),
        ),
        ("a3", "t1", message("a3", "assistant", "It printed 1.", T0 + 8, metadata=model)),
        (
            "u3",
            "a3",
            message(
                "u3",
                "user",
                {"content_type": "multimodal_text", "parts": [IMAGE, "What is this?"]},
                T0 + 9,
            ),
        ),
        ("u3b", "a3", message("u3b", "user", "Search the web", T0 + 10)),
        (
            "b1",
            "u3b",
            message(
                "b1",
                "tool",
                {
                    "content_type": "tether_browsing_display",
                    "result": "# 【0†B-tree - Wikipedia】\nA self-balancing tree.",
                    "summary": "",
                    "assets": None,
                },
                T0 + 11,
                name="browser",
            ),
        ),
        (
            "q1",
            "b1",
            message(
                "q1",
                "tool",
                {
                    "content_type": "tether_quote",
                    "url": "https://en.wikipedia.org/wiki/B-tree",
                    "domain": "en.wikipedia.org",
                    "title": "B-tree",
                    "text": "In computer science, a B-tree is ...",
                },
                T0 + 12,
                name="browser",
            ),
        ),
        (
            "e1",
            "q1",
            message(
                "e1",
                "system",
                {"content_type": "system_error", "name": "tool_error", "text": "Timed out"},
                T0 + 13,
            ),
        ),
        (
            "w1",
            "e1",
            message(
                "w1",
                "assistant",
                {"content_type": "weird_future_type", "blob": {"x": [1, 2]}, "text_like": 3},
                T0 + 14,
            ),
        ),
    ]
    return copy.deepcopy(conversation(nodes, current="a2"))  # shares nothing with IMAGE


def parent_of(obj: dict[str, Any], node_id: str) -> str | None:
    parent: str | None = obj["mapping"][node_id]["parent"]
    return parent


def tree_of(state: ConversationState) -> dict[str, list[str]]:
    return {n.node_id: [c.node_id for c in state.children(n)] for n in state.nodes()}


# --------------------------------------------------------------------- import


def test_import_keeps_ids_tree_and_cursor() -> None:
    src = branchy()
    state = chatgpt.from_dict(src)
    assert state.conversation_id == "conv-1"
    assert state.root.node_id == "root"
    assert state.root.message is None
    assert state.current_node_id == "a2"
    assert tree_of(state) == {k: v["children"] for k, v in src["mapping"].items()}
    assert [n.node_id for n in state.get_path()] == ["root", "sys", "ctx", "u1", "a1", "u2", "a2"]
    assert state.metadata["title"] == "B-trees and more"
    assert state.metadata["source"] == "chatgpt"
    assert state.created_at == datetime.fromtimestamp(T0, timezone.utc)
    assert state.updated_at == datetime.fromtimestamp(T0 + 100, timezone.utc)
    assert src == branchy()  # the source is not changed


def test_import_messages_fields_and_text() -> None:
    state = chatgpt.from_dict(branchy())
    node = state.get_node
    texts = {n.node_id: (n.message.role, n.message.text) for n in state.nodes() if n.message}
    assert texts == {
        "sys": ("system", ""),
        "ctx": ("user", "I am a gardener.\n\nBe brief."),
        "u1": ("user", "What is a B-tree?"),
        "a1": ("assistant", "A balanced tree."),
        "u2": ("user", "and then?"),
        "a2": ("assistant", "It keeps"),
        "a1b": ("assistant", "B-trees are wide.\n\nSay it simply."),
        "a1c": ("assistant", "Thought for 2 seconds"),
        "a1d": ("assistant", "print(1)"),
        "t1": ("tool", "1"),
        "a3": ("assistant", "It printed 1."),
        "u3": ("user", "What is this?"),
        "u3b": ("user", "Search the web"),
        "b1": ("tool", "# 【0†B-tree - Wikipedia】\nA self-balancing tree."),
        "q1": ("tool", "In computer science, a B-tree is ..."),
        "e1": ("system", "Timed out"),
        "w1": ("assistant", ""),
    }
    # Plain text is text; other types are parts, with the original kept verbatim.
    assert node("u1").message.content == "What is a B-tree?"
    assert node("u1").metadata["chatgpt"]["message"]["content"] is None
    assert node("a1d").message.content == [{"type": "text", "text": "print(1)"}]
    assert node("a1d").metadata["chatgpt"]["message"]["content"]["language"] == "python"
    image = {k: v for k, v in IMAGE.items() if k != "content_type"} | {
        "type": "image_asset_pointer"
    }
    assert node("u3").message.content == [image, {"type": "text", "text": "What is this?"}]
    assert node("w1").message.content == []
    assert node("w1").metadata["chatgpt"]["message"]["content"]["blob"] == {"x": [1, 2]}
    # Author names, models, times.
    assert node("t1").message.name == "python"
    assert node("u1").message.name is None
    assert node("a1").metadata["model"] == "gpt-4o"
    assert node("a1b").metadata["model"] == "o3"
    assert "model" not in node("u1").metadata
    assert node("u1").timestamp == datetime.fromtimestamp(T0 + 2, timezone.utc)
    assert node("a2").metadata["chatgpt"]["message"]["status"] == "in_progress"
    # A message without create_time takes its parent's time; the root the conversation's.
    assert node("root").timestamp == state.created_at
    assert node("sys").timestamp == state.created_at
    assert node("u2").timestamp == node("a1").timestamp


def test_round_trip_is_exact_to_the_byte() -> None:
    src = branchy()
    out = chatgpt.to_dict(chatgpt.from_dict(src))
    assert out == src
    assert json.dumps(out) == json.dumps(src)


def test_round_trip_through_the_document_and_a_store() -> None:
    src = branchy()
    state = ConversationState.from_json(chatgpt.from_dict(src).to_json())
    assert chatgpt.to_dict(state) == src

    async def save_and_load() -> ConversationState | None:
        async with open_storage("memory://") as storage:
            await storage.save_conversation(chatgpt.from_dict(src))
            return await storage.load_conversation("conv-1")

    loaded = asyncio.run(save_and_load())
    assert loaded is not None
    assert chatgpt.to_dict(loaded) == src


def test_importing_twice_gives_the_same_conversation() -> None:
    first, second = chatgpt.from_dict(branchy()), chatgpt.from_dict(branchy())
    assert first == second
    assert first.conversation_id == second.conversation_id == "conv-1"


def test_conversation_id_falls_back_to_id() -> None:
    src = branchy()
    del src["conversation_id"]
    src["id"] = "only-id"
    state = chatgpt.from_dict(src)
    assert state.conversation_id == "only-id"
    assert chatgpt.to_dict(state) == src


def test_missing_or_dangling_current_node_picks_the_newest_leaf() -> None:
    for current in (None, "nowhere"):
        src = branchy()
        src["current_node"] = current
        state = chatgpt.from_dict(src)
        assert state.current_node_id == "a2"  # 1749687798 is the latest time
        assert chatgpt.to_dict(state)["current_node"] == "a2"
    src = branchy()
    del src["current_node"]
    src["mapping"]["a2"]["message"]["create_time"] = T0
    assert chatgpt.from_dict(src).current_node_id == "w1"


def test_missing_times_fall_back() -> None:
    src = branchy()
    del src["create_time"]
    src["update_time"] = None
    state = chatgpt.from_dict(src)
    times = [n.timestamp for n in state.nodes() if n.node_id not in ("root", "sys")]
    assert state.created_at == min(times)
    assert state.updated_at == max(times)
    assert chatgpt.to_dict(state)["mapping"] == src["mapping"]


def test_unusual_node_shapes_survive() -> None:
    src = branchy()
    mapping = src["mapping"]
    # A node record with an extra key and another key order; a message-less inner node.
    mapping["u3"] = {
        "children": [],
        "parent": "a3",
        "id": "u3",
        "message": mapping["u3"]["message"],
    }
    mapping["u3"]["flags"] = ["pinned"]
    mapping["q1"]["message"] = None
    # A node whose parent does not list it.
    mapping["b1"]["children"].remove("q1")
    # Mapping order unlike the tree's depth-first order.
    src["mapping"] = dict(reversed(list(mapping.items())))
    state = chatgpt.from_dict(src)
    assert state.children("b1")[0].node_id == "q1"  # put after the listed children
    assert state.get_node("q1").message.role == "system"
    assert state.get_node("q1").message.content is None
    out = chatgpt.to_dict(state)
    assert out == src
    assert json.dumps(out) == json.dumps(src)


def test_root_holding_a_message() -> None:
    src = branchy()
    mapping = src["mapping"]
    del mapping["root"]
    mapping["sys"]["parent"] = None
    state = chatgpt.from_dict(src)
    assert state.root.node_id == "sys"
    assert state.root.message.role == "system"
    assert chatgpt.to_dict(state) == src


def test_looks_like() -> None:
    assert chatgpt.looks_like(branchy())
    assert not chatgpt.looks_like({"id": "x", "chat": {"history": {}}})
    assert not chatgpt.looks_like({"mapping": []})


# --------------------------------------------------------------------- export


def test_active_mode_is_the_path_to_the_cursor() -> None:
    state = chatgpt.from_dict(branchy())
    state.switch_to("u3")
    out = chatgpt.to_dict(state, mode="active")
    path = ["root", "sys", "ctx", "u1", "a1b", "a1c", "a1d", "t1", "a3", "u3"]
    assert list(out["mapping"]) == path
    assert out["current_node"] == "u3"
    assert out["id"] == out["conversation_id"] == "conv-1"
    for parent, child in itertools.pairwise(path):
        assert out["mapping"][parent]["children"] == [child]
        assert out["mapping"][child]["parent"] == parent
    assert out["mapping"]["u3"]["children"] == []
    assert out["mapping"]["u3"]["message"] == branchy()["mapping"]["u3"]["message"]


def test_branches_mode_is_one_conversation_per_leaf() -> None:
    state = chatgpt.from_dict(branchy())
    out = chatgpt.to_dict(state, mode="branches")
    leaves = [n.node_id for n in state.leaves()]
    assert leaves == ["a2", "u3", "w1"]
    assert [c["id"] for c in out] == [f"conv-1~{leaf}" for leaf in leaves]
    assert [c["conversation_id"] for c in out] == [c["id"] for c in out]
    assert [c["current_node"] for c in out] == leaves
    for conv, leaf in zip(out, leaves, strict=True):
        back = chatgpt.from_dict(conv)
        assert [n.node_id for n in back.get_path()] == [n.node_id for n in state.get_path(leaf)]
        assert len(back.leaves()) == 1
    assert chatgpt.to_dict(state, mode="branches") == out  # deterministic


def test_changes_made_in_convtree_are_exported() -> None:
    state = chatgpt.from_dict(branchy())
    state.switch_to("w1")
    new = state.add_message("user", "thanks", name="ann")
    state.get_node("a1d").message = state.get_node("a1d").message.model_copy(
        update={"content": "print(2)"}
    )
    state.get_node("u1").message = state.get_node("u1").message.model_copy(
        update={"content": "What is a B+tree?"}
    )
    state.metadata["title"] = "Renamed"
    state.get_node("a1").metadata["model"] = "gpt-5"
    out = chatgpt.to_dict(state)
    src = branchy()
    assert out["title"] == "Renamed"
    assert out["current_node"] == new.node_id
    assert out["mapping"]["w1"]["children"] == [new.node_id]
    added = out["mapping"][new.node_id]
    assert added["parent"] == "w1"
    assert added["message"]["author"] == {"role": "user", "name": "ann", "metadata": {}}
    assert added["message"]["content"] == {"content_type": "text", "parts": ["thanks"]}
    assert added["message"]["create_time"] == new.timestamp.timestamp()
    assert out["mapping"]["a1d"]["message"]["content"] == {
        "content_type": "text",
        "parts": ["print(2)"],
    }
    assert out["mapping"]["u1"]["message"]["content"]["parts"] == ["What is a B+tree?"]
    assert out["mapping"]["a1"]["message"]["metadata"]["model_slug"] == "gpt-5"
    # Everything not changed is as it was.
    for node_id in ("a2", "a1b", "t1", "u3", "b1", "q1", "w1"):
        assert out["mapping"][node_id]["message"] == src["mapping"][node_id]["message"]
    assert out["update_time"] == state.updated_at.timestamp()
    assert out["future_field"] == src["future_field"]


def native_state() -> ConversationState:
    """A conversation built in convtree (not from ChatGPT)."""
    at = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    state = ConversationState("native", metadata={"title": "Native", "user_id": "alice"})
    state.add_message("system", "Be kind.", node_id="s", timestamp=at)
    state.add_message("user", "Hi", node_id="q", timestamp=at + timedelta(seconds=1))
    state.add_message(
        "assistant",
        "Hello!",
        node_id="a0",
        metadata={"model": "gpt-4o"},
        timestamp=at + timedelta(seconds=2),
    )
    state.add_alternative(
        "assistant",
        [{"type": "text", "text": "Hey "}, {"type": "image_url", "image_url": {"url": "x"}}],
        node_id="a1",
        name="bot",
        timestamp=at + timedelta(seconds=3),
    )
    state.add_message(
        "assistant",
        None,
        node_id="call",
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        timestamp=at + timedelta(seconds=4),
    )
    state.switch_to("a0")
    return state


def test_export_of_a_native_conversation() -> None:
    state = native_state()
    out = chatgpt.to_dict(state)
    root = state.root.node_id
    assert out["id"] == out["conversation_id"] == "native"
    assert out["title"] == "Native"
    assert out["current_node"] == "a0"
    assert out["default_model_slug"] == "gpt-4o"
    assert out["create_time"] == state.created_at.timestamp()
    assert out["mapping"][root] == {"id": root, "message": None, "parent": None, "children": ["s"]}
    assert out["mapping"]["q"]["children"] == ["a0", "a1"]
    a0 = out["mapping"]["a0"]["message"]
    assert a0["author"] == {"role": "assistant", "name": None, "metadata": {}}
    assert a0["content"] == {"content_type": "text", "parts": ["Hello!"]}
    assert a0["metadata"] == {"model_slug": "gpt-4o"}
    a1 = out["mapping"]["a1"]["message"]
    assert a1["content"] == {
        "content_type": "multimodal_text",
        "parts": ["Hey ", {"content_type": "image_url", "image_url": {"url": "x"}}],
    }
    call = out["mapping"]["call"]["message"]
    assert call["content"] == {"content_type": "text", "parts": [""]}
    assert call["metadata"]["convtree"]["tool_calls"][0]["id"] == "c1"
    json.dumps(out, allow_nan=False)  # plain JSON

    back = chatgpt.from_dict(out)
    assert tree_of(back) == tree_of(state)
    assert back.current_node_id == "a0"
    assert back.metadata["title"] == "Native"
    for node in state.nodes():
        other = back.get_node(node.node_id)
        assert other.timestamp == node.timestamp
        if node.message is None:
            assert other.message is None
            continue
        assert other.message.role == node.message.role
        assert other.message.name == node.message.name
        assert other.message.text == node.message.text
        assert other.metadata.get("model") == node.metadata.get("model")
    assert back.get_node("a1").message.content == state.get_node("a1").message.content
    # Tool calls travel in the ChatGPT message's metadata.convtree and come back.
    assert back.get_node("call").message.tool_calls == state.get_node("call").message.tool_calls
    # And back out: now it is a ChatGPT conversation, written as read.
    assert chatgpt.to_dict(back) == out


def test_kept_convtree_fields_follow_changes_and_odd_values_stay_verbatim() -> None:
    out = chatgpt.to_dict(native_state())
    back = chatgpt.from_dict(out)
    node = back.get_node("call")
    node.message = node.message.model_copy(update={"tool_calls": None})
    assert "convtree" not in chatgpt.to_dict(back)["mapping"]["call"]["message"]["metadata"]

    src = branchy()
    odd = {"tool_calls": "not a list", "tool_call_id": 7, "refusal": "no"}
    src["mapping"]["a1"]["message"]["metadata"]["convtree"] = odd
    state = chatgpt.from_dict(src)
    message = state.get_node("a1").message
    assert message.tool_calls is None
    assert message.tool_call_id is None
    assert message.to_dict()["refusal"] == "no"  # any other field is a provider field
    assert chatgpt.to_dict(state) == src


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        chatgpt.to_dict(native_state(), mode="all")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="mode must be"):
        chatgpt.write([], io.BytesIO(), mode="all")  # type: ignore[arg-type]


# ------------------------------------------------------------------ bad input


def broken(change: Any) -> dict[str, Any]:
    src = branchy()
    change(src, src["mapping"])
    return src


BROKEN = [
    ("two roots", lambda s, m: m["u3b"].update(parent=None), "2 root nodes", "mapping.u3b.parent"),
    (
        "dangling parent",
        lambda s, m: m["u3b"].update(parent="ghost"),
        "parent 'ghost' is not in the mapping",
        "mapping.u3b.parent",
    ),
    (
        "dangling child",
        lambda s, m: m["a3"]["children"].append("ghost"),
        "child 'ghost' is not in the mapping",
        "mapping.a3.children[2]",
    ),
    (
        "parent disagrees",
        lambda s, m: m["u1"]["children"].append("u3"),
        "lists 'u3' as a child, but that node's parent is 'a3'",
        "mapping.u1.children[2]",
    ),
    (
        "child twice",
        lambda s, m: m["a3"]["children"].append("u3"),
        "listed twice",
        "mapping.a3.children[2]",
    ),
    (
        "cycle",
        lambda s, m: (m["u1"].update(parent="a2"), m["ctx"].update(children=[])),
        "not reachable from the root 'root'",
        "mapping.u1.parent",
    ),
    ("own parent", lambda s, m: m["u1"].update(parent="u1"), "its own parent", "mapping.u1.parent"),
    (
        "no root",
        lambda s, m: m["root"].update(parent="w1"),
        "no root node",
        "mapping.root.parent",
    ),
    (
        "role missing",
        lambda s, m: m["a1"]["message"]["author"].pop("role"),
        "role must be a non-empty string",
        "mapping.a1.message.author.role",
    ),
    (
        "author missing",
        lambda s, m: m["a1"]["message"].pop("author"),
        "no 'author' object",
        "mapping.a1.message.author",
    ),
    (
        "message not an object",
        lambda s, m: m["a1"].update(message=["x"]),
        "a message is a JSON object",
        "mapping.a1.message",
    ),
    (
        "time as text",
        lambda s, m: m["a1"]["message"].update(create_time="yesterday"),
        "a time is a number",
        "mapping.a1.message.create_time",
    ),
    (
        "time out of range",
        lambda s, m: m["a1"]["message"].update(create_time=1e300),
        "out of range",
        "mapping.a1.message.create_time",
    ),
    (
        "conversation time",
        lambda s, m: s.update(create_time=True),
        "a time is a number",
        "create_time",
    ),
    ("no mapping", lambda s, m: s.pop("mapping"), "non-empty object of nodes", "mapping"),
    ("empty mapping", lambda s, m: m.clear(), "non-empty object of nodes", "mapping"),
    (
        "no id",
        lambda s, m: (s.pop("id"), s.pop("conversation_id")),
        "no conversation id",
        "id",
    ),
    ("node not an object", lambda s, m: m.update(w1=3), "a node is a JSON object", "mapping.w1"),
    (
        "children not a list",
        lambda s, m: m["a3"].update(children="u3"),
        "list",
        "mapping.a3.children",
    ),
    (
        "parent not a string",
        lambda s, m: m["a3"].update(parent=7),
        "a node id or null",
        "mapping.a3.parent",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "message_text", "path"), BROKEN, ids=[b[0] for b in BROKEN]
)
def test_broken_conversations_raise_format_error_with_a_path(
    case: str, change: Any, message_text: str, path: str
) -> None:
    with pytest.raises(FormatError, match=message_text.replace("(", r"\(")) as caught:
        chatgpt.from_dict(broken(change))
    assert caught.value.path == path


def test_errors_found_by_the_document_point_into_the_source() -> None:
    src = branchy()
    deep: Any = 1
    for _ in range(210):  # deeper than convtree's limit (200)
        deep = [deep]
    src["mapping"]["a1"]["message"]["metadata"]["deep"] = deep
    with pytest.raises(FormatError, match="nested deeper") as caught:
        chatgpt.from_dict(src)
    assert caught.value.path is not None
    assert caught.value.path.startswith("mapping.a1.message.metadata.deep[0][0]")
    src = branchy()
    src["title"] = "bad \ud800 title"
    with pytest.raises(FormatError) as caught:
        chatgpt.from_dict(src)
    assert caught.value.path == "title"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_damage_raises_only_format_error(data: st.DataObject) -> None:
    """Replace any value of the conversation by junk: it imports, or raises FormatError."""
    src = branchy()
    spots: list[tuple[Any, Any]] = []
    stack: list[Any] = [src]
    while stack:
        item = stack.pop()
        keys = list(item) if isinstance(item, dict) else range(len(item))
        for key in keys:
            spots.append((item, key))
            if isinstance(item[key], (dict, list)):
                stack.append(item[key])
    for _ in range(data.draw(st.integers(1, 3))):
        container, key = data.draw(st.sampled_from(spots))
        junk = data.draw(
            st.sampled_from([None, 0, -1.5, True, "", "x", "root", "a2", [], {}, ["u1"], {"a": 1}])
        )
        if isinstance(container, dict) and data.draw(st.booleans()):
            container.pop(key, None)
        else:
            try:
                container[key] = junk
            except IndexError:
                continue
    try:
        state = chatgpt.from_dict(src)
    except FormatError:
        return
    out = chatgpt.to_dict(state)  # what imports also exports
    json.dumps(out)


@pytest.mark.parametrize("other", ["openwebui", "librechat"])
def test_chatgpt_to_another_format_keeps_every_branch(other: str) -> None:
    """ChatGPT -> convtree -> Open WebUI / LibreChat -> convtree: same tree, roles, texts."""
    module = importlib.import_module(f"convtree.interop.{other}")
    state = chatgpt.from_dict(branchy())
    back = module.from_dict(json.loads(json.dumps(module.to_dict(state))))

    def shape(s: ConversationState) -> dict[str, Any]:
        return {
            n.node_id: ([c.node_id for c in s.children(n)], n.message.role, n.message.text)
            for n in s.nodes()
            if n.message is not None
        }

    assert shape(back) == shape(state)
    assert back.current_node_id == state.current_node_id
    assert len(back.leaves()) == len(state.leaves()) == 3


# ------------------------------------------------------------------ read/write


def test_read_zip_export_skips_the_broken_conversation(tmp_path: Path) -> None:
    good2 = branchy()
    good2["id"] = good2["conversation_id"] = "conv-2"
    bad = branchy()
    bad["id"] = bad["conversation_id"] = "conv-bad"
    bad["mapping"]["u3b"]["parent"] = "ghost"
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("conversations.json", json.dumps([branchy(), bad, good2]))
        zf.writestr("user.json", json.dumps({"id": "user-1"}))
        zf.writestr("file-abc.png", b"\x89PNG")
    with chatgpt.read(archive) as reader:
        states = list(reader)
    assert [s.conversation_id for s in states] == ["conv-1", "conv-2"]
    [skipped] = reader.skipped
    assert (skipped.index, skipped.source_id, skipped.file) == (1, "conv-bad", "conversations.json")
    assert skipped.error.path == "conversations.json[1].mapping.u3b.parent"
    with pytest.raises(FormatError, match="ghost"):
        list(chatgpt.read(archive, errors="raise"))
    # Importing again gives the same conversations.
    assert [s.to_dict() for s in chatgpt.read(archive)] == [s.to_dict() for s in states]


def test_write_and_read_back(tmp_path: Path) -> None:
    states = [chatgpt.from_dict(branchy()), native_state()]
    path = tmp_path / "conversations.json"
    assert chatgpt.write(states, path) == 2
    back = list(chatgpt.read(path))
    assert chatgpt.to_dict(back[0]) == branchy()
    assert tree_of(back[1]) == tree_of(states[1])
    assert json.loads(path.read_bytes())[0] == branchy()

    assert chatgpt.write(iter(states), path, mode="branches") == 3 + 2
    assert [c["id"] for c in json.loads(path.read_bytes())][:3] == [
        "conv-1~a2",
        "conv-1~u3",
        "conv-1~w1",
    ]
    buffer = io.BytesIO()
    assert chatgpt.write(states, buffer, mode="active") == 2
    assert [len(c["mapping"]) for c in json.loads(buffer.getvalue())] == [7, 4]


# ------------------------------------------------------------------ properties

TEXT = st.text(max_size=12)
TIMES = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
)
CONTENT = TEXT | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})
    | st.fixed_dictionaries(
        {"type": st.just("image_asset_pointer"), "asset_pointer": TEXT, "width": st.integers(0, 99)}
    ),
    max_size=3,
)


@st.composite
def native_trees(draw: st.DrawFn) -> ConversationState:
    state = ConversationState(draw(st.sampled_from(["c", "conv-9", "ü-id"])))
    if draw(st.booleans()):
        state.metadata["title"] = draw(TEXT)
    ids = [state.root.node_id]
    for i in range(draw(st.integers(1, 12))):
        parent = draw(st.sampled_from(ids))
        metadata = (
            {"model": draw(st.sampled_from(["gpt-4o", "o3"]))} if draw(st.booleans()) else None
        )
        node = state.add_message(
            draw(st.sampled_from(["system", "user", "assistant", "tool"])),
            draw(CONTENT),
            parent_id=parent,
            node_id=f"n{i}",
            name=draw(st.none() | st.sampled_from(["ann", "browser"])),
            tool_calls=draw(st.none() | st.just([{"id": "t", "type": "function"}])),
            tool_call_id=draw(st.none() | st.just("t")),
            metadata=metadata,
            timestamp=draw(TIMES),
        )
        ids.append(node.node_id)
    state.switch_to(draw(st.sampled_from(ids)))
    return state


@settings(max_examples=100, deadline=None)
@given(native_trees())
def test_property_native_trees_survive_chatgpt(state: ConversationState) -> None:
    out = chatgpt.to_dict(state)
    back = chatgpt.from_dict(json.loads(json.dumps(out)))
    assert back.conversation_id == state.conversation_id
    assert back.root.node_id == state.root.node_id
    assert tree_of(back) == tree_of(state)
    assert back.current_node_id == state.current_node_id
    assert back.metadata.get("title") == state.metadata.get("title")
    for node in state.nodes():
        other = back.get_node(node.node_id)
        if node.message is None:
            assert other.message is None
            continue
        assert other.timestamp == node.timestamp
        assert other.message.role == node.message.role
        assert other.message.content == as_chatgpt_keeps_it(node.message.content)
        assert other.message.name == node.message.name
        assert other.message.tool_calls == node.message.tool_calls
        assert other.message.tool_call_id == node.message.tool_call_id
        assert other.metadata.get("model") == node.metadata.get("model")
    assert chatgpt.to_dict(back) == out  # and a second trip changes nothing


def as_chatgpt_keeps_it(content: Any) -> Any:
    """A list holding one text part is plain text to ChatGPT: it comes back as a str."""
    if isinstance(content, list) and len(content) == 1 and content[0].get("type") == "text":
        return content[0]["text"]
    return content


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_property_chatgpt_objects_round_trip_exactly(data: st.DataObject) -> None:
    """Random ChatGPT-shaped trees (content types, times, mapping orders) come back exactly."""
    count = data.draw(st.integers(1, 10))
    contents = st.sampled_from(
        [
            "plain",
            {"content_type": "text", "parts": ["a", "b"]},
            {"content_type": "text", "parts": []},
            {"content_type": "code", "language": "py", "text": "x"},
            {"content_type": "multimodal_text", "parts": [IMAGE, "see"]},
            {"content_type": "thoughts", "thoughts": [{"content": "hm"}]},
            {"content_type": "unknown_kind", "data": [1, {"a": None}]},
            None,
        ]
    )
    nodes: list[tuple[str, str | None, dict[str, Any] | None]] = [("r", None, None)]
    for i in range(count):
        parent = data.draw(st.sampled_from([n[0] for n in nodes]))
        at = data.draw(st.none() | st.floats(1e9, 2e9) | st.integers(1_000_000_000, 2_000_000_000))
        nid = f"m{i}"
        msg = message(
            nid, data.draw(st.sampled_from(["user", "assistant", "tool"])), data.draw(contents), at
        )
        nodes.append((nid, parent, msg))
    order = data.draw(st.permutations(nodes))
    current = data.draw(st.sampled_from([n[0] for n in nodes]))
    src = conversation(list(order), current=current)
    state = chatgpt.from_dict(copy.deepcopy(src))
    out = chatgpt.to_dict(state)
    assert json.dumps(out) == json.dumps(src)


# ------------------------------------------------------------------ real files


@pytest.mark.skipif(not REAL.is_dir(), reason="the real exports are not on this machine")
@pytest.mark.parametrize(
    "name", sorted(p.name for p in REAL.glob("*.json")) if REAL.is_dir() else []
)
def test_real_exports_import_and_round_trip(name: str) -> None:
    path = REAL / name
    raw = json.loads(path.read_bytes())
    objects = raw if isinstance(raw, list) else [raw]
    with chatgpt.read(path, errors="raise") as reader:
        states = list(reader)
    assert reader.skipped == []
    assert len(states) == len(objects)
    for state, obj in zip(states, objects, strict=True):
        assert state.conversation_id == obj["conversation_id"]
        assert len(state) == len(obj["mapping"])
        assert state.current_node_id == obj["current_node"]
        assert any(m.text for m in state.get_current_messages())
        out = chatgpt.to_dict(state)
        assert json.dumps(out) == json.dumps(obj)
