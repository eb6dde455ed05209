"""Field mapping shared by the Open WebUI and LibreChat converters.

A source message (or conversation) has fields that convtree holds in its own
places (role, content, timestamp, model, ...) and fields it does not know. The
unknown ones are kept verbatim in a namespaced metadata dict (``ns``). A known
field is *derived* on export from convtree's value, so that editing the message
in convtree changes what is exported; when the source's raw value is not what
derivation would give (``1744577557.5`` for a time written back as
``1744577557.5`` is, ``"2024-05-29T00:33:03Z"`` written back with milliseconds
is not; an absent field), the raw value is kept in ``ns`` too (an absent one is
listed under `ABSENT`), and written back instead of
the derived one **as long as it still reads as convtree's current value**.
So an unchanged message is reproduced exactly, and a changed one is written from
its new value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Any, Final, Literal

from .._json import copy_json
from ..errors import FormatError
from ..node import ConversationNode
from ..state import ConversationState

__all__ = [
    "ABSENT",
    "EPOCH",
    "EXTENSION",
    "EXTRA_FIELD",
    "MISSING",
    "MODES",
    "Field",
    "FieldMap",
    "Mode",
    "View",
    "check_mode",
    "epoch_seconds",
    "iso_z",
    "message_extra",
    "message_field",
    "mode_error",
    "newest_leaf",
    "parse_time",
    "path_key",
    "read_extension",
    "relocate",
    "same",
    "same_value",
    "text_of",
    "text_or_none",
    "unique_id",
    "views",
]

Mode = Literal["tree", "active", "branches"]
"""Export modes: the whole tree, the active path only, one conversation per branch."""

MODES: Final = ("tree", "active", "branches")


def mode_error(mode: object) -> ValueError:
    """The error for an export mode that is not one of `MODES`."""
    return ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")


def check_mode(mode: object) -> None:
    """Raise `mode_error` unless ``mode`` is one of `MODES`."""
    if mode not in MODES:
        raise mode_error(mode)


ABSENT: Final = "convtree:absent"
"""Key, in a namespaced metadata dict, listing the known fields the source did not have."""

EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""The time given to a conversation whose source holds no time at all."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()
"""A field that is not there (distinct from a JSON ``null``)."""


def same(a: Any, b: Any) -> bool:
    """Whether two JSON values are the same JSON: ``1`` is not ``1.0`` nor ``True``."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        if len(a) != len(b):
            return False
        for key, value in a.items():
            other = b.get(key, MISSING)
            if other is MISSING or not same(value, other):
                return False
        return True
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@dataclass(frozen=True)
class Field:
    """A convtree value held in one or more source fields.

    Attributes:
        name: Name of the value (the key of the ``values`` dicts below).
        keys: The source fields that hold it.
        read: ``(source fields, context) -> value``; a missing field reads as
            `MISSING` (``fields.get(key, MISSING)``).
        write: ``(value, context) -> source fields`` (only the keys to write).
    """

    name: str
    keys: tuple[str, ...]
    read: Callable[[Mapping[str, Any], Any], Any]
    write: Callable[[Any, Any], dict[str, Any]]


