"""Open WebUI chats: import, export modes, exact round trips, bad input, real files."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convtree import ConversationState, FormatError, Message
from convtree.interop import openwebui

REAL = Path("/work/shared/fixtures/interchange/openwebui")
T0 = 1700000000


def msg(
    message_id: str,
    parent: str | None,
    children: list[str],
    role: str,
    content: Any,
    at: Any = T0,
    **extra: Any,
) -> dict[str, Any]:
    """An Open WebUI message, fields in the order Open WebUI writes them."""
    out: dict[str, Any] = {
        "id": message_id,
        "parentId": parent,
        "childrenIds": children,
        "role": role,
        "content": content,
    }
    if at is not None:
        out["timestamp"] = at
    out.update(extra)
    return out


def branchy_messages() -> dict[str, dict[str, Any]]:
    """Two first messages (an edit of the first one), regenerations and edits at
    several depths, an interrupted reply, images, sources, usage, odd times."""
    usage = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
    messages = [
        msg("u1", None, ["a1", "a1b"], "user", "Hello 👋", T0, models=["m1"]),
        msg(
            "a1",
            "u1",
            ["u2"],
            "assistant",
            "Hi! How can I help?",
            T0 + 5,
            model="m1",
            modelName="Model One",
            modelIdx=0,
            userContext=None,
            usage=usage,
            info={"total_duration": 123},
            done=True,
        ),
        msg(
            "a1b",
            "u1",
            ["u3", "u3b"],
            "assistant",
            "Hello there.",
            T0 + 10,
            model="m2",
            sources=[{"source": {"name": "doc.pdf"}, "document": ["text"], "metadata": [{}]}],
            citations=[{"id": 1}],
            done=True,
        ),
        msg(
            "u2",
            "a1",
            ["a2", "a2b"],
            "user",
            "What is in this picture?",
            T0 + 20,
            files=[{"type": "image", "url": "data:image/png;base64,iVBORw0KGgo="}],
            models=["m1"],
        ),
        msg(
            "a2",
            "u2",
            [],
            "assistant",
            "",
            T0 + 25,
            model="m1",
            done=False,
            error={"content": "Connection lost"},
        ),
        msg(
            "a2b",
            "u2",
            [],
            "assistant",
            "A cat on a **mat**.\n\n```python\nprint('cat')\n```",
            T0 + 30.5,
            model="m1",
            statusHistory=[{"done": True, "action": "web_search"}],
            annotation={"rating": 1},
            done=True,
        ),
        msg("u3", "a1b", [], "user", "Tell me more", T0 + 40),
        msg("u3b", "a1b", ["a3"], "user", "Tell me more, briefly", T0 + 45),
        msg("a3", "u3b", [], "assistant", "Sure.", None, model="m2", done=True),
        msg("u1b", None, ["a4"], "user", "Hello, edited", T0 + 100),
        msg("a4", "u1b", [], "assistant", "Hi again", (T0 + 105) * 1000, model="m1", done=True),
    ]
    return {m["id"]: m for m in messages}


def chat_object(
    messages: dict[str, dict[str, Any]], current: str | None, path: list[str], **extra: Any
) -> dict[str, Any]:
    chat: dict[str, Any] = {
        "id": "",
        "title": "Branchy",
        "models": ["m1", "m2"],
        "params": {"system": "Be brief"},
        "history": {"messages": messages, "currentId": current},
        "messages": [copy.deepcopy(messages[i]) for i in path],
        "tags": [],
        "timestamp": T0 * 1000 + 123,
        "files": [],
    }
    chat.update(extra)
    return chat


def row(chat: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out = {
        "id": "chat-1",
        "user_id": "user-7",
        "title": "Branchy",
        "chat": chat,
        "created_at": T0,
        "updated_at": T0 + 200,
        "share_id": None,
        "archived": False,
        "pinned": True,
        "meta": {"tags": ["test"]},
        "folder_id": None,
    }
    out.update(extra)
    return out


def branchy_row() -> dict[str, Any]:
    return row(chat_object(branchy_messages(), "a2b", ["u1", "a1", "u2", "a2b"]))


def exact(value: Any) -> str:
    """JSON text that tells 1 from 1.0 and True from 1."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def utc(seconds: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)


