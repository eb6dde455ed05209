"""Open WebUI chats: read them into conversations, write conversations as them.

Open WebUI keeps a chat as a row (``{id, user_id, title, chat, created_at,
updated_at, share_id, archived, pinned, meta, folder_id}``) whose ``chat`` object
holds the tree: ``chat.history.messages`` maps message ids to messages (``{id,
parentId, childrenIds, role, content, timestamp, model, ...}``),
``chat.history.currentId`` is the active leaf, and ``chat.messages`` repeats the
active path as a flat list. Its "export all chats" file is a JSON array of rows;
a single chat's file holds the row, or the bare ``chat`` object.

`from_dict` reads a row or a bare chat;
`to_dict` writes one back (the same shape);
`read` streams an export file and
`write` writes one. Every field convtree does
not hold itself is kept in ``node.metadata["openwebui"]`` and
``state.metadata["openwebui"]`` and written back as it was; see
``docs/import-export/openwebui.md`` for the mapping.

Example:
    ```python
    from convtree.interop import openwebui

    with openwebui.read("chat-export.json") as reader:
        for state in reader:
            print(state.conversation_id, state.metadata["title"], len(state))
    openwebui.write(states, "back.json", mode="tree")
    ```
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal, overload

from .._json import copy_json
from ..errors import FormatError
from ..format import CURRENT_SCHEMA_VERSION
from ..node import ConversationNode
from ..state import ConversationState
from ._fields import (
    ABSENT,
    EPOCH,
    EXTRA_FIELD,
    MISSING,
    Field,
    FieldMap,
    Mode,
    View,
    check_mode,
    epoch_seconds,
    message_extra,
    message_field,
    newest_leaf,
    parse_time,
    path_key,
    read_extension,
    relocate,
    same,
    text_of,
    text_or_none,
    unique_id,
    views,
)
from ._source import Dest, Reader, Source, write_exports

__all__ = [
    "FORMAT",
    "ROOT_ID",
    "Mode",
    "Shape",
    "from_dict",
    "looks_like",
    "read",
    "to_dict",
    "write",
]

FORMAT = "openwebui"
"""The format's name: the key of its metadata and the value of ``metadata["source"]``."""

ROOT_ID = "root"
"""Id of the message-less root a chat gets (``root-1``, ... if a message has that id)."""

Shape = Literal["row", "chat"]
"""A chat row (``{id, user_id, title, chat, ...}``) or the bare ``chat`` object."""
_DEFAULT_TITLE = "New Chat"  # what Open WebUI names a chat without a title