class FieldMap:
    """The known fields of one kind of source object (a message, a conversation)."""

    def __init__(self, fields: Iterable[Field], *, structural: Iterable[str] = ()) -> None:
        """Map these fields.

        Args:
            fields: The known fields, in the order they are written.
            structural: Fields neither kept nor derived here (the caller writes
                them: ids, children).
        """
        self.fields = tuple(fields)
        self.known = frozenset(key for f in self.fields for key in f.keys)
        self.skip = self.known | frozenset(structural)

    def kept(
        self, source: Mapping[str, Any], values: Mapping[str, Any], ctx: Any
    ) -> dict[str, Any]:
        """What of ``source`` convtree's ``values`` cannot reproduce: its ``ns`` dict.

        The unknown fields, verbatim; the known ones whose raw value differs from
        what ``values`` write; `ABSENT` listing the known ones missing.
        """
        skip = self.skip
        ns = {key: value for key, value in source.items() if key not in skip}
        absent: list[str] = []
        for f in self.fields:
            derived = f.write(values[f.name], ctx)
            for key in f.keys:
                raw = source.get(key, MISSING)
                if not same(derived.get(key, MISSING), raw):
                    if raw is MISSING:
                        absent.append(key)
                    else:
                        ns[key] = raw
        if absent:
            ns[ABSENT] = absent
        return ns

    def emit(
        self, values: Mapping[str, Any], ns: Mapping[str, Any] | None, ctx: Any
    ) -> dict[str, Any]:
        """The source fields for ``values``: raw kept ones while they still read the same.

        Returns a new dict sharing nothing mutable with ``ns``: the known fields
        (in field order), then the unknown ones ``ns`` kept.
        """
        out: dict[str, Any] = {}
        if not ns:
            for f in self.fields:
                out.update(f.write(values[f.name], ctx))
            return _copied(out)
        absent = ns.get(ABSENT)
        gone = (
            frozenset(a for a in absent if isinstance(a, str)) if isinstance(absent, list) else ()
        )
        chosen: list[tuple[Field, dict[str, Any], dict[str, Any]]] = []
        for f in self.fields:
            derived = f.write(values[f.name], ctx)
            candidate = derived
            for key in f.keys:
                if key in gone or key in ns:
                    if candidate is derived:
                        candidate = dict(derived)
                    if key in gone:
                        candidate.pop(key, None)
                    else:
                        candidate[key] = ns[key]
            chosen.append((f, derived, candidate))
            out.update(candidate)
        for f, derived, candidate in chosen:
            # A kept raw value stands only while it still reads as convtree's value.
            if candidate is not derived and not same_value(f.read(out, ctx), values[f.name]):
                for key in f.keys:
                    out.pop(key, None)
                out.update(derived)
        skip = self.skip
        for key, value in ns.items():
            if key not in skip and key != ABSENT:
                out[key] = value
        return _copied(out)