def shape(state: ConversationState) -> list[tuple[Any, ...]]:
    """The tree as data: depth-first (id, parent id, role, text, name, time), then the cursor."""
    rows: list[tuple[Any, ...]] = []
    for node in state.nodes():
        parent = state.parent(node.node_id)
        message = node.message
        rows.append(
            (
                node.node_id,
                None if parent is None else parent.node_id,
                None if message is None else message.role,
                None if message is None else message.text,
                None if message is None else message.name,
                None if message is None else node.timestamp,
            )
        )
    rows.append(("cursor", state.current_node_id))
    return rows


# ---------------------------------------------------------------------- import


def test_import_keeps_ids_tree_order_and_cursor() -> None:
    state = openwebui.from_dict(branchy_row())
    assert state.conversation_id == "chat-1"
    assert state.root.node_id == openwebui.ROOT_ID
    assert not state.root.has_message
    kids = {n.node_id: [c.node_id for c in state.children(n.node_id)] for n in state.nodes()}
    assert kids == {
        "root": ["u1", "u1b"],
        "u1": ["a1", "a1b"],
        "a1": ["u2"],
        "a1b": ["u3", "u3b"],
        "u2": ["a2", "a2b"],
        "a2": [],
        "a2b": [],
        "u3": [],
        "u3b": ["a3"],
        "a3": [],
        "u1b": ["a4"],
        "a4": [],
    }
    assert state.current_node_id == "a2b"
    assert [m.text for m in state.get_current_messages()] == [
        "Hello 👋",
        "Hi! How can I help?",
        "What is in this picture?",
        "A cat on a **mat**.\n\n```python\nprint('cat')\n```",
    ]
    assert state.metadata["title"] == "Branchy"
    assert state.metadata["source"] == "openwebui"


def test_import_fields_times_and_metadata() -> None:
    state = openwebui.from_dict(branchy_row())
    a1 = state.get_node("a1")
    assert a1.message is not None
    assert a1.message.role == "assistant"
    assert a1.metadata["model"] == "m1"
    assert a1.metadata["usage"]["total_tokens"] == 42
    assert a1.metadata["openwebui"]["modelName"] == "Model One"
    assert a1.metadata["openwebui"]["info"] == {"total_duration": 123}
    assert state.get_node("u2").metadata["openwebui"]["files"][0]["type"] == "image"
    assert state.get_node("a2").metadata["openwebui"]["error"] == {"content": "Connection lost"}
    assert state.get_node("a1b").metadata["openwebui"]["sources"][0]["source"]["name"] == "doc.pdf"
    assert state.get_node("u1").timestamp == utc(T0)
    assert state.get_node("u1").timestamp.tzinfo is not None
    assert state.get_node("a2b").timestamp == utc(T0 + 30.5)
    assert state.get_node("a4").timestamp == utc(T0 + 105)  # milliseconds recognised
    assert state.get_node("a3").timestamp == state.get_node("u3b").timestamp  # none: the parent's
    assert state.created_at == utc(T0)
    assert state.updated_at == utc(T0 + 200)
    assert state.root.timestamp == state.created_at
    usage = state.usage()
    assert usage.total_tokens == 42


def test_round_trip_is_exact() -> None:
    source = branchy_row()
    state = openwebui.from_dict(source)
    assert exact(openwebui.to_dict(state)) == exact(source)
    assert openwebui.from_dict(openwebui.to_dict(state)) == state


