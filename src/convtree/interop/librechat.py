"""LibreChat conversations: read them into conversations, write conversations as them.

LibreChat exports one conversation per JSON file: ``{conversationId, title,
endpoint, exportAt, branches, recursive, options, messages}``. Each message has
a ``messageId`` and a ``parentMessageId`` (``00000000-0000-0000-0000-000000000000``
or null for a first message), ``sender``, ``isCreatedByUser``, ``text`` and,
for agents, ``content`` parts (``{"type": "text", "text": ...}``, ``{"type":
"think", "think": ...}``, tool calls, ...), ``createdAt`` / ``updatedAt``,
``model``, ``endpoint``, ``error``, ``unfinished``, ``feedback``, ``files``, ...
In the flat shape ``messages`` lists every message; with ``recursive: true``
they nest under ``children`` (LibreChat itself writes that shape under
``messagesTree``).

LibreChat records no active branch: on import the cursor is the newest leaf.
See ``docs/import-export/librechat.md`` for the field mapping.

Example:
    ```python
    from convtree.interop import librechat

    state = librechat.from_dict(json.load(open("export.json")))
    json.dump(librechat.to_dict(state), open("back.json", "w"))
    ```
"""

from __future__ import annotations

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
    iso_z,
    message_extra,
    message_field,
    newest_leaf,
    parse_time,
    read_extension,
    relocate,
    text_of,
    text_or_none,
    unique_id,
    views,
)
from ._source import Dest, Reader, Source, write_exports

__all__ = [
    "FORMAT",
    "NO_PARENT",
    "Mode",
    "from_dict",
    "looks_like",
    "read",
    "to_dict",
    "write",
]

FORMAT = "librechat"
"""The format's name: the key of its metadata and the value of ``metadata["source"]``."""

NO_PARENT = "00000000-0000-0000-0000-000000000000"
"""LibreChat's ``parentMessageId`` of a first message; also the id of the message-less root."""

_DEFAULT_TITLE = "New Chat"