def _copied(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with every object and array copied (shared with nothing)."""
    for key, value in fields.items():
        if isinstance(value, (dict, list)):
            fields[key] = copy_json(value, key)
    return fields


def same_value(a: Any, b: Any) -> bool:
    """Whether two convtree values are equal (JSON values compared as JSON)."""
    if isinstance(a, datetime) or isinstance(b, datetime):
        return isinstance(a, datetime) and isinstance(b, datetime) and a == b
    return same(a, b)


_FRACTION = re.compile(r"(\.\d+)")


def parse_time(value: Any, path: str) -> datetime:
    """A source time as an aware UTC datetime.

    Accepted: epoch numbers (seconds, or milliseconds, microseconds or
    nanoseconds, told apart by magnitude: below 1e11 is seconds, below 1e14
    milliseconds, below 1e17 microseconds, above that nanoseconds); ISO 8601
    text (``Z`` or an offset; without one it is UTC; any number of fraction
    digits, kept to the microsecond); a MongoDB ``{"$date": ...}`` wrapper.

    Raises:
        FormatError: anything else, or a time out of range, naming ``path``.
    """
    try:
        if isinstance(value, bool):
            raise ValueError("a boolean is not a time")
        if isinstance(value, int):
            size = abs(value)
            if size < 10**11:
                return EPOCH + timedelta(seconds=value)
            if size < 10**14:
                return EPOCH + timedelta(milliseconds=value)
            if size < 10**17:
                return EPOCH + timedelta(microseconds=value)
            return EPOCH + timedelta(microseconds=value // 1000)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError("not a finite number")
            magnitude = abs(value)
            scale = (
                1.0
                if magnitude < 1e11
                else 1e3
                if magnitude < 1e14
                else 1e6
                if magnitude < 1e17
                else 1e9
            )
            return EPOCH + timedelta(seconds=value / scale)
        if isinstance(value, str):
            return _parse_iso(value)
        if isinstance(value, Mapping) and len(value) == 1 and "$date" in value:
            inner = value["$date"]
            if isinstance(inner, Mapping) and len(inner) == 1 and "$numberLong" in inner:
                inner = int(str(inner["$numberLong"]))
                return EPOCH + timedelta(milliseconds=inner)
            return parse_time(inner, path + ".$date")
    except (ValueError, OverflowError) as exc:
        raise FormatError(f"not a readable time {value!r}: {exc}", path=path) from None
    raise FormatError(
        f"a time is a number (epoch) or ISO 8601 text, not {type(value).__name__}", path=path
    )


def _parse_iso(text: str) -> datetime:
    body = text.strip()
    if body.endswith(("Z", "z")):
        body = body[:-1] + "+00:00"
    # Python 3.10 reads only 3 or 6 fraction digits: keep 6 (microseconds).
    body = _FRACTION.sub(lambda m: (m.group(1) + "000000")[:7], body, count=1)
    stamp = datetime.fromisoformat(body)
    if stamp.tzinfo is None:
        return stamp.replace(tzinfo=timezone.utc)
    return stamp.astimezone(timezone.utc)


def epoch_seconds(stamp: datetime) -> int | float:
    """Epoch seconds: an int for a whole second, else a float (microseconds kept)."""
    delta = stamp - EPOCH
    if delta.microseconds == 0:
        seconds: int = delta.days * 86400 + delta.seconds
        return seconds
    return delta / timedelta(seconds=1)


def iso_z(stamp: datetime) -> str:
    """ISO 8601 in UTC with ``Z``, milliseconds (microseconds when there are any)."""
    utc = stamp.astimezone(timezone.utc)
    spec = "milliseconds" if utc.microsecond % 1000 == 0 else "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def path_key(base: str, key: str) -> str:
    """``base.key``, or ``base["key"]`` when the key is not a plain name."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{base}.{key}" if base else key
    quoted = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{base}[{quoted}]"


def text_or_none(value: Any) -> str | None:
    """``value`` if it is a string, else ``None``."""
    return value if isinstance(value, str) else None


def read_extension(
    ext: Any,
    where: str,
    roots: list[str],
    known: Container[str],
    default_root: str,
    *,
    what: str,
    roots_are: str,
) -> tuple[str, bool, str | None]:
    """Read the ``convtree`` object a format's export carries beside its own fields.

    convtree writes it only for what the format cannot hold: a root id other
    than ``default_root``, a root holding a message, a cursor the format has no
    place for.

    Args:
        ext: The ``convtree`` value (``None``: absent).
        where: Its path in the source, for errors.
        roots: The ids of the messages without a parent.
        known: The message ids of the conversation.
        default_root: The root id to use when none is given (made unique).
        what: How errors name the conversation ("conversation", "chat").
        roots_are: How errors name the messages in ``roots`` ("first messages").

    Returns:
        The root id, whether the root holds a message, and the cursor given.
    """
    root_id: str | None = None
    cursor: str | None = None
    if ext is not None:
        if not isinstance(ext, Mapping):
            raise FormatError("`convtree` must be an object", path=where)
        root_id = ext.get("root_id")
        cursor = ext.get("current_node_id")
        for name, value in (("root_id", root_id), ("current_node_id", cursor)):
            if value is not None and not isinstance(value, str):
                raise FormatError(f"{name} must be text", path=path_key(where, name))
    message_root = root_id is not None and root_id in known
    if message_root:
        if roots != [root_id]:
            raise FormatError(
                f"root_id names message {root_id!r}, but the {what} has {len(roots)} {roots_are}",
                path=path_key(where, "root_id"),
            )
    elif root_id is None:
        root_id = unique_id(default_root, known.__contains__)
    assert root_id is not None
    if cursor is not None and cursor != root_id and cursor not in known:
        raise FormatError(
            f"current_node_id {cursor!r} names no message of this {what}",
            path=path_key(where, "current_node_id"),
        )
    return root_id, message_root, cursor


def unique_id(preferred: str, taken: Callable[[str], bool]) -> str:
    """``preferred``, or ``preferred-1``, ``-2``, ... : the first one not ``taken``."""
    if not taken(preferred):
        return preferred
    n = 1
    while taken(f"{preferred}-{n}"):
        n += 1
    return f"{preferred}-{n}"


def text_of(content: Any) -> str:
    """The display text of message content, as [`Message.text`][convtree.Message.text] reads it."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        str(part.get("text", ""))
        for part in content
        if isinstance(part, Mapping) and part.get("type", "text") == "text"
    )


def message_field(node: ConversationNode, key: str) -> Any:
    """A field of a node's message (``None`` when unset), without building the model."""
    message = node._message
    if message is None:
        return None
    if type(message) is dict:
        return message.get(key)
    return getattr(message, key, None)


_OWN = frozenset({"role", "content", "name"})

EXTENSION: Final = "convtree"
"""Key of what convtree writes beside a format's own fields, for what the format cannot hold."""


def message_extra(node: ConversationNode) -> dict[str, Any] | None:
    """The message's fields besides role, content and name (tool calls, ...), if any."""
    message = node._message
    if message is None:
        return None
    fields = message if type(message) is dict else message.to_dict()  # type: ignore[union-attr]
    extra = {
        key: value
        for key, value in fields.items()
        if key not in _OWN and value is not None and not (key == "metadata" and not value)
    }
    return extra or None


def _read_extra(m: Mapping[str, Any], c: Any) -> dict[str, Any] | None:
    value = m.get(EXTENSION)
    if not isinstance(value, dict):
        return None
    extra = {key: item for key, item in value.items() if key not in _OWN}
    return extra or None


EXTRA_FIELD: Final = Field(
    "extra", (EXTENSION,), _read_extra, lambda v, c: {EXTENSION: v} if v else {}
)
"""The message's other convtree fields (``tool_calls``, ``tool_call_id``, ...), written
under ``convtree`` in a message of a format that has no place for them."""


_NODE_AT = re.compile(r"nodes\[(\d+)\]")


def relocate(
    exc: FormatError,
    nodes: list[dict[str, Any]],
    paths: Mapping[str, str],
    head: Mapping[str, str],
) -> FormatError:
    """An error of [`ConversationState.from_dict`][convtree.ConversationState.from_dict] on the
    document built from a source, pointed at the source.

    Args:
        exc: The error, its path into the convtree document.
        nodes: The document's nodes (to name the node a ``nodes[i]`` path is in).
        paths: Node id -> the message's path in the source.
        head: Document field (``metadata.title``) -> its path in the source.
    """
    inner = exc.path or ""
    node_id = exc.node_id
    found = _NODE_AT.match(inner)
    if node_id is None and found and int(found.group(1)) < len(nodes):
        node_id = nodes[int(found.group(1))]["node_id"]
    where = paths.get(node_id) if node_id is not None else None
    if where is None:
        for field, source in head.items():
            if inner == field or inner.startswith((field + ".", field + "[")):
                where = source
                break
    detail = f"{exc.reason} (in the convtree document at {inner})" if inner else exc.reason
    return FormatError(detail, path=where, node_id=node_id)


@dataclass
class View:
    """What one exported conversation holds: all of a tree, or one path of it.

    Attributes:
        conversation_id: The id to export under.
        nodes: The nodes, depth-first in sibling order, the root first.
        children: Node id -> its children's ids in this view, in sibling order.
        parent: Node id -> its parent's id (the root has none).
        end: The cursor of this view (the state's cursor, or the path's end).
        whole: Whether this is the whole tree (mode ``"tree"``).
    """

    conversation_id: str
    nodes: list[ConversationNode]
    children: dict[str, list[str]]
    parent: dict[str, str]
    end: ConversationNode
    whole: bool


def views(state: ConversationState, mode: str) -> list[View]:
    """The conversations ``mode`` exports ``state`` as.

    ``"tree"``: one, the whole tree; ``"active"``: one, the path from the root to
    the cursor; ``"branches"``: one per leaf (depth-first order), the path to it,
    under the id ``<conversation id>~<leaf id>``.

    Raises:
        ValueError: an unknown mode.
    """
    if mode == "tree":
        nodes: list[ConversationNode] = []
        children: dict[str, list[str]] = {}
        parent: dict[str, str] = {}
        stack = [state.message_tree]
        while stack:
            tree = stack.pop()
            node: ConversationNode = tree.data
            nodes.append(node)
            kids = tree.children
            if kids:
                ids = [kid.data.node_id for kid in kids]
                children[node.node_id] = ids
                for kid_id in ids:
                    parent[kid_id] = node.node_id
                stack.extend(reversed(kids))
        return [View(state.conversation_id, nodes, children, parent, state.current_node, True)]
    if mode == "active":
        return [_path_view(state.conversation_id, state.get_path())]
    if mode == "branches":
        return [
            _path_view(f"{state.conversation_id}~{leaf.node_id}", state.get_path(leaf.node_id))
            for leaf in state.leaves()
        ]
    raise mode_error(mode)


def _path_view(conversation_id: str, path: list[ConversationNode]) -> View:
    children: dict[str, list[str]] = {}
    parent: dict[str, str] = {}
    for above, below in pairwise(path):
        children[above.node_id] = [below.node_id]
        parent[below.node_id] = above.node_id
    return View(conversation_id, path, children, parent, path[-1], False)


def newest_leaf(
    nodes: Iterable[ConversationNode], children: Mapping[str, list[str]]
) -> ConversationNode | None:
    """The leaf with a message created last (the later in ``nodes`` order on a tie), if any."""
    best: ConversationNode | None = None
    for node in nodes:
        if (
            node._message is not None
            and not children.get(node.node_id)
            and (best is None or node.timestamp >= best.timestamp)
        ):
            best = node
    return best