def test_bare_chat_round_trip_and_its_id() -> None:
    source = chat_object(branchy_messages(), "a2b", ["u1", "a1", "u2", "a2b"])
    state = openwebui.from_dict(source)
    # No id of its own ("" as a single chat's export has): the first message's id.
    assert state.conversation_id == "u1"
    assert state.created_at == utc(T0 + 0.123)  # chat.timestamp, in milliseconds
    assert exact(openwebui.to_dict(state)) == exact(source)
    as_row = openwebui.to_dict(state, shape="row")
    assert as_row["id"] == "u1"
    assert as_row["chat"]["history"] == source["history"]
    assert openwebui.from_dict(as_row).conversation_id == "u1"


def test_importing_twice_gives_the_same_conversation() -> None:
    first = openwebui.from_dict(branchy_row())
    second = openwebui.from_dict(branchy_row())
    assert first == second
    bare = chat_object(branchy_messages(), "a2b", ["u1", "a1", "u2", "a2b"])
    assert openwebui.from_dict(bare) == openwebui.from_dict(copy.deepcopy(bare))


def test_the_input_is_not_changed_and_the_output_shares_nothing() -> None:
    source = branchy_row()
    before = exact(source)
    state = openwebui.from_dict(source)
    assert exact(source) == before
    out = openwebui.to_dict(state)
    out["chat"]["history"]["messages"]["a1"]["usage"]["total_tokens"] = 0
    out["chat"]["messages"][0]["models"].append("x")
    out["meta"]["tags"].append("x")
    assert exact(openwebui.to_dict(state)) == before


def test_current_id_null_or_missing_picks_the_newest_leaf_and_survives() -> None:
    for current in (None, "missing"):
        source = row(chat_object(branchy_messages(), None, ["u1b", "a4"]))
        history = source["chat"]["history"]
        if current is None:
            history["currentId"] = None
        else:
            del history["currentId"]
        state = openwebui.from_dict(source)
        assert state.current_node_id == "a4"  # the newest leaf
        assert exact(openwebui.to_dict(state)) == exact(source)


def test_missing_optional_fields() -> None:
    messages = {
        "u": {"id": "u", "parentId": None, "role": "user", "content": "hi"},
        "a": {"parentId": "u", "role": "assistant"},
    }
    source = {"history": {"messages": messages, "currentId": "a"}}
    state = openwebui.from_dict(source)
    assert state.conversation_id == "u"
    assert [c.node_id for c in state.children("u")] == ["a"]
    assert state.get_node("a").content is None
    assert state.get_node("a").timestamp == state.created_at == utc(0)
    assert "title" not in state.metadata
    assert exact(openwebui.to_dict(state)) == exact(source)


def test_empty_chat() -> None:
    source = {"id": "", "title": "New Chat", "history": {"messages": {}, "currentId": None}}
    state = openwebui.from_dict(source)
    assert len(state) == 1
    assert state.conversation_id.startswith("openwebui-")
    assert openwebui.from_dict(copy.deepcopy(source)).conversation_id == state.conversation_id
    assert exact(openwebui.to_dict(state)) == exact(source)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (T0, utc(T0)),
        (T0 + 0.25, utc(T0 + 0.25)),
        (T0 * 1000 + 7, utc(T0 + 0.007)),
        (T0 * 1_000_000 + 7, utc(T0) + timedelta(microseconds=7)),
        (T0 * 1_000_000_000 + 7000, utc(T0) + timedelta(microseconds=7)),
        ("2023-11-14T22:13:20Z", utc(T0)),
        ("2023-11-14T23:13:20.5+01:00", utc(T0 + 0.5)),
        ("2023-11-14T22:13:20", utc(T0)),
        ({"$date": "2023-11-14T22:13:20Z"}, utc(T0)),
    ],
)
def test_times_in_every_accepted_form_round_trip(raw: Any, expected: datetime) -> None:
    source = {"id": "c", "history": {"messages": {"u": msg("u", None, [], "user", "x", raw)}}}
    state = openwebui.from_dict(source)
    assert state.get_node("u").timestamp == expected
    assert exact(openwebui.to_dict(state)) == exact(source)


