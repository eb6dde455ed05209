"""LibreChat exports: import (flat and nested), export modes, exact round trips, bad input."""

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
from convtree.interop import librechat
from convtree.interop.librechat import NO_PARENT

REAL = Path("/work/shared/fixtures/interchange/librechat")
T0 = datetime(2024, 5, 29, tzinfo=timezone.utc)


def at(minutes: float) -> str:
    """LibreChat's time text: UTC, milliseconds, ``Z``."""
    stamp = T0 + timedelta(minutes=minutes)
    return stamp.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def msg(
    message_id: str,
    parent: str | None,
    text: str,
    minutes: float | None,
    *,
    user: bool,
    sender: str | None = None,
    model: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A LibreChat message, fields in the order LibreChat exports them."""
    out: dict[str, Any] = {"messageId": message_id, "conversationId": "lc-1"}
    if minutes is not None:
        out["createdAt"] = at(minutes)
    out.update(
        endpoint="openAI",
        error=False,
        isCreatedByUser=user,
        isEdited=False,
        model=model,
        parentMessageId=parent,
        sender=sender or ("User" if user else "GPT-4o"),
        text=text,
        unfinished=False,
    )
    if minutes is not None:
        out["updatedAt"] = at(minutes)
    out.update(extra)
    return out


AGENT_PARTS = [
    {"type": "think", "think": "The user wants a second haiku."},
    {"type": "text", "text": "Here it is:\n\nMoon on still water"},
    {
        "type": "tool_call",
        "tool_call": {"id": "call_1", "name": "search", "args": '{"q":"haiku"}', "output": "..."},
    },
]
OLD_PARTS = [{"type": "text", "text": {"value": "Old style answer", "annotations": []}}]


def branchy_messages() -> list[dict[str, Any]]:
    """Depth-first (as LibreChat lists them by time): regenerations and edits at several
    depths, an interrupted reply, an agent reply with parts, a second first message."""
    return [
        msg("m1", NO_PARENT, "Write a haiku", 0, user=True, tokenCount=5),
        msg(
            "m2",
            "m1",
            "Leaves fall slowly",
            1,
            user=False,
            model="gpt-4o",
            tokenCount=12,
            finish_reason="stop",
            feedback={"rating": "thumbsUp", "tag": "accurate"},
        ),
        msg("m2b", "m1", "Autumn wind", 2, user=False, model="gpt-4o", unfinished=True),
        msg(
            "m3",
            "m2b",
            "Another",
            3,
            user=True,
            files=[{"file_id": "f1", "filepath": "/images/a.png", "type": "image/png"}],
        ),
        msg("m3b", "m2b", "Another one, please", 4, user=True, isEdited=True),
        msg(
            "m4",
            "m3b",
            "",
            5,
            user=False,
            sender="Agent",
            model="agent-x",
            content=AGENT_PARTS,
            endpoint="agents",
        ),
        msg("m5", "m4", "Thanks", 6, user=True),
        msg("m6", "m5", "Something went wrong", 7, user=False, error=True),
        msg("m6b", "m5", "", 8, user=False, content=OLD_PARTS),
        msg("r2", None, "Separate start", None, user=True),
        {
            **msg("r2a", "r2", "Sure", 7.5, user=False, model="gpt-4o"),
            "createdAt": "2024-05-29T00:07:30Z",
        },
    ]


def export(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "conversationId": "lc-1",
        "endpoint": "openAI",
        "title": "Haiku",
        "exportAt": "20:33:31 GMT-0400 (Eastern Daylight Time)",
        "branches": True,
        "recursive": False,
        "options": {"model": "gpt-4o", "temperature": 0.7, "endpoint": "openAI"},
        "messages": messages,
    }
    out.update(extra)
    return out


def nested(messages: list[dict[str, Any]], key: str = "messagesTree") -> dict[str, Any]:
    """The same conversation with messages nested under ``children``."""
    copies = {m["messageId"]: {**copy.deepcopy(m), "children": []} for m in messages}
    tops = []
    for m in messages:
        parent = m["parentMessageId"]
        if parent in copies:
            copies[parent]["children"].append(copies[m["messageId"]])
        else:
            tops.append(copies[m["messageId"]])
    out = export([], recursive=True)
    del out["messages"]
    out[key] = tops
    return out


def exact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def shape(state: ConversationState, *, names: bool = True) -> list[tuple[Any, ...]]:
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
                None if message is None or not names else message.name,
                None if message is None else node.timestamp,
            )
        )
    rows.append(("cursor", state.current_node_id))
    return rows


# ---------------------------------------------------------------------- import


def test_import_keeps_ids_tree_order_and_picks_the_newest_leaf() -> None:
    state = librechat.from_dict(export(branchy_messages()))
    assert state.conversation_id == "lc-1"
    assert state.root.node_id == NO_PARENT
    assert not state.root.has_message
    kids = {n.node_id: [c.node_id for c in state.children(n.node_id)] for n in state.nodes()}
    assert kids == {
        NO_PARENT: ["m1", "r2"],
        "m1": ["m2", "m2b"],
        "m2": [],
        "m2b": ["m3", "m3b"],
        "m3": [],
        "m3b": ["m4"],
        "m4": ["m5"],
        "m5": ["m6", "m6b"],
        "m6": [],
        "m6b": [],
        "r2": ["r2a"],
        "r2a": [],
    }
    assert state.current_node_id == "m6b"  # the newest leaf: LibreChat keeps no cursor
    assert state.metadata["title"] == "Haiku"
    assert state.metadata["source"] == "librechat"
    assert state.metadata["librechat"]["options"]["temperature"] == 0.7


def test_import_roles_names_content_and_times() -> None:
    state = librechat.from_dict(export(branchy_messages()))
    m1, m2, m4, m6b = (state.get_node(i) for i in ("m1", "m2", "m4", "m6b"))
    assert m1.message == Message(role="user", content="Write a haiku", name="User")
    assert m2.message is not None
    assert (m2.message.role, m2.message.name) == ("assistant", "GPT-4o")
    assert m2.metadata["model"] == "gpt-4o"
    assert m2.metadata["librechat"]["feedback"] == {"rating": "thumbsUp", "tag": "accurate"}
    assert m2.metadata["librechat"]["tokenCount"] == 12
    assert "model" not in m1.metadata
    assert m1.metadata["librechat"]["model"] is None  # kept: null is not "no model"
    assert m4.message is not None
    assert m4.message.text == "Here it is:\n\nMoon on still water"  # no thinking, no tool call
    assert m4.message.content == AGENT_PARTS
    assert m4.metadata["librechat"]["endpoint"] == "agents"
    assert m6b.message is not None
    assert m6b.message.text == "Old style answer"
    assert m6b.metadata["librechat"]["content"] == OLD_PARTS  # the source's form, kept
    assert state.get_node("m3").metadata["librechat"]["files"][0]["file_id"] == "f1"
    assert state.get_node("m2b").metadata["librechat"]["unfinished"] is True
    assert m1.timestamp == T0
    assert state.get_node("m2").timestamp == T0 + timedelta(minutes=1)
    assert state.get_node("r2").timestamp == state.created_at == T0  # none: the conversation's
    assert state.updated_at == T0 + timedelta(minutes=8)


def test_round_trip_is_exact() -> None:
    source = export(branchy_messages())
    state = librechat.from_dict(source)
    assert exact(librechat.to_dict(state)) == exact(source)
    assert librechat.from_dict(librechat.to_dict(state)) == state


def test_nested_export_reads_the_same_and_round_trips() -> None:
    flat = librechat.from_dict(export(branchy_messages()))
    for key in ("messagesTree", "messages"):
        source = nested(branchy_messages(), key)
        state = librechat.from_dict(source)
        assert shape(state) == shape(flat)
        assert exact(librechat.to_dict(state, recursive=True)) == exact(source)
        # The flat shape by default.
        out = librechat.to_dict(state)
        assert out["recursive"] is False
        assert exact(out["messages"]) == exact(branchy_messages())


def test_file_order_sets_sibling_order_and_messages_come_out_depth_first() -> None:
    messages = branchy_messages()
    shuffled = [messages[i] for i in (0, 9, 2, 1, 10, 3, 4, 5, 6, 8, 7)]
    state = librechat.from_dict(export(shuffled))
    assert [c.node_id for c in state.children(NO_PARENT)] == ["m1", "r2"]
    assert [c.node_id for c in state.children("m1")] == ["m2b", "m2"]
    assert [c.node_id for c in state.children("m5")] == ["m6b", "m6"]
    out = librechat.to_dict(state)
    written = [m["messageId"] for m in out["messages"]]
    assert written == ["m1", "m2b", "m3", "m3b", "m4", "m5", "m6b", "m6", "m2", "r2", "r2a"]
    by_id = {m["messageId"]: m for m in out["messages"]}
    assert {k: exact(v) for k, v in by_id.items()} == {m["messageId"]: exact(m) for m in messages}


def test_roles_from_role_is_created_by_user_or_sender() -> None:
    messages = [
        {"messageId": "s", "parentMessageId": NO_PARENT, "role": "system", "isCreatedByUser": False,
         "sender": "System", "text": "Be kind"},
        {"messageId": "u", "parentMessageId": "s", "sender": "User", "text": "hi"},
        {"messageId": "a", "parentMessageId": "u", "sender": "Bot", "text": "hello"},
        {"messageId": "t", "parentMessageId": "a", "role": "tool", "text": "{}"},
    ]  # fmt: skip
    source = {"conversationId": "c", "messages": messages}
    state = librechat.from_dict(source)
    assert [n.role for n in state.get_path()[1:]] == ["system", "user", "assistant", "tool"]
    assert exact(librechat.to_dict(state)) == exact(source)


def test_missing_optional_fields() -> None:
    source = {
        "conversationId": "c",
        "messages": [
            {"messageId": "u", "isCreatedByUser": True, "text": "hi"},
            {"messageId": "a", "parentMessageId": "u", "isCreatedByUser": False},
        ],
    }
    state = librechat.from_dict(source)
    assert state.get_node("a").content is None
    assert state.get_node("u").message is not None
    assert state.get_node("u").message.name is None  # type: ignore[union-attr]
    assert (
        state.get_node("a").timestamp
        == state.created_at
        == datetime(1970, 1, 1, tzinfo=timezone.utc)
    )
    assert "title" not in state.metadata
    assert exact(librechat.to_dict(state)) == exact(source)
    empty = {"conversationId": "e", "title": "Empty", "messages": []}
    state = librechat.from_dict(empty)
    assert len(state) == 1
    assert exact(librechat.to_dict(state)) == exact(empty)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-29T00:00:00.000Z", T0),
        ("2024-05-29T00:00:00.123456Z", T0 + timedelta(microseconds=123456)),
        ("2024-05-29T00:00:00.123456789Z", T0 + timedelta(microseconds=123456)),
        ("2024-05-29T02:00:00+02:00", T0),
        ("2024-05-29T00:00:00", T0),
        (1716940800000, T0),
        (1716940800, T0),
        ({"$date": "2024-05-29T00:00:00.000Z"}, T0),
        ({"$date": {"$numberLong": "1716940800000"}}, T0),
    ],
)
def test_times_in_every_accepted_form_round_trip(raw: Any, expected: datetime) -> None:
    source = {
        "conversationId": "c",
        "messages": [{"messageId": "u", "createdAt": raw, "text": "x"}],
    }
    state = librechat.from_dict(source)
    assert state.get_node("u").timestamp == expected
    assert exact(librechat.to_dict(state)) == exact(source)


# ---------------------------------------------------------------------- export


def test_changes_made_in_convtree_are_exported() -> None:
    state = librechat.from_dict(export(branchy_messages()))
    m4, m6b, m2 = state.get_node("m4"), state.get_node("m6b"), state.get_node("m2")
    assert m4.message is not None
    assert m6b.message is not None
    assert m2.message is not None
    m4.message.content = [{"type": "text", "text": "Rewritten"}]
    m6b.message.content = "New answer"
    m2.message.name = "Renamed"
    state.switch_to("m3")
    added = state.add_message("assistant", "Fresh", metadata={"model": "gpt-4o"}, timestamp=T0)
    out = librechat.to_dict(state)
    by_id = {m["messageId"]: m for m in out["messages"]}
    # Its source wrote the text only in the parts ("text": ""), as LibreChat's agents do.
    assert (by_id["m4"]["text"], by_id["m4"]["content"]) == (
        "",
        [{"type": "text", "text": "Rewritten"}],
    )
    assert by_id["m6b"]["text"] == "New answer"
    assert "content" not in by_id["m6b"]
    assert by_id["m2"]["sender"] == "Renamed"
    assert by_id[added.node_id] == {
        "messageId": added.node_id,
        "parentMessageId": "m3",
        "conversationId": "lc-1",
        "isCreatedByUser": False,
        "sender": "gpt-4o",
        "text": "Fresh",
        "createdAt": "2024-05-29T00:00:00.000Z",
        "model": "gpt-4o",
    }
    # The cursor is not the newest leaf: kept beside, for convtree to read back.
    assert out["convtree"] == {"current_node_id": added.node_id}
    back = librechat.from_dict(out)
    assert shape(back, names=False) == shape(state, names=False)
    assert back.get_node(added.node_id).message == Message(
        role="assistant", content="Fresh", name="gpt-4o"
    )


def test_cursor_kept_when_it_is_not_the_newest_leaf() -> None:
    source = export(branchy_messages())
    state = librechat.from_dict(source)
    assert "convtree" not in librechat.to_dict(state)
    state.switch_to("m2")
    out = librechat.to_dict(state)
    assert out["convtree"] == {"current_node_id": "m2"}
    assert librechat.from_dict(out).current_node_id == "m2"
    state.switch_to(NO_PARENT)
    assert librechat.from_dict(librechat.to_dict(state)).current_node_id == NO_PARENT


def test_active_mode_is_the_path_to_the_cursor() -> None:
    state = librechat.from_dict(export(branchy_messages()))
    state.switch_to("m3")
    out = librechat.to_dict(state, mode="active")
    assert [m["messageId"] for m in out["messages"]] == ["m1", "m2b", "m3"]
    assert out["branches"] is False
    assert "convtree" not in out  # the path's end is its only leaf
    back = librechat.from_dict(out)
    assert back.current_node_id == "m3"
    assert back.get_node("m3").metadata == state.get_node("m3").metadata


def test_branches_mode_is_one_conversation_per_leaf() -> None:
    state = librechat.from_dict(export(branchy_messages()))
    out = librechat.to_dict(state, mode="branches")
    leaves = [leaf.node_id for leaf in state.leaves()]
    assert leaves == ["m2", "m3", "m6", "m6b", "r2a"]
    for leaf, conversation in zip(leaves, out, strict=True):
        assert conversation["conversationId"] == f"lc-1~{leaf}"
        assert {m["conversationId"] for m in conversation["messages"]} == {f"lc-1~{leaf}"}
        back = librechat.from_dict(conversation)
        assert back.current_node_id == leaf
        assert [n.node_id for n in back.get_path()] == [n.node_id for n in state.get_path(leaf)]
    nested_out = librechat.to_dict(state, mode="branches", recursive=True)
    assert nested_out[2]["messages"][0]["children"][0]["messageId"] == "m2b"


def native_state() -> ConversationState:
    state = ConversationState("native-1", metadata={"title": "Native"})
    state.add_message("system", "Be terse.", timestamp=T0)
    question = state.add_message("user", "2+2?", name="ann", timestamp=T0 + timedelta(seconds=1))
    state.add_message(
        "assistant", "4", metadata={"model": "gpt-x"}, timestamp=T0 + timedelta(seconds=2)
    )
    state.add_alternative("assistant", "Four", timestamp=T0 + timedelta(microseconds=3_000_001))
    state.add_message(
        "user",
        [{"type": "text", "text": "And this?"}, {"type": "image_url", "image_url": {"url": "u"}}],
        timestamp=T0 + timedelta(seconds=4),
    )
    state.add_message("tool", "{}", tool_call_id="c1", timestamp=T0 + timedelta(seconds=5))
    state.switch_to(question.node_id)
    return state


def test_export_of_a_native_conversation() -> None:
    state = native_state()
    out = librechat.to_dict(state)
    assert out["conversationId"] == "native-1"
    assert out["title"] == "Native"
    assert out["branches"] is True
    assert out["recursive"] is False
    assert out["createdAt"].endswith("Z")
    assert out["convtree"] == {
        "root_id": state.root.node_id,
        "current_node_id": state.current_node_id,
    }
    messages = out["messages"]
    assert [m["sender"] for m in messages] == [
        "System",
        "ann",
        "gpt-x",
        "Assistant",
        "User",
        "Tool",
    ]
    assert [m["isCreatedByUser"] for m in messages] == [False, True, False, False, True, False]
    assert [m.get("role") for m in messages] == ["system", None, None, None, None, "tool"]
    assert messages[0]["parentMessageId"] == NO_PARENT
    assert messages[3]["createdAt"] == "2024-05-29T00:00:03.000001Z"
    assert messages[4]["text"] == "And this?"
    assert messages[4]["content"][1] == {"type": "image_url", "image_url": {"url": "u"}}
    assert messages[5]["convtree"] == {"tool_call_id": "c1"}
    back = librechat.from_dict(out)
    assert shape(back, names=False) == shape(state, names=False)
    assert (back.created_at, back.updated_at) == (state.created_at, state.updated_at)
    assert back.root.node_id == state.root.node_id
    assert back.get_node(messages[5]["messageId"]).message == Message(
        role="tool", content="{}", name="Tool", tool_call_id="c1"
    )
    assert exact(librechat.to_dict(back)) == exact(out)


def test_root_holding_a_message() -> None:
    doc = {
        "schema_version": "2.1.0",
        "conversation_id": "old",
        "nodes": [
            {
                "node_id": "",
                "message": {"role": "system", "content": "S"},
                "timestamp": T0.isoformat(),
            },
            {
                "node_id": "0",
                "message": {"role": "user", "content": "U"},
                "timestamp": T0.isoformat(),
            },
        ],
        "edges": [["", "0"]],
        "current_node_id": "0",
        "created_at": T0.isoformat(),
        "updated_at": T0.isoformat(),
    }
    old = ConversationState.from_dict(doc)
    for recursive in (False, True):
        out = librechat.to_dict(old, recursive=recursive)
        assert out["convtree"] == {"root_id": ""}
        back = librechat.from_dict(out)
        assert back.root.node_id == ""
        assert back.root.message is not None
        assert shape(back, names=False) == shape(old, names=False)


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        librechat.to_dict(native_state(), mode="all")  # type: ignore[call-overload]


def test_looks_like() -> None:
    assert librechat.looks_like(export(branchy_messages()))
    assert librechat.looks_like(nested(branchy_messages()))
    assert not librechat.looks_like({"mapping": {}})
    assert not librechat.looks_like({"history": {"messages": {}}})
    assert not librechat.looks_like({"conversationId": 3, "messages": []})


# ------------------------------------------------------------------- bad input


def _set(index: int | None, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        target = obj if index is None else obj["messages"][index]
        target[key] = value

    return change


def _nested_disagrees(obj: dict[str, Any]) -> None:
    obj.update(nested(obj["messages"]))
    del obj["messages"]
    obj["messagesTree"][0]["children"][0]["parentMessageId"] = "r2"


def _nested_children(obj: dict[str, Any]) -> None:
    obj.update(nested(obj["messages"]))
    del obj["messages"]
    obj["messagesTree"][0]["children"] = {"m2": {}}


BROKEN: list[tuple[Callable[[dict[str, Any]], None], str | None, str]] = [
    (_set(None, "conversationId", ""), "conversationId", "conversationId"),
    (lambda o: o.pop("conversationId"), "conversationId", "conversationId"),
    (_set(None, "messages", {}), "messages", "list"),
    (_set(2, "messageId", None), "messages[2].messageId", "messageId"),
    (_set(2, "messageId", "m1"), "messages[2].messageId", "twice"),
    (_set(3, "parentMessageId", "ghost"), "messages[3].parentMessageId", "names no message"),
    (_set(3, "parentMessageId", 7), "messages[3].parentMessageId", "message id or null"),
    (_set(3, "parentMessageId", "m3"), "messages[3].parentMessageId", "its own parent"),
    (_set(0, "parentMessageId", "m6"), "messages[0].parentMessageId", "cycle"),
    (_set(1, "text", 5), "messages[1].text", "text"),
    (_set(1, "content", "parts"), "messages[1].content", "content parts"),
    (_set(1, "content", [1]), "messages[1].content", "content parts"),
    (_set(1, "createdAt", "later"), "messages[1].createdAt", "time"),
    (_set(None, "createdAt", []), "createdAt", "time"),
    (_set(None, "recursive", True), "messages[1].parentMessageId", "nesting"),
    (_nested_children, "messagesTree[0].children", "list"),
    (_nested_disagrees, "messagesTree[0].children[0].parentMessageId", "nesting"),
    (_set(None, "convtree", "x"), "convtree", "object"),
    (_set(None, "convtree", {"current_node_id": "ghost"}), "convtree.current_node_id", "names no"),
    (_set(None, "convtree", {"root_id": "m2"}), "convtree.root_id", "first messages"),
    (_set(None, "title", "\udc00"), "title", "surrogate"),
    (_set(1, "feedback", json.loads("[" * 250 + "]" * 250)), "messages[1]", "deeper"),
    (lambda o: o.update(messages=["x"]), "messages[0]", "object"),
]


@pytest.mark.parametrize(("change", "path", "message"), BROKEN)
def test_broken_conversations_raise_format_error_with_a_path(
    change: Callable[[dict[str, Any]], None], path: str | None, message: str
) -> None:
    source = export(branchy_messages())
    change(source)
    with pytest.raises(FormatError) as info:
        librechat.from_dict(source)
    assert message in str(info.value)
    assert info.value.path == path


def test_children_of_a_flat_export_are_kept_as_they_are() -> None:
    messages = branchy_messages()
    messages[0]["children"] = []
    source = export(messages)
    assert exact(librechat.to_dict(librechat.from_dict(source))) == exact(source)


def test_not_an_object() -> None:
    with pytest.raises(FormatError, match="JSON object"):
        librechat.from_dict("x")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.booleans())
def test_random_damage_raises_only_format_error(data: st.DataObject, as_tree: bool) -> None:
    """Any value anywhere: it imports, or raises FormatError (never KeyError,
    TypeError, ...), and what imports is written back as it was read."""
    source = nested(branchy_messages()) if as_tree else export(branchy_messages())
    target: Any = source
    where: list[Any] = []
    while isinstance(target, (dict, list)) and target and data.draw(st.booleans()):
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        key = data.draw(st.sampled_from(keys))
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
        | st.sampled_from(["m1", "m2", NO_PARENT, "2024-01-01T00:00:00Z"])
        | st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    )
    if where:
        holder: Any = source
        for key in where[:-1]:
            holder = holder[key]
        holder[where[-1]] = junk
    try:
        state = librechat.from_dict(source)
    except FormatError:
        return
    out = librechat.to_dict(state, recursive=source.get("recursive") is True)
    if "recursive" not in where[:1]:
        assert exact(out) == exact(source) or _same_but_order(out, source)


def _same_but_order(out: dict[str, Any], source: dict[str, Any]) -> bool:
    """Equal but for the order of a flat message list (written depth-first)."""
    key = "messages"
    if not isinstance(source.get(key), list) or source.get("recursive") is True:
        return False
    ids = {m["messageId"]: exact(m) for m in source[key]}
    return {m["messageId"]: exact(m) for m in out[key]} == ids and exact(
        {k: v for k, v in out.items() if k != key}
    ) == exact({k: v for k, v in source.items() if k != key})


# ------------------------------------------------------------ files and streams


def test_write_and_read_back(tmp_path: Path) -> None:
    states = [librechat.from_dict(export(branchy_messages())), native_state()]
    path = tmp_path / "librechat.json"
    assert librechat.write(states, path) == 2
    written = json.loads(path.read_text(encoding="utf-8"))
    assert exact(written[0]) == exact(export(branchy_messages()))
    with librechat.read(path) as reader:
        back = list(reader)
    assert back[0] == states[0]
    assert shape(back[1], names=False) == shape(states[1], names=False)
    buffer = io.BytesIO()
    assert librechat.write(states, buffer, mode="branches", recursive=True) == 5 + 2
    with librechat.read(io.BytesIO(buffer.getvalue()), errors="raise") as reader:
        assert len(list(reader)) == 7
    single = tmp_path / "one.json"
    single.write_text(json.dumps(nested(branchy_messages())), encoding="utf-8")
    with librechat.read(single) as reader:
        [one] = reader
    assert shape(one) == shape(states[0])


def test_read_skips_the_broken_conversation_and_reports_it(tmp_path: Path) -> None:
    good = export(branchy_messages())
    broken = export(branchy_messages(), conversationId="lc-2")
    broken["messages"][4]["parentMessageId"] = "ghost"
    path = tmp_path / "export.json"
    path.write_text(json.dumps([good, broken, export([], conversationId="lc-3")]), encoding="utf-8")
    with librechat.read(path) as reader:
        ids = [s.conversation_id for s in reader]
    assert ids == ["lc-1", "lc-3"]
    [skipped] = reader.skipped
    assert (skipped.index, skipped.source_id) == (1, "lc-2")
    assert skipped.error.path == f"{path}[1].messages[4].parentMessageId"


def test_deep_nesting_is_read_without_recursion() -> None:
    messages = [msg("m0", NO_PARENT, "0", 0, user=True)]
    for i in range(1, 90):
        messages.append(msg(f"m{i}", f"m{i - 1}", str(i), i, user=i % 2 == 0))
    source = nested(messages)
    state = librechat.from_dict(source)
    assert state.depth("m89") == 90
    assert exact(librechat.to_dict(state, recursive=True)) == exact(source)


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
    state = ConversationState(draw(st.text(min_size=1, max_size=8)), metadata={"title": draw(TEXT)})
    ids = [state.root.node_id]
    for _ in range(draw(st.integers(0, 12))):
        node = state.add_message(
            draw(ROLES),
            draw(CONTENT),
            parent_id=draw(st.sampled_from(ids)),
            node_id=draw(NODE_IDS.filter(lambda i: i not in ids)),
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
@given(random_trees(), st.booleans())
def test_property_random_trees_survive_librechat(state: ConversationState, recursive: bool) -> None:
    out = librechat.to_dict(state, recursive=recursive)
    back = librechat.from_dict(json.loads(json.dumps(out)))
    assert shape(back, names=False) == shape(state, names=False)
    for node in state.nodes():
        if node.message is not None:
            got = back.get_node(node.node_id)
            assert got.message is not None
            assert got.message.content == node.message.content
            if node.message.name is not None:
                assert got.message.name == node.message.name
            assert {**got.message.to_dict(), "name": None} == {
                **node.message.to_dict(),
                "name": None,
            }
            assert got.metadata.get("model") == node.metadata.get("model")
    assert (back.conversation_id, back.metadata["title"]) == (
        state.conversation_id,
        state.metadata["title"],
    )
    buffer = io.BytesIO()
    librechat.write([back], buffer, recursive=recursive)
    with librechat.read(io.BytesIO(buffer.getvalue()), errors="raise") as reader:
        [again] = reader
    assert again == back


# ------------------------------------------------------------------ real files


@pytest.mark.skipif(not REAL.is_dir(), reason="the real exports are not on this machine")
@pytest.mark.parametrize(
    "name", sorted(p.name for p in REAL.glob("*.json")) if REAL.is_dir() else []
)
def test_real_exports_import_and_round_trip(name: str) -> None:
    with librechat.read(REAL / name, errors="raise") as reader:
        states = list(reader)
    source = json.loads((REAL / name).read_text(encoding="utf-8"))
    sources = source if isinstance(source, list) else [source]
    assert len(states) == len(sources)
    for state, obj in zip(states, sources, strict=True):
        assert len(state) > 1
        assert exact(librechat.to_dict(state, recursive=obj.get("recursive") is True)) == exact(obj)