def looks_like(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` is one Open WebUI chat: a row with a ``chat``, or a bare ``history`` chat."""
    chat = obj.get("chat")
    if isinstance(chat, Mapping):
        return isinstance(chat.get("history"), Mapping)
    history = obj.get("history")
    return isinstance(history, Mapping) and isinstance(history.get("messages", {}), Mapping)


# ----------------------------------------------------------------- field maps


class _Ctx:
    """What reading or writing one message's fields needs beyond their values."""

    __slots__ = ("children", "fallback", "node_id")

    def __init__(self, node_id: str, children: list[str], fallback: datetime) -> None:
        self.node_id = node_id
        self.children = children
        self.fallback = fallback  # the time of a message without one


def _read_time(m: Mapping[str, Any], c: _Ctx) -> datetime:
    value = m.get("timestamp")
    return c.fallback if value is None else parse_time(value, "timestamp")


def _read_content(m: Mapping[str, Any], c: _Ctx) -> Any:
    return m.get("content")


def _write_content(v: Any, c: _Ctx) -> dict[str, Any]:
    return {"content": v if isinstance(v, str) else text_of(v)}


def _read_usage(m: Mapping[str, Any], c: _Ctx) -> Any:
    value = m.get("usage")
    return value if isinstance(value, dict) else None


def _optional(key: str, v: Any) -> dict[str, Any]:
    return {} if v is None else {key: v}


_MESSAGE = FieldMap(
    [
        Field("id", ("id",), lambda m, c: m.get("id", c.node_id), lambda v, c: {"id": v}),
        Field(
            "parent",
            ("parentId",),
            lambda m, c: text_or_none(m.get("parentId")),
            lambda v, c: {"parentId": v},
        ),
        Field(
            "children",
            ("childrenIds",),
            lambda m, c: m.get("childrenIds", c.children),
            lambda v, c: {"childrenIds": list(v)},
        ),
        Field("role", ("role",), lambda m, c: m.get("role"), lambda v, c: {"role": v}),
        Field("content", ("content",), _read_content, _write_content),
        Field(
            "timestamp", ("timestamp",), _read_time, lambda v, c: {"timestamp": epoch_seconds(v)}
        ),
        Field(
            "model",
            ("model",),
            lambda m, c: text_or_none(m.get("model")),
            lambda v, c: _optional("model", v),
        ),
        Field("usage", ("usage",), _read_usage, lambda v, c: _optional("usage", v)),
        Field(
            "name",
            ("name",),
            lambda m, c: text_or_none(m.get("name")),
            lambda v, c: _optional("name", v),
        ),
        EXTRA_FIELD,
    ]
)


class _ConvCtx:
    __slots__ = ("created", "updated")

    def __init__(self, created: datetime, updated: datetime) -> None:
        self.created = created
        self.updated = updated


def _whole_seconds(stamp: datetime) -> int:
    # Open WebUI keeps a row's times in integer columns.
    return math.floor((stamp - EPOCH).total_seconds())


def _title_field(key: str = "title") -> Field:
    return Field(
        "title",
        (key,),
        lambda m, c: text_or_none(m.get(key)),
        lambda v, c: {key: _DEFAULT_TITLE if v is None else v},
    )


def _row_time(key: str, attr: str) -> Field:
    def read(m: Mapping[str, Any], c: _ConvCtx) -> datetime:
        value = m.get(key)
        fallback: datetime = getattr(c, attr)
        return fallback if value is None else parse_time(value, key)

    return Field(key, (key,), read, lambda v, c: {key: _whole_seconds(v)})


_ROW = FieldMap(
    [_title_field(), _row_time("created_at", "created"), _row_time("updated_at", "updated")],
    structural=("id", "chat"),
)
_CHAT_BARE = FieldMap([_title_field()], structural=("id", "history", "messages", "convtree"))
_CHAT_IN_ROW = FieldMap([], structural=("id", "title", "history", "messages", "convtree"))


# ----------------------------------------------------------------------- read


def from_dict(obj: Mapping[str, Any]) -> ConversationState:
    """Build a conversation from one Open WebUI chat: a row (``{id, ..., chat}``) or a bare chat.

    The conversation id is the row's ``id`` (else the chat's ``id``); a chat
    without one (``"id": ""``, as a single chat's export has) gets its first root
    message's id, so importing it twice gives the same conversation. Node ids are
    the message ids, under a message-less root ``"root"``; every message with
    ``parentId: null`` is a child of that root (Open WebUI starts a new root when
    the first message is edited). The cursor is ``history.currentId`` (when it is
    null: the newest leaf).

    Times: a message's ``timestamp`` and the row's ``created_at`` /
    ``updated_at`` are epoch seconds (milliseconds, microseconds or nanoseconds
    are recognised by their size, ISO 8601 text is read too). A message without
    a time gets its parent's (a first message: the conversation's); a
    conversation without ``created_at`` gets the chat's ``timestamp`` (milliseconds),
    else its oldest message's, else 1970-01-01.

    Raises:
        FormatError: the object is not an Open WebUI chat, or its tree is broken
            (a ``parentId`` naming no message, ``childrenIds`` disagreeing with
            the ``parentId`` links, a cycle, a message without a role, an
            unreadable time, ...), naming the path in ``obj``
            (``chat.history.messages.<id>.parentId``).
    """
    if not isinstance(obj, Mapping):
        raise FormatError(f"an Open WebUI chat is a JSON object, not {type(obj).__name__}")
    chat_value = obj.get("chat")
    row: Mapping[str, Any] | None
    if isinstance(chat_value, Mapping):
        shape: Shape = "row"
        row, chat, at = obj, chat_value, "chat"
    elif "history" in obj:
        shape, row, chat, at = "chat", None, obj, ""
    else:
        raise FormatError(
            "not an Open WebUI chat: it has neither a `chat` object (an exported chat row) "
            "nor a `history` (a chat)"
        )
    history_at = path_key(at, "history")
    history = chat.get("history")
    if not isinstance(history, Mapping):
        raise FormatError("`history` must be an object", path=history_at)
    messages_at = path_key(history_at, "messages")
    raw_messages = history.get("messages", MISSING)
    if raw_messages is MISSING:
        messages: Mapping[str, Any] = {}
    elif isinstance(raw_messages, Mapping):
        messages = raw_messages
    else:
        raise FormatError("`messages` must be an object (id -> message)", path=messages_at)

    tree = _read_tree(messages, messages_at)
    root_id, message_root, ext_cursor = read_extension(
        chat.get("convtree"),
        path_key(at, "convtree"),
        tree.roots,
        messages,
        ROOT_ID,
        what="chat",
        roots_are="messages without a parent",
    )

    conversation_id = _conversation_id(row, chat, at, tree.roots)
    times = tree.times
    chat_time = chat.get("timestamp")
    created: datetime | None = None
    if row is not None and row.get("created_at") is not None:
        created = parse_time(row["created_at"], "created_at")
    elif chat_time is not None:
        created = parse_time(chat_time, path_key(at, "timestamp"))
    known = [t for t in times.values() if t is not None]
    if created is None:
        created = min(known) if known else EPOCH
    if row is not None and row.get("updated_at") is not None:
        updated = parse_time(row["updated_at"], "updated_at")
    else:
        updated = max([created, *known])
    # A message without a time takes its parent's (a first message: the chat's).
    stamps: dict[str, datetime] = {}
    for key in tree.preorder:
        own = times[key]
        if own is None:
            up = tree.parent[key]
            own = created if up is None else stamps[up]
        stamps[key] = own
    title_source = row if row is not None else chat
    title = text_or_none(title_source.get("title"))

    # The cursor.
    current = history.get("currentId", MISSING)
    ns_history: dict[str, Any] = {
        k: v for k, v in history.items() if k not in ("messages", "currentId")
    }
    absent: list[str] = []
    if raw_messages is MISSING:
        absent.append("messages")
    if isinstance(current, str):
        if current not in messages:
            raise FormatError(
                f"currentId {current!r} names no message of this chat",
                path=path_key(history_at, "currentId"),
            )
        cursor = current
    else:
        if current is not MISSING and current is not None:
            raise FormatError(
                "currentId must be a message id or null", path=path_key(history_at, "currentId")
            )
        cursor = _newest_leaf_id(tree, stamps) or root_id
        if current is MISSING:
            absent.append("currentId")
        else:
            ns_history["currentId"] = None
    if ext_cursor is not None:
        cursor = ext_cursor
    if absent:
        ns_history[ABSENT] = absent

    # Nodes and edges.
    created_text = created.isoformat()
    nodes: list[dict[str, Any]] = []
    edges: list[list[str]] = []
    paths: dict[str, str] = {}
    if not message_root:
        nodes.append({"node_id": root_id, "message": None, "timestamp": created_text})
        edges.extend([root_id, r] for r in tree.roots)
    for key in tree.preorder:
        msg = messages[key]
        where = paths[key] = path_key(messages_at, key)
        kids = tree.children.get(key, [])
        nodes.append(_node(key, msg, where, kids, tree.parent[key], stamps[key]))
        edges.extend([key, kid] for kid in kids)

    ns_conv: dict[str, Any] = {"shape": shape}
    conv_ctx = _ConvCtx(created, updated)
    if row is not None:
        ns_row = _ROW.kept(
            row, {"title": title, "created_at": created, "updated_at": updated}, conv_ctx
        )
        _keep_id(ns_row, row.get("id", MISSING), conversation_id)
        ns_conv["row"] = ns_row
        ns_chat = _CHAT_IN_ROW.kept(chat, {}, conv_ctx)
        chat_title = chat.get("title", MISSING)
        if chat_title is MISSING:
            ns_chat.setdefault(ABSENT, []).append("title")
        elif not same(chat_title, _DEFAULT_TITLE if title is None else title):
            ns_chat["title"] = chat_title
    else:
        ns_chat = _CHAT_BARE.kept(chat, {"title": title}, conv_ctx)
    _keep_id(ns_chat, chat.get("id", MISSING), conversation_id)
    if "messages" not in chat:
        ns_chat.setdefault(ABSENT, []).append("messages")
    ns_conv["chat"] = ns_chat
    if ns_history:
        ns_conv["history"] = ns_history

    metadata: dict[str, Any] = {}
    if title is not None:
        metadata["title"] = title
    metadata["source"] = FORMAT
    metadata[FORMAT] = ns_conv
    doc = {
        "schema_version": CURRENT_SCHEMA_VERSION,
        "conversation_id": conversation_id,
        "nodes": nodes,
        "edges": edges,
        "current_node_id": cursor,
        "metadata": metadata,
        "created_at": created_text,
        "updated_at": updated.isoformat(),
    }
    try:
        return ConversationState.from_dict(doc)
    except FormatError as exc:
        id_at = "id" if row is not None and row.get("id") else path_key(at, "id")
        head = {"metadata.title": "title" if row is not None else path_key(at, "title")}
        head["conversation_id"] = id_at
        raise relocate(exc, nodes, paths, head) from None


class _Tree:
    """The tree ``history.messages`` describes, checked."""

    __slots__ = ("children", "parent", "preorder", "roots", "times")

    def __init__(self) -> None:
        self.parent: dict[str, str | None] = {}
        self.children: dict[str, list[str]] = {}
        self.roots: list[str] = []
        self.preorder: list[str] = []
        self.times: dict[str, datetime | None] = {}


def _read_tree(messages: Mapping[str, Any], messages_at: str) -> _Tree:
    tree = _Tree()
    parent = tree.parent
    for key, msg in messages.items():
        where = path_key(messages_at, key)
        if not isinstance(msg, Mapping):
            raise FormatError("a message must be an object", path=where)
        own = msg.get("id", key)
        if own != key:
            raise FormatError(
                f"the message's id {own!r} is not its key {key!r}", path=path_key(where, "id")
            )
        up = msg.get("parentId")
        if up is not None and not isinstance(up, str):
            raise FormatError(
                "parentId must be a message id or null", path=path_key(where, "parentId")
            )
        role = msg.get("role")
        if not isinstance(role, str) or not role:
            raise FormatError(
                "a message needs a role (user, assistant, system, ...)",
                path=path_key(where, "role"),
            )
        stamp = msg.get("timestamp")
        tree.times[key] = None if stamp is None else parse_time(stamp, path_key(where, "timestamp"))
        parent[key] = up
    children = tree.children
    for key, up in parent.items():
        if up is None:
            tree.roots.append(key)
            continue
        if up not in parent:
            raise FormatError(
                f"parentId {up!r} names no message of this chat",
                path=path_key(path_key(messages_at, key), "parentId"),
            )
        if up == key:
            raise FormatError(
                "a message cannot be its own parent",
                path=path_key(path_key(messages_at, key), "parentId"),
            )
        children.setdefault(up, []).append(key)
    for key, msg in messages.items():
        listed = msg.get("childrenIds", MISSING)
        if listed is not MISSING:
            children_at = path_key(path_key(messages_at, key), "childrenIds")
            actual = children.get(key, [])
            ordered = _check_children(listed, actual, key, parent, children_at)
            if ordered is not actual:
                children[key] = ordered
    stack = list(reversed(tree.roots))
    order = tree.preorder
    while stack:
        key = stack.pop()
        order.append(key)
        kids = children.get(key)
        if kids:
            stack.extend(reversed(kids))
    if len(order) != len(parent):
        seen = set(order)
        lost = next(key for key in parent if key not in seen)
        raise FormatError(
            f"the parentId links of message {lost!r} form a cycle",
            path=path_key(path_key(messages_at, lost), "parentId"),
        )
    return tree


def _check_children(
    listed: Any, actual: list[str], key: str, parent: Mapping[str, str | None], where: str
) -> list[str]:
    """``childrenIds`` as the sibling order, once checked against the ``parentId`` links."""
    if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
        raise FormatError("childrenIds must be a list of message ids", path=where)
    if listed == actual:
        return actual
    mine = set(actual)
    seen: set[str] = set()
    for child in listed:
        if child in seen:
            raise FormatError(f"childrenIds lists {child!r} twice", path=where)
        seen.add(child)
        if child not in mine:
            if child not in parent:
                raise FormatError(
                    f"childrenIds names {child!r}, no message of this chat", path=where
                )
            raise FormatError(
                f"childrenIds lists {child!r}, whose parentId is {parent[child]!r}, not {key!r}",
                path=where,
            )
    for child in actual:
        if child not in seen:
            raise FormatError(
                f"childrenIds misses {child!r}, whose parentId names this message", path=where
            )
    return list(listed)


def _conversation_id(
    row: Mapping[str, Any] | None, chat: Mapping[str, Any], at: str, roots: list[str]
) -> str:
    candidates = [] if row is None else [(row.get("id"), "id")]
    candidates.append((chat.get("id"), path_key(at, "id")))
    for value, where in candidates:
        if isinstance(value, str) and value:
            return value
        if value is not None and value != "":
            raise FormatError("a chat's id must be text", path=where)
    if roots and roots[0]:
        return roots[0]
    digest = hashlib.sha256(json.dumps(chat, sort_keys=True).encode()).hexdigest()
    return f"openwebui-{digest[:32]}"


def _keep_id(ns: dict[str, Any], raw: Any, conversation_id: str) -> None:
    if raw is MISSING:
        ns.setdefault(ABSENT, []).append("id")
    elif not same(raw, conversation_id):
        ns["id"] = raw


def _newest_leaf_id(tree: _Tree, stamps: Mapping[str, datetime]) -> str | None:
    """The leaf created last (the later one depth-first on a tie), if any."""
    best: str | None = None
    for key in tree.preorder:
        if not tree.children.get(key) and (best is None or stamps[key] >= stamps[best]):
            best = key
    return best


def _node(
    key: str,
    msg: Mapping[str, Any],
    where: str,
    kids: list[str],
    up: str | None,
    stamp: datetime,
) -> dict[str, Any]:
    content = msg.get("content")
    if not (
        content is None
        or isinstance(content, str)
        or (isinstance(content, list) and all(isinstance(p, dict) for p in content))
    ):
        raise FormatError(
            "content must be text, null or a list of content parts", path=path_key(where, "content")
        )
    role = msg["role"]
    name = text_or_none(msg.get("name"))
    model = text_or_none(msg.get("model"))
    usage = msg.get("usage")
    usage = usage if isinstance(usage, dict) else None
    values = {
        "id": key,
        "parent": up,
        "children": kids,
        "role": role,
        "content": content,
        "timestamp": stamp,
        "model": model,
        "usage": usage,
        "name": name,
        "extra": EXTRA_FIELD.read(msg, None),
    }
    ns = _MESSAGE.kept(msg, values, _Ctx(key, kids, stamp))
    message: dict[str, Any] = {"role": role, "content": content}
    if name is not None:
        message["name"] = name
    if values["extra"]:
        message.update(values["extra"])
    metadata: dict[str, Any] = {}
    if model is not None:
        metadata["model"] = model
    if usage is not None:
        metadata["usage"] = usage
    metadata[FORMAT] = ns
    return {
        "node_id": key,
        "message": message,
        "timestamp": stamp.isoformat(),
        "metadata": metadata,
    }


def read(source: Source, *, errors: Literal["skip", "raise"] = "skip") -> Reader:
    """Stream the chats of an Open WebUI export (one chat, or an "export all" array).

    Args:
        source: A path to a JSON file, a ZIP or a directory of them, or an open
            binary file.
        errors: ``"skip"`` records a broken chat in ``reader.skipped`` and goes
            on; ``"raise"`` raises the first problem.

    Returns:
        A `Reader` yielding one
        [`ConversationState`][convtree.ConversationState] per chat.
    """
    return Reader(source, from_dict, errors=errors)


# ---------------------------------------------------------------------- write


@overload
def to_dict(
    state: ConversationState,
    *,
    mode: Literal["tree", "active"] = "tree",
    shape: Shape | None = None,
) -> dict[str, Any]: ...
@overload
def to_dict(
    state: ConversationState, *, mode: Literal["branches"], shape: Shape | None = None
) -> list[dict[str, Any]]: ...
@overload
def to_dict(
    state: ConversationState, *, mode: Mode, shape: Shape | None = None
) -> dict[str, Any] | list[dict[str, Any]]: ...


def to_dict(
    state: ConversationState, *, mode: Mode = "tree", shape: Shape | None = None
) -> dict[str, Any] | list[dict[str, Any]]:
    """Write a conversation as an Open WebUI chat.

    A conversation read from Open WebUI is written back as it was read (every
    field, the same shape); one from elsewhere becomes a chat row with what Open
    WebUI needs (``done: true`` on replies, image parts as ``files``, ...; see the
    docs). The flat ``chat.messages`` is always rebuilt from the tree: it is the
    path from the root to ``history.currentId``.

    Args:
        state: The conversation.
        mode: ``"tree"`` (every branch), ``"active"`` (the path to the cursor),
            or ``"branches"`` (one chat per leaf, ids ``<id>~<leaf id>``; a list).
        shape: ``"row"`` (``{id, user_id, title, chat, ...}``, what "export all"
            holds) or ``"chat"`` (the bare chat object); default: the shape it
            was read from, else ``"row"``.

    Returns:
        The chat (a list of them for ``"branches"``); it shares nothing with ``state``.

    Raises:
        ValueError: an unknown mode or shape.
    """
    check_mode(mode)
    if shape not in (None, "row", "chat"):
        raise ValueError(f"shape must be 'row' or 'chat', not {shape!r}")
    ns_value = state.metadata.get(FORMAT)
    ns: Mapping[str, Any] | None = ns_value if isinstance(ns_value, Mapping) else None
    if shape is None:
        kept_shape = ns.get("shape") if ns is not None else None
        shape = "chat" if kept_shape == "chat" else "row"
    out = [_export(state, view, ns, shape, mode) for view in views(state, mode)]
    return out if mode == "branches" else out[0]


def _part(ns: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    """A kept part of the conversation's ``ns`` (``{}`` when read from Open WebUI, else None)."""
    if ns is None:
        return None
    value = ns.get(key)
    return value if isinstance(value, Mapping) else {}


def _absent(ns: Mapping[str, Any] | None) -> list[Any]:
    value = ns.get(ABSENT) if ns is not None else None
    return value if isinstance(value, list) else []


def _export(
    state: ConversationState, view: View, ns: Mapping[str, Any] | None, shape: Shape, mode: str
) -> dict[str, Any]:
    root = view.nodes[0]
    message_root = root._message is not None
    top = None if message_root else root.node_id
    history_messages: dict[str, dict[str, Any]] = {}
    for node in view.nodes if message_root else view.nodes[1:]:
        history_messages[node.node_id] = _message(node, view, top)

    ext: dict[str, Any] = {}
    if message_root or root.node_id != unique_id(ROOT_ID, history_messages.__contains__):
        ext["root_id"] = root.node_id
    end = view.end
    current: str | None = end.node_id if end._message is not None else None
    if current is None and history_messages:
        ext["current_node_id"] = root.node_id

    history: dict[str, Any] = {"messages": history_messages, "currentId": current}
    ns_history = _part(ns, "history")
    if ns_history:
        absent = _absent(ns_history)
        if (
            view.whole
            and current is not None
            and ("currentId" in ns_history or "currentId" in absent)
            and end is newest_leaf(view.nodes, view.children)
        ):
            if "currentId" in absent:
                del history["currentId"]
            else:
                history["currentId"] = copy_json(ns_history["currentId"], "currentId")
        if "messages" in absent and not history_messages:
            del history["messages"]
        for key, value in ns_history.items():
            if key not in ("messages", "currentId", ABSENT):
                history[key] = copy_json(value, key)

    path: list[str] = []
    at: str | None = current
    while at is not None and at in history_messages:
        path.append(at)
        at = view.parent.get(at)
    flat = [copy_json(history_messages[i], "messages") for i in reversed(path)]

    title = state.metadata.get("title")
    title = title if isinstance(title, str) else None
    conv_ctx = _ConvCtx(state.created_at, state.updated_at)
    ns_chat = _part(ns, "chat")
    chat: dict[str, Any] = {"id": view.conversation_id}
    if ns_chat is not None and mode != "branches":
        _put_id(chat, ns_chat)
    if shape == "chat":
        chat.update(_CHAT_BARE.emit({"title": title}, ns_chat, conv_ctx))
    else:
        chat["title"] = _DEFAULT_TITLE if title is None else title
        if ns_chat is not None and "title" in ns_chat:
            chat["title"] = copy_json(ns_chat["title"], "title")
        elif "title" in _absent(ns_chat):
            del chat["title"]
        chat.update(_CHAT_IN_ROW.emit({}, ns_chat, conv_ctx))
    if ns_chat is None:
        chat["models"] = _models(view.nodes)
        chat["params"] = {}
    chat["history"] = history
    if "messages" not in _absent(ns_chat):
        chat["messages"] = flat
    if ns_chat is None:
        chat["tags"] = []
        chat["timestamp"] = math.floor((state.created_at - EPOCH).total_seconds() * 1000)
        chat["files"] = []
    if ext:
        chat["convtree"] = ext
    if shape == "chat":
        return chat

    row_value = ns.get("row") if ns is not None else None
    ns_row = row_value if isinstance(row_value, Mapping) else None
    row: dict[str, Any] = {"id": view.conversation_id}
    if ns_row is not None and mode != "branches":
        _put_id(row, ns_row)
    if ns_row is None:
        user_id = state.metadata.get("user_id")
        row["user_id"] = user_id if isinstance(user_id, str) else ""
    values = {"title": title, "created_at": state.created_at, "updated_at": state.updated_at}
    fields = _ROW.emit(values, ns_row, conv_ctx)
    row["title"] = fields.pop("title", MISSING)
    if row["title"] is MISSING:
        del row["title"]
    row["chat"] = chat
    row.update(fields)
    if ns_row is None:
        row.update(share_id=None, archived=False, pinned=False, meta={}, folder_id=None)
    return row


def _put_id(out: dict[str, Any], ns: Mapping[str, Any]) -> None:
    """The kept raw ``id`` (``""``), or none when the source had none."""
    if "id" in ns:
        out["id"] = copy_json(ns["id"], "id")
    elif "id" in _absent(ns):
        del out["id"]


def _message(node: ConversationNode, view: View, top: str | None) -> dict[str, Any]:
    node_id = node.node_id
    up = view.parent.get(node_id)
    kids = view.children.get(node_id, [])
    meta = node._meta
    model = meta.get("model")
    usage = meta.get("usage")
    role = node.role
    content = node.content
    values = {
        "id": node_id,
        "parent": None if up == top else up,
        "children": kids,
        "role": role,
        "content": content,
        "timestamp": node.timestamp,
        "model": model if isinstance(model, str) else None,
        "usage": usage if isinstance(usage, dict) else None,
        "name": message_field(node, "name"),
        "extra": message_extra(node),
    }
    ns = meta.get(FORMAT)
    kept = ns if isinstance(ns, Mapping) else None
    out = _MESSAGE.emit(values, kept, _Ctx(node_id, kids, node.timestamp))
    if kept is None:
        # Invented for a message from elsewhere: what Open WebUI shows it with.
        files = _image_files(content)
        if files:
            out["files"] = files
        if role == "assistant":
            out["done"] = True
    return out


def _image_files(content: Any) -> list[dict[str, Any]]:
    """Image parts (``{"type": "image_url", ...}``) as Open WebUI ``files``."""
    if not isinstance(content, list):
        return []
    files = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if isinstance(url, str):
                files.append({"type": "image", "url": url})
    return files


def _models(nodes: Iterable[ConversationNode]) -> list[str]:
    models: dict[str, None] = {}
    for node in nodes:
        model = node._meta.get("model")
        if isinstance(model, str):
            models[model] = None
    return list(models)


def write(
    states: Iterable[ConversationState],
    dest: Dest,
    *,
    mode: Mode = "tree",
    shape: Shape | None = None,
) -> int:
    """Write conversations as an Open WebUI "export all" file (a JSON array of chats).

    Args:
        states: The conversations (any iterable; consumed once, one at a time).
        dest: A path (written atomically) or an open binary file.
        mode: As in `to_dict`.
        shape: As in `to_dict`; Open WebUI's
            importer reads both.

    Returns:
        How many chats were written (with ``"branches"``, one per branch).
    """
    check_mode(mode)
    return write_exports(states, dest, lambda state: to_dict(state, mode=mode, shape=shape))