# ---------------------------------------------------------------------- export


def test_changes_made_in_convtree_are_exported() -> None:
    state = openwebui.from_dict(branchy_row())
    node = state.get_node("a2b")
    assert node.message is not None
    node.message.content = "A dog."
    state.get_node("a1").timestamp = utc(T0 + 6)
    state.metadata["title"] = "Renamed"
    state.switch_to("u3")
    added = state.add_message(
        "assistant", "New reply", metadata={"model": "m3"}, timestamp=utc(T0 + 300)
    )
    out = openwebui.to_dict(state)
    messages = out["chat"]["history"]["messages"]
    assert messages["a2b"]["content"] == "A dog."
    assert messages["a2b"]["timestamp"] == T0 + 30.5  # unchanged, kept
    assert messages["a1"]["timestamp"] == T0 + 6
    assert messages["a4"]["timestamp"] == (T0 + 105) * 1000  # unchanged: written as it was
    assert out["title"] == out["chat"]["title"] == "Renamed"
    assert messages["u3"]["childrenIds"] == [added.node_id]
    assert messages[added.node_id] == {
        "id": added.node_id,
        "parentId": "u3",
        "childrenIds": [],
        "role": "assistant",
        "content": "New reply",
        "timestamp": T0 + 300,
        "model": "m3",
        "done": True,
    }
    assert out["chat"]["history"]["currentId"] == added.node_id
    assert [m["id"] for m in out["chat"]["messages"]] == ["u1", "a1b", "u3", added.node_id]
    back = openwebui.from_dict(out)
    assert shape(back) == shape(state)


def test_flat_messages_are_the_path_to_the_current_id() -> None:
    state = openwebui.from_dict(branchy_row())
    state.switch_to("a4")
    chat = openwebui.to_dict(state)["chat"]
    assert chat["history"]["currentId"] == "a4"
    assert chat["messages"] == [chat["history"]["messages"][i] for i in ("u1b", "a4")]
    assert chat["messages"][0] is not chat["history"]["messages"]["u1b"]


def test_active_mode_is_the_path_to_the_cursor() -> None:
    state = openwebui.from_dict(branchy_row())
    out = openwebui.to_dict(state, mode="active")
    history = out["chat"]["history"]
    assert list(history["messages"]) == ["u1", "a1", "u2", "a2b"]
    assert [m["childrenIds"] for m in history["messages"].values()] == [["a1"], ["u2"], ["a2b"], []]
    assert history["currentId"] == "a2b"
    assert out["id"] == "chat-1"
    back = openwebui.from_dict(out)
    assert [n.node_id for n in back.nodes()] == ["root", "u1", "a1", "u2", "a2b"]
    assert back.get_node("a2b").metadata == state.get_node("a2b").metadata


def test_branches_mode_is_one_chat_per_leaf() -> None:
    state = openwebui.from_dict(branchy_row())
    out = openwebui.to_dict(state, mode="branches")
    leaves = [leaf.node_id for leaf in state.leaves()]
    assert leaves == ["a2", "a2b", "u3", "a3", "a4"]
    assert [chat["id"] for chat in out] == [f"chat-1~{leaf}" for leaf in leaves]
    for leaf, chat in zip(leaves, out, strict=True):
        assert chat["chat"]["id"] == f"chat-1~{leaf}"
        assert chat["chat"]["history"]["currentId"] == leaf
        back = openwebui.from_dict(chat)
        assert back.conversation_id == f"chat-1~{leaf}"
        assert [n.node_id for n in back.get_path()] == [n.node_id for n in state.get_path(leaf)]


