"""ChatGPT's export format (``conversations.json``): import and export, lossless for the tree.

A ChatGPT conversation is an object with a ``mapping`` (node id -> ``{id, message|null,
parent, children}``), a ``current_node`` (the active leaf), a ``title``,
``create_time``/``update_time`` (epoch seconds) and many other top-level fields.
Each node becomes a convtree node with the same id, each ``children`` list the
sibling order, ``current_node`` the cursor.

What convtree has a field for goes there (role, content, author name, timestamps,
title, model); everything else is kept verbatim, so that exporting reproduces the
source:

- ``state.metadata["chatgpt"]``: the conversation's top-level fields (``mapping``
  left out, as ``null``);
- ``node.metadata["chatgpt"]["message"]``: the message as the source had it, its
  ``content`` replaced by ``null`` when it is plain text (then ``Message.content``
  holds it);
- ``node.metadata["model"]``: the message's ``metadata.model_slug``.

Plain text (``{"content_type": "text", "parts": [...strings]}``) becomes text
content; every other content type becomes a list of content parts whose text
parts are what a reader sees (code -> its text, thoughts -> their content, a
browsing result -> its text, images -> an ``image_asset_pointer`` part), while
the original content object is kept verbatim and written back unchanged as long
as the message's content is not changed.

See ``docs/import-export/chatgpt.md`` for the full field mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal, overload

from dataknobs_structures import Tree

from .._json import copy_json
from ..errors import FormatError
from ..format import CURRENT_SCHEMA_VERSION, unreachable
from ..node import ConversationNode
from ..state import ConversationState
from ._fields import Mode, check_mode, mode_error
from ._source import Dest, MemberFilter, Reader, Source, write_exports

__all__ = [
    "BRANCH_SEPARATOR",
    "EXTENSION",
    "FORMAT",
    "Mode",
    "from_dict",
    "looks_like",
    "read",
    "to_dict",
    "write",
]

FORMAT = "chatgpt"
"""The key of this format's verbatim data in node and conversation metadata."""


EXTENSION = "convtree"
"""Key, in a ChatGPT message's ``metadata``, of the convtree message fields ChatGPT has no
place for (``tool_calls``, ``tool_call_id``, ``function_call``, the message's ``metadata``,
provider fields); import puts them back into the message."""

BRANCH_SEPARATOR = "~"
"""Joins a conversation id and a leaf id in ``branches`` exports: ``<id>~<leaf id>``."""