def looks_like(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` is one LibreChat conversation (a ``conversationId`` and its messages)."""
    return isinstance(obj.get("conversationId"), str) and (
        isinstance(obj.get("messages"), list) or isinstance(obj.get("messagesTree"), list)
    )


# ----------------------------------------------------------------- field maps


class _Ctx:
    """What reading or writing one message's fields needs beyond their values."""

    __slots__ = ("conversation_id", "fallback", "model", "role")

    def __init__(
        self, conversation_id: str, role: str, model: str | None, fallback: datetime
    ) -> None:
        self.conversation_id = conversation_id
        self.role = role
        self.model = model
        self.fallback = fallback  # the time of a message without one


def _read_parent(m: Mapping[str, Any], c: _Ctx) -> str | None:
    value = m.get("parentMessageId")
    return None if value is None or value == NO_PARENT else value


def _read_role(m: Mapping[str, Any], c: Any) -> str:
    role = m.get("role")
    if isinstance(role, str) and role:
        return role
    mine = m.get("isCreatedByUser")
    if isinstance(mine, bool):
        return "user" if mine else "assistant"
    # As LibreChat's importer does: a sender named "user" is the user.
    sender = m.get("sender")
    return "user" if isinstance(sender, str) and sender.lower() == "user" else "assistant"


def _write_role(v: str, c: _Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {"isCreatedByUser": v == "user"}
    if v not in ("user", "assistant"):
        out["role"] = v
    return out


def _default_sender(c: _Ctx) -> str:
    if c.role == "user":
        return "User"
    if c.role == "assistant":
        return c.model or "Assistant"
    return c.role.capitalize()


def _normal_part(part: Any) -> Any:
    """A LibreChat content part as convtree holds it: text parts with their text as a string."""
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if part.get("type") == "text":
        text = part.get("text")
        if isinstance(text, Mapping) and isinstance(text.get("value"), str):
            return {**part, "text": text["value"]}  # the Assistants API's {"value": ...}
    return part


def _read_content(m: Mapping[str, Any], c: Any) -> Any:
    parts = m.get("content")
    text = text_or_none(m.get("text"))
    if isinstance(parts, list) and (parts or not text):
        return [_normal_part(p) for p in parts]
    return text


def _write_content(v: Any, c: _Ctx) -> dict[str, Any]:
    if isinstance(v, list):
        return {"text": text_of(v), "content": v}
    return {"text": "" if v is None else v}


def _read_time(m: Mapping[str, Any], c: _Ctx) -> datetime:
    value = m.get("createdAt")
    return c.fallback if value is None else parse_time(value, "createdAt")


def _optional(key: str, v: Any) -> dict[str, Any]:
    return {} if v is None else {key: v}


_FIELDS = [
    Field(
        "parent",
        ("parentMessageId",),
        _read_parent,
        lambda v, c: {"parentMessageId": NO_PARENT if v is None else v},
    ),
    Field(
        "conversation",
        ("conversationId",),
        # Not read: a message is in the conversation that holds it (an odd value is kept).
        lambda m, c: c.conversation_id,
        lambda v, c: {"conversationId": v},
    ),
    Field("role", ("isCreatedByUser", "role"), _read_role, _write_role),
    Field(
        "name",
        ("sender",),
        lambda m, c: text_or_none(m.get("sender")),
        lambda v, c: {"sender": _default_sender(c) if v is None else v},
    ),
    Field("content", ("text", "content"), _read_content, _write_content),
    Field("timestamp", ("createdAt",), _read_time, lambda v, c: {"createdAt": iso_z(v)}),
    Field(
        "model",
        ("model",),
        lambda m, c: text_or_none(m.get("model")),
        lambda v, c: _optional("model", v),
    ),
    EXTRA_FIELD,
]
_FLAT = FieldMap(_FIELDS, structural=("messageId",))
_NESTED = FieldMap(_FIELDS, structural=("messageId", "children"))


class _ConvCtx:
    __slots__ = ("created", "updated")

    def __init__(self, created: datetime, updated: datetime) -> None:
        self.created = created
        self.updated = updated


def _conv_time(key: str, attr: str) -> Field:
    def read(m: Mapping[str, Any], c: _ConvCtx) -> datetime:
        value = m.get(key)
        fallback: datetime = getattr(c, attr)
        return fallback if value is None else parse_time(value, key)

    return Field(key, (key,), read, lambda v, c: {key: iso_z(v)})


_CONVERSATION = FieldMap(
    [
        Field(
            "title",
            ("title",),
            lambda m, c: text_or_none(m.get("title")),
            lambda v, c: {"title": _DEFAULT_TITLE if v is None else v},
        ),
        _conv_time("createdAt", "created"),
        _conv_time("updatedAt", "updated"),
    ],
    structural=(
        "conversationId",
        "messages",
        "messagesTree",
        "recursive",
        "branches",
        "convtree",
    ),
)


# ----------------------------------------------------------------------- read


class _Item:
    """One source message, checked: where it is, its id and its parent."""

    __slots__ = ("msg", "parent", "path", "stamp")

    def __init__(self, msg: Mapping[str, Any], path: str, parent: str | None) -> None:
        self.msg = msg
        self.path = path
        self.parent = parent
        self.stamp: datetime | None = None


def from_dict(obj: Mapping[str, Any]) -> ConversationState:
    """Build a conversation from one LibreChat export (flat or ``recursive``).

    The conversation id is ``conversationId``; node ids are the ``messageId`` s,
    under a message-less root whose id is LibreChat's no-parent id
    (`NO_PARENT`); every first message (``parentMessageId`` null or
    `NO_PARENT`) is a child of that root. Siblings keep their order in the file.
    ``isCreatedByUser`` makes a message the user's, else the assistant's (a
    ``role`` field, when there is one, wins; without ``isCreatedByUser``, a
    ``sender`` named "user" is the user, as LibreChat's importer reads it);
    ``sender`` becomes the author name. The cursor is the newest leaf (by
    ``createdAt``; the later one depth-first on a tie). A message without
    ``createdAt`` gets its parent's time (a first message: the conversation's:
    its ``createdAt``, else the oldest message's, else 1970-01-01).

    Raises:
        FormatError: not a LibreChat conversation, or a broken one (a duplicate
            ``messageId``, a ``parentMessageId`` naming no message, a cycle, an
            unreadable time, ...), naming the path in ``obj`` (``messages[3].parentMessageId``).
    """
    if not isinstance(obj, Mapping):
        raise FormatError(f"a LibreChat conversation is a JSON object, not {type(obj).__name__}")
    conversation_id = obj.get("conversationId")
    if not isinstance(conversation_id, str) or not conversation_id:
        raise FormatError("a LibreChat conversation needs a conversationId", path="conversationId")
    key = "messages" if "messages" in obj or "messagesTree" not in obj else "messagesTree"
    raw = obj.get(key, MISSING)
    if raw is MISSING:
        raw = []
    elif not isinstance(raw, list):
        raise FormatError("the messages must be a list", path=key)
    nested = obj.get("recursive") is True or key == "messagesTree"
    items = _nested_items(raw, key) if nested else _flat_items(raw, key)
    children, roots, preorder = _tree(items, nested)

    ext = obj.get("convtree")
    root_id, message_root, ext_cursor = read_extension(
        ext, "convtree", roots, items, NO_PARENT, what="conversation", roots_are="first messages"
    )

    stamps = []
    for item in items.values():
        value = item.msg.get("createdAt")
        if value is not None:
            item.stamp = parse_time(value, item.path + ".createdAt")
            stamps.append(item.stamp)
    created = (
        parse_time(obj["createdAt"], "createdAt")
        if obj.get("createdAt") is not None
        else min(stamps, default=EPOCH)
    )
    updated = (
        parse_time(obj["updatedAt"], "updatedAt")
        if obj.get("updatedAt") is not None
        else max([created, *stamps])
    )

    # A message without a time takes its parent's (a first message: the conversation's).
    for message_id in preorder:
        item = items[message_id]
        if item.stamp is None:
            item.stamp = created if item.parent is None else items[item.parent].stamp

    cursor: str | None = ext_cursor
    if cursor is None:
        best: datetime | None = None
        for message_id in preorder:
            stamp = items[message_id].stamp
            assert stamp is not None
            if not children.get(message_id) and (best is None or stamp >= best):
                cursor, best = message_id, stamp
    if cursor is None:
        cursor = root_id

    created_text = created.isoformat()
    nodes: list[dict[str, Any]] = []
    edges: list[list[str]] = []
    paths: dict[str, str] = {}
    if not message_root:
        nodes.append({"node_id": root_id, "message": None, "timestamp": created_text})
        edges.extend([root_id, r] for r in roots)
    fields = _NESTED if nested else _FLAT
    for message_id in preorder:
        item = items[message_id]
        paths[message_id] = item.path
        nodes.append(_node(message_id, item, fields, conversation_id))
        edges.extend([message_id, kid] for kid in children.get(message_id, ()))

    title = text_or_none(obj.get("title"))
    ns = _CONVERSATION.kept(
        obj,
        {"title": title, "createdAt": created, "updatedAt": updated},
        _ConvCtx(created, updated),
    )
    absent: list[str] = ns.setdefault(ABSENT, [])
    for name in ("branches", "recursive", "messages"):
        if name not in obj:
            absent.append(name)
    if "branches" in obj:
        ns["branches"] = obj["branches"]
    if not absent:
        del ns[ABSENT]
    metadata: dict[str, Any] = {}
    if title is not None:
        metadata["title"] = title
    metadata["source"] = FORMAT
    metadata[FORMAT] = ns
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
        head = {"metadata.title": "title", "conversation_id": "conversationId"}
        raise relocate(exc, nodes, paths, head) from None


def _message_id(msg: Any, path: str, items: Mapping[str, _Item]) -> str:
    if not isinstance(msg, Mapping):
        raise FormatError("a message must be an object", path=path)
    message_id = msg.get("messageId")
    if not isinstance(message_id, str):
        raise FormatError("a message needs a messageId (text)", path=path + ".messageId")
    if message_id in items:
        raise FormatError(
            f"messageId {message_id!r} appears twice (first at {items[message_id].path})",
            path=path + ".messageId",
        )
    parent = msg.get("parentMessageId")
    if parent is not None and not isinstance(parent, str):
        raise FormatError(
            "parentMessageId must be a message id or null", path=path + ".parentMessageId"
        )
    return message_id


def _flat_items(raw: list[Any], key: str) -> dict[str, _Item]:
    items: dict[str, _Item] = {}
    for i, msg in enumerate(raw):
        path = f"{key}[{i}]"
        message_id = _message_id(msg, path, items)
        items[message_id] = _Item(msg, path, _read_parent(msg, None))  # type: ignore[arg-type]
    return items


def _nested_items(raw: list[Any], key: str) -> dict[str, _Item]:
    """The messages of a nested export, depth-first (without recursion), parent links checked."""
    items: dict[str, _Item] = {}
    stack: list[tuple[Any, str, str | None]] = [
        (msg, f"{key}[{i}]", None) for i, msg in reversed(list(enumerate(raw)))
    ]
    while stack:
        msg, path, parent = stack.pop()
        message_id = _message_id(msg, path, items)
        stated = _read_parent(msg, None)  # type: ignore[arg-type]
        if stated != parent and msg.get("parentMessageId", MISSING) is not MISSING:
            raise FormatError(
                f"parentMessageId {msg['parentMessageId']!r} disagrees with the nesting "
                f"(the message is under {parent or 'no message'!r})",
                path=path + ".parentMessageId",
            )
        items[message_id] = _Item(msg, path, parent)
        kids = msg.get("children", MISSING)
        if kids is MISSING or kids is None:
            continue
        if not isinstance(kids, list):
            raise FormatError("children must be a list of messages", path=path + ".children")
        stack.extend(
            (kid, f"{path}.children[{j}]", message_id) for j, kid in reversed(list(enumerate(kids)))
        )
    return items


def _tree(
    items: Mapping[str, _Item], nested: bool
) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """Children lists, first messages and the depth-first order; no dangling link, no cycle."""
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for message_id, item in items.items():
        parent = item.parent
        if parent is None:
            roots.append(message_id)
        elif parent not in items:
            raise FormatError(
                f"parentMessageId {parent!r} names no message of this conversation",
                path=item.path + ".parentMessageId",
            )
        elif parent == message_id:
            raise FormatError(
                "a message cannot be its own parent", path=item.path + ".parentMessageId"
            )
        else:
            children.setdefault(parent, []).append(message_id)
    if nested:
        return children, roots, list(items)  # already depth-first
    preorder: list[str] = []
    stack = list(reversed(roots))
    while stack:
        message_id = stack.pop()
        preorder.append(message_id)
        kids = children.get(message_id)
        if kids:
            stack.extend(reversed(kids))
    if len(preorder) != len(items):
        seen = set(preorder)
        lost = next(m for m in items if m not in seen)
        raise FormatError(
            f"the parentMessageId links of message {lost!r} form a cycle",
            path=items[lost].path + ".parentMessageId",
        )
    return children, roots, preorder


def _node(message_id: str, item: _Item, fields: FieldMap, conversation_id: str) -> dict[str, Any]:
    msg, path = item.msg, item.path
    text = msg.get("text")
    if text is not None and not isinstance(text, str):
        raise FormatError("text must be text", path=path + ".text")
    parts = msg.get("content")
    if parts is not None and not (
        isinstance(parts, list) and all(isinstance(p, (dict, str)) for p in parts)
    ):
        raise FormatError("content must be a list of content parts", path=path + ".content")
    role = _read_role(msg, None)
    name = text_or_none(msg.get("sender"))
    model = text_or_none(msg.get("model"))
    content = _read_content(msg, None)
    stamp = item.stamp
    assert stamp is not None
    values = {
        "parent": item.parent,
        "conversation": conversation_id,
        "role": role,
        "name": name,
        "content": content,
        "timestamp": stamp,
        "model": model,
        "extra": EXTRA_FIELD.read(msg, None),
    }
    ns = fields.kept(msg, values, _Ctx(conversation_id, role, model, stamp))
    message: dict[str, Any] = {"role": role, "content": content}
    if name is not None:
        message["name"] = name
    if values["extra"]:
        message.update(values["extra"])
    metadata: dict[str, Any] = {}
    if model is not None:
        metadata["model"] = model
    metadata[FORMAT] = ns
    return {
        "node_id": message_id,
        "message": message,
        "timestamp": stamp.isoformat(),
        "metadata": metadata,
    }


def read(source: Source, *, errors: Literal["skip", "raise"] = "skip") -> Reader:
    """Stream LibreChat conversations: a file holding one, an array of them, a ZIP or directory.

    Args:
        source: A path to a JSON file, a ZIP or a directory of them, or an open
            binary file.
        errors: ``"skip"`` records a broken conversation in ``reader.skipped``
            and goes on; ``"raise"`` raises the first problem.

    Returns:
        A `Reader` yielding one
        [`ConversationState`][convtree.ConversationState] per conversation.
    """
    return Reader(source, from_dict, errors=errors)


# ---------------------------------------------------------------------- write


@overload
def to_dict(
    state: ConversationState,
    *,
    mode: Literal["tree", "active"] = "tree",
    recursive: bool = False,
) -> dict[str, Any]: ...
@overload
def to_dict(
    state: ConversationState, *, mode: Literal["branches"], recursive: bool = False
) -> list[dict[str, Any]]: ...
@overload
def to_dict(
    state: ConversationState, *, mode: Mode, recursive: bool = False
) -> dict[str, Any] | list[dict[str, Any]]: ...


def to_dict(
    state: ConversationState, *, mode: Mode = "tree", recursive: bool = False
) -> dict[str, Any] | list[dict[str, Any]]:
    """Write a conversation as a LibreChat export.

    A conversation read from LibreChat is written back as it was read (every
    field); one from elsewhere gets what LibreChat needs (``sender``: the author
    name, else "User", the model or "Assistant"; ``isCreatedByUser``; ``text``;
    ``content`` parts when the message has parts; ISO times). Messages are
    listed depth-first, so a parent always comes before its children (LibreChat's
    importer needs that).

    LibreChat has no active branch: when the cursor is not the newest leaf (what
    an import picks), or the root is not the message-less `NO_PARENT` root, a
    ``convtree`` object (``{"current_node_id", "root_id"}``) records it, so that
    reading the file back restores them; LibreChat ignores it.

    Args:
        state: The conversation.
        mode: ``"tree"`` (every branch), ``"active"`` (the path to the cursor),
            or ``"branches"`` (one conversation per leaf, ids ``<id>~<leaf id>``; a list).
        recursive: Nest messages under ``children`` (``recursive: true``) instead
            of the flat list. Python's ``json`` writes such nesting only to a depth
            of about 500 messages.

    Returns:
        The conversation (a list of them for ``"branches"``); it shares nothing with ``state``.

    Raises:
        ValueError: an unknown mode.
    """
    check_mode(mode)
    ns_value = state.metadata.get(FORMAT)
    ns: Mapping[str, Any] | None = ns_value if isinstance(ns_value, Mapping) else None
    out = [_export(state, view, ns, mode, recursive) for view in views(state, mode)]
    return out if mode == "branches" else out[0]


def _export(
    state: ConversationState,
    view: View,
    ns: Mapping[str, Any] | None,
    mode: str,
    recursive: bool,
) -> dict[str, Any]:
    root = view.nodes[0]
    message_root = root._message is not None
    top = None if message_root else root.node_id
    fields = _NESTED if recursive else _FLAT
    messages: dict[str, dict[str, Any]] = {}
    for node in view.nodes if message_root else view.nodes[1:]:
        messages[node.node_id] = _message(node, view, top, fields)

    ext: dict[str, Any] = {}
    if message_root or root.node_id != unique_id(NO_PARENT, messages.__contains__):
        ext["root_id"] = root.node_id
    expected = newest_leaf(view.nodes, view.children) or root
    if view.end is not expected:
        ext["current_node_id"] = view.end.node_id

    title = state.metadata.get("title")
    out: dict[str, Any] = {"conversationId": view.conversation_id}
    out.update(
        _CONVERSATION.emit(
            {
                "title": title if isinstance(title, str) else None,
                "createdAt": state.created_at,
                "updatedAt": state.updated_at,
            },
            ns,
            _ConvCtx(state.created_at, state.updated_at),
        )
    )
    absent = ns.get(ABSENT) if ns is not None else None
    absent = absent if isinstance(absent, list) else []
    if mode != "tree":
        out["branches"] = False
    elif ns is not None and "branches" in ns:
        out["branches"] = copy_json(ns["branches"], "branches")
    elif "branches" not in absent:
        out["branches"] = True
    if recursive or "recursive" not in absent:
        out["recursive"] = recursive
    if recursive:
        key = "messagesTree" if "messages" in absent else "messages"
        out[key] = _nest(messages, view, top)
    else:
        out["messages"] = list(messages.values())
    if ext:
        out["convtree"] = ext
    return out


def _nest(messages: dict[str, dict[str, Any]], view: View, top: str | None) -> list[dict[str, Any]]:
    for message_id, msg in messages.items():
        msg["children"] = [messages[kid] for kid in view.children.get(message_id, ())]
    if top is None:
        return [messages[view.nodes[0].node_id]]
    return [messages[kid] for kid in view.children.get(top, ())]


def _message(
    node: ConversationNode, view: View, top: str | None, fields: FieldMap
) -> dict[str, Any]:
    node_id = node.node_id
    up = view.parent.get(node_id)
    meta = node._meta
    model = meta.get("model")
    model = model if isinstance(model, str) else None
    role = node.role or ""
    values = {
        "parent": None if up == top else up,
        "conversation": view.conversation_id,
        "role": role,
        "name": message_field(node, "name"),
        "content": node.content,
        "timestamp": node.timestamp,
        "model": model,
        "extra": message_extra(node),
    }
    ns = meta.get(FORMAT)
    kept = ns if isinstance(ns, Mapping) else None
    out = {"messageId": node_id}
    out.update(fields.emit(values, kept, _Ctx(view.conversation_id, role, model, node.timestamp)))
    return out


def write(
    states: Iterable[ConversationState],
    dest: Dest,
    *,
    mode: Mode = "tree",
    recursive: bool = False,
) -> int:
    """Write conversations as a JSON array of LibreChat exports.

    convtree's `read` reads such an array back;
    LibreChat's own importer takes one conversation per file (write each
    `to_dict` to its own file for it).

    Args:
        states: The conversations (any iterable; consumed once, one at a time).
        dest: A path (written atomically) or an open binary file.
        mode: As in `to_dict`.
        recursive: As in `to_dict`.

    Returns:
        How many conversations were written (with ``"branches"``, one per branch).
    """
    check_mode(mode)
    return write_exports(states, dest, lambda state: to_dict(state, mode=mode, recursive=recursive))