def native_state() -> ConversationState:
    state = ConversationState("native-1", metadata={"title": "Native", "user_id": "alice"})
    state.add_message("system", "Be terse.", timestamp=utc(T0))
    question = state.add_message("user", "2+2?", name="ann", timestamp=utc(T0 + 1))
    state.add_message(
        "assistant",
        "4",
        metadata={"model": "gpt-x", "usage": {"total_tokens": 9}, "rating": 5},
        timestamp=utc(T0 + 2.25),
    )
    state.add_alternative("assistant", "Four", metadata={"model": "gpt-y"}, timestamp=utc(T0 + 3))
    state.add_message(
        "user",
        [
            {"type": "text", "text": "And this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ],
        timestamp=utc(T0 + 4),
    )
    state.add_message("assistant", None, tool_calls=[{"id": "c", "type": "function"}])
    state.switch_to(question.node_id)
    return state


def test_export_of_a_native_conversation() -> None:
    state = native_state()
    out = openwebui.to_dict(state)
    assert out["id"] == "native-1"
    assert out["user_id"] == "alice"
    assert out["title"] == out["chat"]["title"] == "Native"
    chat = out["chat"]
    assert chat["convtree"] == {"root_id": state.root.node_id}
    assert chat["models"] == ["gpt-x", "gpt-y"]
    messages = list(chat["history"]["messages"].values())
    assert messages[0]["parentId"] is None
    assert messages[0]["role"] == "system"
    assert messages[1]["name"] == "ann"
    assert messages[2]["done"] is True
    assert messages[2]["usage"] == {"total_tokens": 9}
    assert messages[2]["timestamp"] == T0 + 2.25
    assert messages[1]["timestamp"] == T0 + 1
    image = messages[4]
    assert image["content"] == "And this?"
    assert image["files"] == [{"type": "image", "url": "https://example.com/a.png"}]
    assert messages[5]["content"] == ""
    assert messages[5]["convtree"] == {"tool_calls": [{"id": "c", "type": "function"}]}
    assert chat["history"]["currentId"] == state.current_node_id
    assert [m["id"] for m in chat["messages"]] == [n.node_id for n in state.get_path()[1:]]
    assert out["created_at"] == int((state.created_at - utc(0)).total_seconds())

    back = openwebui.from_dict(out)
    assert shape(back) == shape(state)
    assert back.root.node_id == state.root.node_id
    assert back.get_node(messages[2]["id"]).metadata["model"] == "gpt-x"
    assert back.get_node(messages[2]["id"]).metadata["usage"] == {"total_tokens": 9}
    assert back.get_node(messages[5]["id"]).message == Message(
        role="assistant", content="", tool_calls=[{"id": "c", "type": "function"}]
    )
    # Read from Open WebUI now: written back the same.
    assert exact(openwebui.to_dict(back)) == exact(out)


def test_cursor_on_the_root_and_a_root_holding_a_message() -> None:
    state = native_state()
    state.switch_to(state.root.node_id)
    chat = openwebui.to_dict(state, shape="chat")
    assert isinstance(chat, dict)
    assert chat["history"]["currentId"] is None
    assert chat["convtree"]["current_node_id"] == state.root.node_id
    assert openwebui.from_dict(chat).current_node_id == state.root.node_id

    doc = {
        "schema_version": "2.1.0",
        "conversation_id": "old",
        "nodes": [
            {
                "node_id": "",
                "message": {"role": "system", "content": "S"},
                "timestamp": utc(T0).isoformat(),
            },
            {
                "node_id": "0",
                "message": {"role": "user", "content": "U"},
                "timestamp": utc(T0).isoformat(),
            },
        ],
        "edges": [["", "0"]],
        "current_node_id": "0",
        "created_at": utc(T0).isoformat(),
        "updated_at": utc(T0).isoformat(),
    }
    old = ConversationState.from_dict(doc)
    out = openwebui.to_dict(old)
    assert out["chat"]["convtree"] == {"root_id": ""}
    assert out["chat"]["history"]["messages"][""]["parentId"] is None
    back = openwebui.from_dict(out)
    assert back.root.node_id == ""
    assert back.root.message == Message(role="system", content="S")
    assert shape(back) == shape(old)


def test_several_first_messages_without_a_convtree_root() -> None:
    """A chat exported from convtree whose root is "root" needs no `convtree` object."""
    state = openwebui.from_dict(branchy_row())
    assert "convtree" not in openwebui.to_dict(state)["chat"]
    clash = {
        "id": "c",
        "history": {"messages": {"root": msg("root", None, [], "user", "x")}, "currentId": "root"},
    }
    state = openwebui.from_dict(clash)
    assert state.root.node_id == "root-1"
    assert exact(openwebui.to_dict(state)) == exact(clash)


def test_bad_mode_and_shape() -> None:
    state = native_state()
    with pytest.raises(ValueError, match="mode"):
        openwebui.to_dict(state, mode="all")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="shape"):
        openwebui.to_dict(state, shape="table")  # type: ignore[call-overload]


def test_looks_like() -> None:
    assert openwebui.looks_like(branchy_row())
    assert openwebui.looks_like(branchy_row()["chat"])
    assert not openwebui.looks_like({"mapping": {}})
    assert not openwebui.looks_like({"conversationId": "x", "messages": []})
    assert not openwebui.looks_like({"chat": {"messages": []}})


# ------------------------------------------------------------------- bad input


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _del(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        target = obj
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


M = ["chat", "history", "messages"]


def _cycle(obj: dict[str, Any]) -> None:
    messages = obj["chat"]["history"]["messages"]
    messages["u1"]["parentId"] = "a1"
    del messages["u1"]["childrenIds"], messages["a1"]["childrenIds"]


BROKEN = [
    (lambda o: o.pop("chat"), None, "neither"),
    (_set(["chat", "history"], []), "chat.history", "object"),
    (_set([*M], []), "chat.history.messages", "object"),
    (_set([*M, "a1"], "x"), "chat.history.messages.a1", "object"),
    (_set([*M, "a1", "id"], "zz"), "chat.history.messages.a1.id", "not its key"),
    (_set([*M, "a1", "parentId"], "ghost"), "chat.history.messages.a1.parentId", "names no"),
    (_set([*M, "a1", "parentId"], 3), "chat.history.messages.a1.parentId", "message id or null"),
    (_cycle, "chat.history.messages.u1.parentId", "cycle"),
    (_set([*M, "u2", "parentId"], "u2"), "chat.history.messages.u2.parentId", "its own parent"),
    (_set([*M, "u1", "childrenIds"], ["a1"]), "chat.history.messages.u1.childrenIds", "misses"),
    (
        _set([*M, "u1", "childrenIds"], ["a1", "a1b", "u2"]),
        "chat.history.messages.u1.childrenIds",
        "whose parentId",
    ),
    (
        _set([*M, "u1", "childrenIds"], ["a1", "a1b", "zz"]),
        "chat.history.messages.u1.childrenIds",
        "no message",
    ),
    (
        _set([*M, "u1", "childrenIds"], ["a1", "a1", "a1b"]),
        "chat.history.messages.u1.childrenIds",
        "twice",
    ),
    (_set([*M, "u1", "childrenIds"], "a1"), "chat.history.messages.u1.childrenIds", "list"),
    (_del([*M, "a1", "role"]), "chat.history.messages.a1.role", "role"),
    (_set([*M, "a1", "content"], 7), "chat.history.messages.a1.content", "content"),
    (_set([*M, "a1", "content"], ["x"]), "chat.history.messages.a1.content", "content"),
    (_set([*M, "a1", "timestamp"], "yesterday"), "chat.history.messages.a1.timestamp", "time"),
    (_set([*M, "a1", "timestamp"], True), "chat.history.messages.a1.timestamp", "time"),
    (_set([*M, "a1", "timestamp"], 1e300), "chat.history.messages.a1.timestamp", "time"),
    (_set(["chat", "history", "currentId"], "ghost"), "chat.history.currentId", "names no"),
    (_set(["chat", "history", "currentId"], 5), "chat.history.currentId", "null"),
    (_set(["id"], 5), "id", "text"),
    (_set(["created_at"], "soon"), "created_at", "time"),
    (_set(["chat", "convtree"], []), "chat.convtree", "object"),
    (_set(["chat", "convtree"], {"root_id": 1}), "chat.convtree.root_id", "text"),
    (_set(["chat", "convtree"], {"root_id": "a1"}), "chat.convtree.root_id", "without a parent"),
    (
        _set(["chat", "convtree"], {"current_node_id": "zz"}),
        "chat.convtree.current_node_id",
        "names no",
    ),
    (_set([*M, "a1", "content"], "lone \ud800"), None, None),  # message text may hold it
    (_set(["title"], "bad \ud800"), "title", "surrogate"),
    (
        _set([*M, "a1", "info"], json.loads("[" * 250 + "]" * 250)),
        "chat.history.messages.a1",
        "deeper",
    ),
]


@pytest.mark.parametrize(("change", "path", "message"), BROKEN)
def test_broken_chats_raise_format_error_with_a_path(
    change: Callable[[dict[str, Any]], None], path: str | None, message: str | None
) -> None:
    source = branchy_row()
    change(source)
    if message is None:
        openwebui.from_dict(source)  # not an error
        return
    with pytest.raises(FormatError) as info:
        openwebui.from_dict(source)
    assert message in str(info.value)
    if path is not None:
        assert info.value.path == path


def test_not_an_object() -> None:
    with pytest.raises(FormatError, match="JSON object"):
        openwebui.from_dict([])  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_damage_raises_only_format_error(data: st.DataObject) -> None:
    """Any value anywhere in a valid chat: it imports, or raises FormatError (never
    KeyError, TypeError, ...), and what imports is written back as it was read."""
    source = branchy_row()
    target: Any = source
    where: list[Any] = []
    while isinstance(target, (dict, list)) and target and data.draw(st.booleans()):
        key = data.draw(
            st.sampled_from(list(target) if isinstance(target, dict) else range(len(target)))
        )
        where.append(key)
        if not isinstance(target[key], (dict, list)):
            break
        target = target[key]
    junk = data.draw(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=5)
        | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    )
    if where:
        _set(where, junk)(source)
    try:
        state = openwebui.from_dict(source)
    except FormatError:
        return
    if where[:2] == ["chat", "messages"]:
        # Not read: the flat list is rebuilt from the tree (the path to currentId).
        source["chat"]["messages"] = branchy_row()["chat"]["messages"]
    assert exact(openwebui.to_dict(state)) == exact(source)


# ------------------------------------------------------------ files and streams


def test_write_and_read_back(tmp_path: Path) -> None:
    states = [openwebui.from_dict(branchy_row()), native_state()]
    path = tmp_path / "chats.json"
    assert openwebui.write(states, path) == 2
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert exact(rows[0]) == exact(branchy_row())
    with openwebui.read(path) as reader:
        back = list(reader)
    assert reader.skipped == []
    assert back[0] == states[0]
    assert shape(back[1]) == shape(states[1])
    assert openwebui.write(states, tmp_path / "b.json", mode="branches") == 5 + 2
    buffer = io.BytesIO()
    openwebui.write(states[:1], buffer, shape="chat")
    assert json.loads(buffer.getvalue())[0]["history"] == branchy_row()["chat"]["history"]


def test_read_skips_the_broken_chat_and_reports_it(tmp_path: Path) -> None:
    good = branchy_row()
    broken = branchy_row()
    broken["id"] = "chat-2"
    broken["chat"]["history"]["messages"]["a1"]["parentId"] = "ghost"
    other = branchy_row()
    other["id"] = "chat-3"
    path = tmp_path / "export.json"
    path.write_text(json.dumps([good, broken, other]), encoding="utf-8")
    with openwebui.read(path) as reader:
        ids = [s.conversation_id for s in reader]
    assert ids == ["chat-1", "chat-3"]
    [skipped] = reader.skipped
    assert skipped.index == 1
    assert skipped.source_id == "chat-2"
    assert skipped.error.path == f"{path}[1].chat.history.messages.a1.parentId"
    with pytest.raises(FormatError, match="ghost"), openwebui.read(path, errors="raise") as strict:
        list(strict)


# ------------------------------------------------------------------- properties

ROLES = st.sampled_from(["system", "user", "assistant", "tool"])
TEXT = st.text(max_size=12)
CONTENT = TEXT | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2
)
TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
)