_NODE_KEYS = ("id", "message", "parent", "children")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def looks_like(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` is one ChatGPT conversation (it has a ``mapping`` object)."""
    return isinstance(obj, Mapping) and isinstance(obj.get("mapping"), Mapping)


def read(
    source: Source,
    *,
    errors: Literal["skip", "raise"] = "skip",
    member_filter: MemberFilter | None = None,
) -> Reader:
    """Stream the conversations of a ChatGPT export.

    Args:
        source: ``conversations.json``, the export ZIP (also sharded
            ``conversations-000.json``...), a directory of them, a file holding
            one conversation object, or an open binary file.
        errors: ``"skip"`` records a conversation that cannot be imported in
            `Reader.skipped` and goes on;
            ``"raise"`` raises the first problem.
        member_filter: Which files of a ZIP or directory to read; the default
            picks ``conversations*.json``.

    Returns:
        An iterator of [`ConversationState`][convtree.ConversationState]
        (a context manager; close it when stopping early).
    """
    return Reader(source, from_dict, errors=errors, member_filter=member_filter)


def write(states: Iterable[ConversationState], dest: Dest, *, mode: Mode = "tree") -> int:
    """Write conversations as a ChatGPT ``conversations.json`` array (streamed, atomic).

    Args:
        states: The conversations (any iterable, consumed once).
        dest: A path (replaced only when everything is written) or an open binary file.
        mode: ``"tree"``, ``"active"`` or ``"branches"`` (see
            `to_dict`).

    Returns:
        How many conversation objects were written (``branches`` writes one per leaf).
    """
    check_mode(mode)
    return write_exports(states, dest, lambda state: to_dict(state, mode=mode))


# --------------------------------------------------------------------- import


def from_dict(obj: Mapping[str, Any]) -> ConversationState:
    """Build a conversation from one ChatGPT conversation object.

    The conversation id is the source's ``conversation_id`` (else its ``id``), the
    node ids are the ``mapping`` keys, so importing the same export twice gives
    the same ids. ``obj`` is not changed.

    A ``current_node`` that is missing or names no node is replaced by the newest
    leaf (latest ``create_time``, the last in ``mapping`` order on a tie). A node
    whose ``parent`` names a node that does not list it in ``children`` is put
    after that node's listed children (and left out of the list again on export).

    Raises:
        FormatError: the object is not a ChatGPT conversation, or its tree is
            broken (several roots, a parent or child that is not in ``mapping``,
            a child whose ``parent`` disagrees, a cycle), or a field has the
            wrong type; ``path`` points into the object
            (``mapping.<id>.message.author.role``).
    """
    if not isinstance(obj, Mapping):
        raise FormatError(f"a ChatGPT conversation is a JSON object, not {type(obj).__name__}")
    conversation_id = obj.get("conversation_id") or obj.get("id")
    if not isinstance(conversation_id, str) or not conversation_id:
        raise FormatError(
            f"no conversation id: 'conversation_id' or 'id' must be a non-empty string, "
            f"got {conversation_id!r}",
            path="conversation_id" if "conversation_id" in obj else "id",
        )
    mapping = obj.get("mapping")
    if not isinstance(mapping, Mapping) or not mapping:
        raise FormatError("'mapping' must be a non-empty object of nodes", path="mapping")

    root_id, children, unlisted = _tree(mapping)
    order = list(mapping)

    created = _time(obj.get("create_time"), "create_time")
    updated = _time(obj.get("update_time"), "update_time")

    edges: list[tuple[str, str]] = []
    preorder: list[str] = []
    stack = [root_id]
    while stack:
        node_id = stack.pop()
        preorder.append(node_id)
        kids = children.get(node_id)
        if kids:
            edges.extend((node_id, kid) for kid in kids)
            stack.extend(reversed(kids))
    times = {node_id: _message_time(mapping[node_id], node_id) for node_id in preorder}
    known = [t for t in times.values() if t is not None]
    if created is None:
        created = min(known) if known else (updated or _EPOCH)
    if updated is None:
        updated = max(known) if known else created

    nodes: list[dict[str, Any]] = []
    stamps: dict[str, datetime] = {}
    position = {node_id: i for i, node_id in enumerate(order)}
    keep_order = preorder != order
    newest: tuple[datetime, int, str] | None = None
    for node_id in preorder:  # parents before children
        raw = mapping[node_id]
        stamp = times[node_id]
        if stamp is None:  # a message without create_time takes its parent's time
            parent_id = raw.get("parent")
            stamp = created if parent_id is None else stamps[parent_id]
        stamps[node_id] = stamp
        record = _node_record(node_id, raw, stamp, node_id == root_id)
        chat = record["metadata"].get(FORMAT)
        extra: dict[str, Any] = {}
        if keep_order:
            extra["at"] = position[node_id]
        if node_id in unlisted:
            extra["unlisted"] = True
        if extra:
            if chat is None:
                chat = record["metadata"][FORMAT] = {}
            chat.update(extra)
        nodes.append(record)
        if not children.get(node_id):
            candidate = (stamp, position[node_id], node_id)
            if newest is None or candidate > newest:
                newest = candidate

    cursor = obj.get("current_node")
    if not isinstance(cursor, str) or cursor not in mapping:
        assert newest is not None  # a tree has a leaf
        cursor = newest[2]

    metadata: dict[str, Any] = {}
    title = obj.get("title")
    if isinstance(title, str):
        metadata["title"] = title
    metadata["source"] = FORMAT
    template = dict(obj)
    template["mapping"] = None  # rebuilt from the tree on export
    metadata[FORMAT] = template

    doc = {
        "schema_version": CURRENT_SCHEMA_VERSION,
        "conversation_id": conversation_id,
        "nodes": nodes,
        "edges": edges,
        "current_node_id": cursor,
        "metadata": metadata,
        "created_at": created,
        "updated_at": updated,
    }
    try:
        return ConversationState.from_dict(doc)
    except FormatError as exc:
        raise _in_source(exc, doc) from None


def _tree(mapping: Mapping[str, Any]) -> tuple[str, dict[str, list[str]], set[str]]:
    """Check the mapping is one tree; return its root, children lists and unlisted children."""
    roots: list[str] = []
    for node_id, raw in mapping.items():
        where = f"mapping.{node_id}"
        if not isinstance(raw, Mapping):
            raise FormatError("a node is a JSON object", path=where, node_id=node_id)
        parent_id = raw.get("parent")
        if parent_id is None:
            roots.append(node_id)
        elif not isinstance(parent_id, str):
            raise FormatError(
                f"'parent' is a node id or null, got {parent_id!r}",
                path=f"{where}.parent",
                node_id=node_id,
            )
        elif parent_id not in mapping:
            raise FormatError(
                f"the parent {parent_id!r} is not in the mapping",
                path=f"{where}.parent",
                node_id=node_id,
            )
        elif parent_id == node_id:
            raise FormatError(
                "the node is its own parent (a cycle)", path=f"{where}.parent", node_id=node_id
            )
        kids = raw.get("children", [])
        if not isinstance(kids, list):
            raise FormatError(
                "'children' is a list of node ids", path=f"{where}.children", node_id=node_id
            )
    if len(roots) > 1:
        shown = ", ".join(repr(r) for r in roots[:5])
        raise FormatError(
            f"{len(roots)} root nodes ({shown}); a conversation has exactly one node "
            "whose parent is null",
            path=f"mapping.{roots[1]}.parent",
            node_id=roots[1],
        )
    if not roots:
        first = next(iter(mapping))
        raise FormatError(
            "no root node: every node has a parent, so the parents form a cycle",
            path=f"mapping.{first}.parent",
            node_id=first,
        )

    children: dict[str, list[str]] = {}
    listed: set[str] = set()
    for node_id, raw in mapping.items():
        kids = raw.get("children", [])
        if not kids:
            continue
        seen: set[str] = set()
        for i, kid in enumerate(kids):
            where = f"mapping.{node_id}.children[{i}]"
            if not isinstance(kid, str) or kid not in mapping:
                raise FormatError(
                    f"the child {kid!r} is not in the mapping", path=where, node_id=node_id
                )
            if kid in seen:
                raise FormatError(f"the child {kid!r} is listed twice", path=where, node_id=node_id)
            seen.add(kid)
            parent_id = mapping[kid].get("parent")
            if parent_id != node_id:
                raise FormatError(
                    f"lists {kid!r} as a child, but that node's parent is {parent_id!r}",
                    path=where,
                    node_id=node_id,
                )
        children[node_id] = list(kids)
        listed.update(kids)

    # A node whose parent does not list it: put it after the listed children.
    unlisted = set()
    for node_id, raw in mapping.items():
        parent_id = raw.get("parent")
        if parent_id is not None and node_id not in listed:
            children.setdefault(parent_id, []).append(node_id)
            unlisted.add(node_id)

    root_id = roots[0]
    if lost := unreachable(root_id, children, mapping):
        # Every other node has one parent, so the ones not reached form a cycle.
        shown = ", ".join(repr(n) for n in lost[:5])
        raise FormatError(
            f"{len(lost)} node(s) not reachable from the root {root_id!r}: their parents "
            f"form a cycle ({shown})",
            path=f"mapping.{lost[0]}.parent",
            node_id=lost[0],
        )
    return root_id, children, unlisted


def _time(value: Any, path: str) -> datetime | None:
    """Epoch seconds as an aware UTC datetime; ``None`` stays ``None``."""
    if value is None:
        return None
    if type(value) is not float and type(value) is not int:
        raise FormatError(f"a time is a number of seconds since 1970, got {value!r}", path=path)
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise FormatError(f"the time {value!r} is out of range", path=path) from None


def _message_time(raw: Mapping[str, Any], node_id: str) -> datetime | None:
    message = raw.get("message")
    if not isinstance(message, Mapping):
        return None
    return _time(message.get("create_time"), f"mapping.{node_id}.message.create_time")


def _node_record(
    node_id: str, raw: Mapping[str, Any], stamp: datetime, is_root: bool
) -> dict[str, Any]:
    """The convtree node record of one mapping node."""
    where = f"mapping.{node_id}"
    chat: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    message = raw.get("message")
    record_message: dict[str, Any] | None
    if message is None:
        if is_root:
            record_message = None
        else:
            # convtree nodes below the root hold a message: an empty system one.
            record_message = {"role": "system", "content": None}
            chat["message"] = None
    else:
        record_message, template, model = _message(message, f"{where}.message")
        chat["message"] = template
        if model is not None:
            metadata["model"] = model
    if list(raw) != list(_NODE_KEYS) or raw.get("id") != node_id:
        chat["node"] = {
            k: (None if k in ("message", "parent", "children") else v) for k, v in raw.items()
        }
    if chat:
        metadata[FORMAT] = chat
    return {"node_id": node_id, "message": record_message, "timestamp": stamp, "metadata": metadata}


def _message(message: Any, where: str) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(convtree message record, verbatim template, model) of a ChatGPT message."""
    if not isinstance(message, Mapping):
        raise FormatError("a message is a JSON object or null", path=where)
    author = message.get("author")
    if not isinstance(author, Mapping):
        raise FormatError("the message has no 'author' object", path=f"{where}.author")
    role = author.get("role")
    if not isinstance(role, str) or not role:
        raise FormatError(
            f"the author's role must be a non-empty string, got {role!r}",
            path=f"{where}.author.role",
        )
    record: dict[str, Any] = {"role": role}
    content = message.get("content")
    plain = _plain(content)
    if plain is None:
        record["content"] = _derive(content)
        template = dict(message)
    else:
        record["content"] = plain
        template = dict(message)
        template["content"] = None  # Message.content holds it
    name = author.get("name")
    if isinstance(name, str):
        record["name"] = name
    meta = message.get("metadata")
    if isinstance(meta, Mapping):
        record.update(_lifted(meta.get(EXTENSION)))
        model = meta.get("model_slug")
    else:
        model = None
    return record, template, model if isinstance(model, str) else None


_OWN = frozenset({"role", "content", "name"})
_TYPES: dict[str, type | tuple[type, ...]] = {
    "tool_calls": list,
    "tool_call_id": str,
    "function_call": dict,
    "metadata": dict,
}


def _lifted(kept: Any) -> dict[str, Any]:
    """The convtree message fields an export put in ``metadata.convtree`` (of the right type)."""
    if not isinstance(kept, Mapping):
        return {}
    out = {}
    for key, value in kept.items():
        if key in _OWN or value is None or (key == "metadata" and not value):
            continue  # as Message.to_dict leaves them out
        wanted = _TYPES.get(key)
        if wanted is not None and not isinstance(value, wanted):
            continue  # not a field value: it stays only in the kept message
        if key == "tool_calls" and not all(isinstance(call, dict) for call in value):
            continue
        out[key] = value
    return out


def _extra_fields(message: Mapping[str, Any]) -> dict[str, Any]:
    """A convtree message's fields ChatGPT has no place for (tool calls, ...)."""
    return {k: v for k, v in message.items() if k not in _OWN}


def _plain(content: Any) -> str | list[dict[str, Any]] | None:
    """The text of plain-text content (a str, or text parts when there are several), else None."""
    if type(content) is not dict or len(content) != 2 or content.get("content_type") != "text":
        return None
    parts = content.get("parts")
    if type(parts) is not list or next(iter(content)) != "content_type":
        return None
    for part in parts:
        if type(part) is not str:
            return None
    if len(parts) == 1:
        text: str = parts[0]
        return text
    return [{"type": "text", "text": part} for part in parts]


def _text_part(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


def _derive(content: Any) -> str | list[dict[str, Any]] | None:
    """The convtree content showing ChatGPT content that is not plain text.

    Text parts carry what a reader sees (and search finds); other parts
    (images, files) are kept as parts of their own type.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return _derive_parts(content)
    if not isinstance(content, dict):
        return None
    kind = content.get("content_type")
    parts = content.get("parts")
    if isinstance(parts, list):
        return _derive_parts(parts)
    if kind == "thoughts":
        thoughts = content.get("thoughts")
        texts = [
            t["content"]
            for t in (thoughts if isinstance(thoughts, list) else [])
            if isinstance(t, dict) and isinstance(t.get("content"), str)
        ]
        return _text_part("\n\n".join(texts))
    if kind == "user_editable_context":
        texts = [
            content[k]
            for k in ("user_profile", "user_instructions")
            if isinstance(content.get(k), str) and content[k]
        ]
        return _text_part("\n\n".join(texts))
    if kind == "tether_browsing_display":
        result = content.get("result")
        if not (isinstance(result, str) and result):
            result = content.get("summary")
        return _text_part(result) if isinstance(result, str) else []
    for key in ("text", "content", "result"):  # code, execution_output, reasoning_recap, ...
        value = content.get(key)
        if isinstance(value, str):
            return _text_part(value)
    return []


def _derive_parts(parts: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, str):
            out.append({"type": "text", "text": part})
        elif isinstance(part, dict):
            kind = part.get("content_type")
            text = part.get("text")
            if kind == "audio_transcription" and isinstance(text, str):
                out.append({"type": "text", "text": text})
            else:
                shown = {k: v for k, v in part.items() if k not in ("content_type", "type")}
                shown["type"] = kind if isinstance(kind, str) and kind else "unknown"
                out.append(shown)
    return out


def _in_source(exc: FormatError, doc: Mapping[str, Any]) -> FormatError:
    """A FormatError about the built document, re-pointed into the ChatGPT object."""
    path = exc.path or ""
    node_id = exc.node_id
    if path.startswith("nodes["):
        index, rest = path[len("nodes[") :].split("]", 1)
        if node_id is None and index.isdigit():
            node_id = doc["nodes"][int(index)]["node_id"]
        rest = rest.replace(f".metadata.{FORMAT}.message", ".message", 1)
        path = f"mapping.{node_id}{rest}"
    elif path.startswith(f"metadata.{FORMAT}."):
        path = path[len(f"metadata.{FORMAT}.") :]
    elif path.startswith("metadata."):
        path = path[len("metadata.") :]
    return FormatError(exc.reason, path=path or None, node_id=node_id)


# --------------------------------------------------------------------- export


@overload
def to_dict(
    state: ConversationState, *, mode: Literal["tree", "active"] = "tree"
) -> dict[str, Any]: ...
@overload
def to_dict(state: ConversationState, *, mode: Literal["branches"]) -> list[dict[str, Any]]: ...
@overload
def to_dict(state: ConversationState, *, mode: Mode) -> dict[str, Any] | list[dict[str, Any]]: ...


def to_dict(
    state: ConversationState, *, mode: Mode = "tree"
) -> dict[str, Any] | list[dict[str, Any]]:
    """A conversation as a ChatGPT conversation object (or several).

    A conversation imported from ChatGPT is written back as it was read (every
    field, in its order), with what changed in convtree since (messages added
    or edited, the cursor, the title) applied. Any other conversation gets the
    fields ChatGPT requires, invented where convtree has no value (see the docs).

    Args:
        state: The conversation (not changed).
        mode: ``"tree"`` (default): every node. ``"active"``: only the path from
            the root to the cursor. ``"branches"``: one conversation per leaf,
            each the path to that leaf, with the id ``<conversation id>~<leaf id>``
            and ``current_node`` on the leaf; a list, leaves in depth-first order.

    Returns:
        The conversation object, or a list of them for ``"branches"``.
    """
    cursor = state.current_node_id
    if mode == "tree":
        return _conversation(state, _whole_tree(state), state.conversation_id, cursor)
    if mode == "active":
        return _conversation(state, _path_items(state, cursor), state.conversation_id, cursor)
    if mode == "branches":
        return [
            _conversation(
                state,
                _path_items(state, leaf.node_id),
                f"{state.conversation_id}{BRANCH_SEPARATOR}{leaf.node_id}",
                leaf.node_id,
            )
            for leaf in state.leaves()
        ]
    raise mode_error(mode)


_Item = tuple[ConversationNode, "str | None", list[str]]  # (node, parent id, child ids)


def _whole_tree(state: ConversationState) -> list[_Item]:
    items: list[_Item] = []
    stack: list[Tree] = [state.message_tree]
    while stack:
        tree = stack.pop()
        kids = tree.children or []
        parent = tree.parent
        parent_id = None if parent is None else parent.data.node_id
        items.append((tree.data, parent_id, [kid.data.node_id for kid in kids]))
        stack.extend(reversed(kids))
    return items


def _path_items(state: ConversationState, leaf_id: str) -> list[_Item]:
    path = state.get_path(leaf_id)
    items: list[_Item] = []
    for i, node in enumerate(path):
        parent_id = path[i - 1].node_id if i else None
        kids = [path[i + 1].node_id] if i + 1 < len(path) else []
        items.append((node, parent_id, kids))
    return items


class _Record:
    """One exported node and what places it: its source position, whether it was listed."""

    __slots__ = ("at", "kids", "model", "node", "node_id", "unlisted")

    def __init__(self, node: ConversationNode, parent_id: str | None, kids: list[str]) -> None:
        node_id = self.node_id = node.node_id
        self.kids = kids
        data = node.to_dict()  # a copy: free to change
        metadata = data["metadata"]
        message = data["message"]
        chat = metadata.get(FORMAT)
        if not isinstance(chat, dict):
            chat = {}
        model = metadata.get("model")
        self.model = model if isinstance(model, str) else None
        if "message" in chat:
            template = chat["message"]
            out = (
                None
                if not isinstance(template, dict)
                else _restore_message(template, message, node.timestamp, self.model)
            )
        elif message is None:
            out = None
        else:
            out = _new_message(node_id, message, node.timestamp, self.model)
        shape = chat.get("node")
        if isinstance(shape, dict):
            record = shape
            for key, value in (("message", out), ("parent", parent_id), ("children", kids)):
                if key in record:
                    record[key] = value
        else:
            record = {"id": node_id, "message": out, "parent": parent_id, "children": kids}
        self.node = record
        at = chat.get("at")
        self.at = at if type(at) is int else None
        self.unlisted = chat.get("unlisted") is True


def _conversation(
    state: ConversationState, items: list[_Item], conversation_id: str, cursor: str
) -> dict[str, Any]:
    records = [_Record(node, parent_id, kids) for node, parent_id, kids in items]
    unlisted = {r.node_id for r in records if r.unlisted}
    if unlisted:
        for r in records:
            r.kids[:] = [kid for kid in r.kids if kid not in unlisted]
    if any(r.at is not None for r in records):
        last = len(records) + (1 << 32)
        records.sort(key=lambda r: last if r.at is None else r.at)  # stable: new nodes in order
    mapping = {r.node_id: r.node for r in records}
    return _head(state, mapping, conversation_id, cursor, records)


def _head(
    state: ConversationState,
    mapping: dict[str, Any],
    conversation_id: str,
    cursor: str,
    records: list[_Record],
) -> dict[str, Any]:
    metadata = state.metadata
    template = metadata.get(FORMAT)
    if not isinstance(template, Mapping):
        title = metadata.get("title")
        models = {r.node_id: r.model for r in records if r.model is not None}
        on_path = [n.node_id for n in state.get_path(cursor)]
        model = next((models[n] for n in reversed(on_path) if n in models), None)
        return {
            "title": title if isinstance(title, str) else None,
            "create_time": state.created_at.timestamp(),
            "update_time": state.updated_at.timestamp(),
            "mapping": mapping,
            "moderation_results": [],
            "current_node": cursor,
            "plugin_ids": None,
            "conversation_id": conversation_id,
            "conversation_template_id": None,
            "gizmo_id": None,
            "gizmo_type": None,
            "is_archived": False,
            "safe_urls": [],
            "blocked_urls": [],
            "default_model_slug": model,
            "id": conversation_id,
        }
    out: dict[str, Any] = copy_json(dict(template), f"metadata.{FORMAT}")
    out["mapping"] = mapping
    if "title" in metadata:
        out["title"] = copy_json(metadata["title"], "metadata.title")
    for key, when in (("create_time", state.created_at), ("update_time", state.updated_at)):
        if not _same_time(out.get(key), when):
            out[key] = when.timestamp()
    out["current_node"] = cursor
    original = template.get("conversation_id") or template.get("id")
    if conversation_id != original:
        for key in ("conversation_id", "id"):
            if key in out or key == "id":
                out[key] = conversation_id
    return out


def _same_time(raw: Any, when: datetime) -> bool:
    """Whether epoch seconds ``raw`` read as ``when`` (so writing ``raw`` back loses nothing)."""
    if type(raw) is not float and type(raw) is not int:
        return False
    try:
        return datetime.fromtimestamp(raw, timezone.utc) == when
    except (OverflowError, OSError, ValueError):
        return False


def _restore_message(
    template: dict[str, Any], message: dict[str, Any] | None, stamp: datetime, model: Any
) -> dict[str, Any]:
    out = template
    if message is None:
        return out
    author = out.get("author")
    if isinstance(author, dict):
        if author.get("role") != message["role"]:
            author["role"] = message["role"]
        name = message.get("name")
        if name is not None:
            author["name"] = name
        elif isinstance(author.get("name"), str):
            author["name"] = None
    content = message.get("content")
    stored = out.get("content")
    if stored is None:
        if content is not None:
            out["content"] = _generate(content)
    elif _derive(stored) != content:
        out["content"] = _generate(content)
    raw = out.get("create_time")
    if raw is not None and not _same_time(raw, stamp):
        out["create_time"] = stamp.timestamp()
    if isinstance(model, str):
        meta = out.get("metadata")
        if isinstance(meta, dict):
            if meta.get("model_slug") != model:
                meta["model_slug"] = model
        else:
            out["metadata"] = {"model_slug": model}
    extra = _extra_fields(message)
    meta = out.get("metadata")
    kept = meta.get(EXTENSION) if isinstance(meta, dict) else None
    if extra != _lifted(kept):  # changed in convtree since
        if not isinstance(meta, dict):
            meta = out["metadata"] = {}
        if extra:
            meta[EXTENSION] = extra
        else:
            meta.pop(EXTENSION, None)
    return out


def _new_message(
    node_id: str, message: dict[str, Any], stamp: datetime, model: Any
) -> dict[str, Any]:
    role = message["role"]
    content = message.get("content")
    meta: dict[str, Any] = {}
    if isinstance(model, str):
        meta["model_slug"] = model
    extra = _extra_fields(message)
    if extra:
        meta[EXTENSION] = extra
    return {
        "id": node_id,
        "author": {"role": role, "name": message.get("name"), "metadata": {}},
        "create_time": stamp.timestamp(),
        "update_time": None,
        "content": _generate(content) if content is not None else _generate(""),
        "status": "finished_successfully",
        "end_turn": True if role == "assistant" else None,
        "weight": 1.0,
        "metadata": meta,
        "recipient": "all",
        "channel": None,
    }


def _generate(content: Any) -> dict[str, Any] | None:
    """ChatGPT content for convtree content: text, or multimodal_text for other parts."""
    if content is None:
        return None
    if isinstance(content, str):
        return {"content_type": "text", "parts": [content]}
    parts: list[Any] = []
    plain = True
    for part in content:
        kind = part.get("type", "text")
        if kind == "text":
            text = part.get("text", "")
            parts.append(text if isinstance(text, str) else str(text))
        else:
            plain = False
            parts.append({"content_type": kind, **{k: v for k, v in part.items() if k != "type"}})
    return {"content_type": "text" if plain else "multimodal_text", "parts": parts}