NODE_IDS = st.text(min_size=1, max_size=6).filter(lambda i: i.isprintable() and i == i.strip())


@st.composite
def random_trees(draw: st.DrawFn) -> ConversationState:
    """A conversation built through the API: random branching, roles, texts, times, ids."""
    state = ConversationState(draw(st.text(min_size=1, max_size=8)), metadata={"title": draw(TEXT)})
    ids = [state.root.node_id]
    for _ in range(draw(st.integers(0, 12))):
        parent = draw(st.sampled_from(ids))
        node_id = draw(NODE_IDS.filter(lambda i: i not in ids))
        node = state.add_message(
            draw(ROLES),
            draw(CONTENT),
            parent_id=parent,
            node_id=node_id,
            name=draw(st.none() | TEXT),
            metadata=draw(st.none() | st.builds(lambda m: {"model": m}, TEXT)),
            timestamp=draw(TIMES),
            tool_calls=draw(st.none() | st.just([{"id": "call", "type": "function"}])),
            tool_call_id=draw(st.none() | TEXT),
        )
        ids.append(node.node_id)
    state.switch_to(draw(st.sampled_from(ids)))
    return state


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_trees(), st.sampled_from(["row", "chat"]))
def test_property_random_trees_survive_open_webui(state: ConversationState, shape_: str) -> None:
    out = openwebui.to_dict(state, shape=shape_)  # type: ignore[call-overload]
    back = openwebui.from_dict(json.loads(json.dumps(out)))
    assert shape(back) == shape(state)
    assert back.conversation_id == state.conversation_id
    assert back.metadata["title"] == state.metadata["title"]
    for node in state.nodes():
        if node.message is not None:
            got = back.get_node(node.node_id)
            assert got.metadata.get("model") == node.metadata.get("model")
            assert got.message is not None
            # Open WebUI's content is text: a list of text parts comes back as its text.
            assert {**got.message.to_dict(), "content": None} == {
                **node.message.to_dict(),
                "content": None,
            }
    # Through a file, and once more: now an Open WebUI chat, written back exactly.
    buffer = io.BytesIO()
    openwebui.write([back], buffer)
    with openwebui.read(io.BytesIO(buffer.getvalue()), errors="raise") as reader:
        [again] = reader
    assert again == back
    assert exact(openwebui.to_dict(again)) == exact(openwebui.to_dict(back))


# ------------------------------------------------------------------ real files


@pytest.mark.skipif(not REAL.is_dir(), reason="the real exports are not on this machine")
@pytest.mark.parametrize(
    "name", sorted(p.name for p in REAL.glob("*.json")) if REAL.is_dir() else []
)
def test_real_exports_import_and_round_trip(name: str) -> None:
    with openwebui.read(REAL / name, errors="raise") as reader:
        states = list(reader)
    assert states
    source = json.loads((REAL / name).read_text(encoding="utf-8"))
    sources = source if isinstance(source, list) else [source]
    for state, obj in zip(states, sources, strict=True):
        assert len(state) > 1
        assert exact(openwebui.to_dict(state)) == exact(obj)
