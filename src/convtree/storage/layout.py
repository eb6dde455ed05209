"""The stored layout: a state or a change set as records, and records back as a state.

No I/O happens here. Each conversation is one **head** record plus a few
immutable **segment** records (see docs/storage.md):

* head, key ``record_id(cid)``: ``kind="head"``, ``key``, ``revision``,
  ``created_at``/``updated_at`` (UTC ISO text), ``meta`` (the metadata made
  storable everywhere, used only to narrow searches), and ``head``: exact JSON
  text of the document's top-level fields, the segment list, the revision
  history the merge rules need, and the summary list pages show;
* segment, key ``<head key>~<revision>-<token>``: ``kind="segment"`` and
  ``payload``: exact JSON text of its nodes as columns, its edges and removals
  (`Segment`; the layout written before, an object per node, is read too).

A save writes one new segment with what changed. Segments merge by size tier
(`plan_save`): a conversation has O(log n) segments and a save costs O(1)
records plus an amortized O(log n) nodes, base 8. JSON *text* fields make every round
trip exact on every backend (NUL, NaN, -0.0, big ints, key order).
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any, TypeVar, cast
from urllib.parse import quote, unquote

from pydantic import AwareDatetime, TypeAdapter, ValidationError

from .._json import copy_json, format_error_from_validation, gc_paused, json_text
from ..changes import ChangeSet, SavedRevision
from ..errors import (
    DamagedRecordError,
    FormatError,
    NodeNotFoundError,
    SchemaVersionError,
    StorageError,
)
from ..format import (
    CURRENT_SCHEMA_VERSION,
    DocumentEnvelope,
    DocumentFields,
    ParsedDocument,
    assemble_document,
    duplicate_node,
    node_from_record,
    parse_document,
    validate_node_records,
)
from ..message import MessageRecord
from ..migrations import upgrade_document
from ..node import ConversationNode
from ..state import ConversationState
from .base import ConversationSummary
from .records import decode_json, json_type

_T = TypeVar("_T")

__all__ = [
    "MAX_RECORD_ID_LENGTH",
    "PREVIEW_LENGTH",
    "REPAIR_HINT",
    "SEGMENT_LAYOUT",
    "Head",
    "SavePlan",
    "Segment",
    "build_nodes",
    "conversation_of",
    "damaged_error",
    "fold_records",
    "merged_tail",
    "parse_head",
    "parse_segment",
    "plan_save",
    "record_id",
    "segment_revision",
    "state_from_records",
]

MAX_RECORD_ID_LENGTH = 180
"""Longest encoded conversation id (file names stop at 255 bytes)."""

PREVIEW_LENGTH = 200
"""Characters kept of the first user message and the last message in a summary."""


def record_id(conversation_id: object) -> str:
    """The storage key of a conversation: safe as a file name, S3 key and SQL value.

    Everything but ``A-Z a-z 0-9 _ -`` is percent-encoded, so ``../x``, ``/``,
    NUL or ``~`` cannot leave the store's directory or prefix, nor collide with
    a segment key.

    Raises:
        StorageError: the id is not a non-empty string, or too long once encoded.
    """
    if not isinstance(conversation_id, str) or not conversation_id:
        raise StorageError(f"a conversation id is a non-empty string, got {conversation_id!r}")
    encoded = quote(conversation_id, safe="").replace(".", "%2E").replace("~", "%7E")
    if len(encoded) > MAX_RECORD_ID_LENGTH:
        raise StorageError(
            f"conversation id {conversation_id[:40]!r}... is too long to store "
            f"({len(encoded)} characters encoded, at most {MAX_RECORD_ID_LENGTH})"
        )
    return encoded


REPAIR_HINT = (
    "nothing was changed; delete it (delete_conversation), replace it "
    "(save_conversation(..., overwrite=True)), or set it aside with `convtree check --repair`"
)
"""What a `DamagedRecordError` from the storage suggests doing."""

SUMMARY_FIELDS = {
    "node_count": int,
    "message_count": int,
    "leaf_count": int,
    "first_user_message": str,
    "last_message": str,
    "last_role": str,
}
_COUNTS = ("node_count", "message_count", "leaf_count")


def conversation_of(key: str) -> str:
    """The conversation id a record key belongs to (a head key, or ``<head key>~...``)."""
    return unquote(key.split("~", 1)[0])


def segment_revision(key: str) -> int | None:
    """The revision a segment key was written for (``<head key>~<revision>-<token>``)."""
    _, sep, rest = key.partition("~")
    number = rest.split("-", 1)[0]
    if not sep or not number.isdigit() or not number.isascii():
        return None
    return int(number)


def damaged_error(
    store: str, key: str, problem: str, *, cid: str | None = None, what: str | None = None
) -> DamagedRecordError:
    """The one error for a damaged record of a conversation: names the conversation,
    the record key and what is wrong."""
    cid = conversation_of(key) if cid is None else cid
    what = what or ("segment record" if "~" in key else "head record")
    return DamagedRecordError(
        f"conversation {cid!r} in {store}: its {what} {key!r} is damaged: {problem}; "
        + REPAIR_HINT,
        conversation_id=cid,
        key=key,
        problem=problem,
    )


def as_damaged(
    exc: DamagedRecordError, store: str, key: str, cid: str | None = None
) -> DamagedRecordError:
    """A record store's `DamagedRecordError` restated for the conversation it belongs to."""
    return damaged_error(store, exc.key or key, exc.problem, cid=cid)


class _Bad(Exception):
    """A problem found while checking a record (becomes a DamagedRecordError)."""


def _field(record: Mapping[str, Any], name: str, kind: type, where: str = "field") -> Any:
    """``record[name]``, which must be of JSON type ``kind`` (a bool is no integer)."""
    if name not in record:
        raise _Bad(f"{where} {name!r} is missing")
    value = record[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _Bad(
            f"{where} {name!r} is {json_type(value)} ({_short(value)}), not {json_type(kind())}"
        )
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "\u2026"


def _stamp(value: str, where: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise _Bad(f"{where} is {_short(value)}, not an ISO date-time") from None
    if stamp.utcoffset() is None:
        raise _Bad(f"{where} is {_short(value)}, a date-time without a time zone")
    return stamp


@dataclass(frozen=True)
class Head:
    """A parsed head record."""

    key: str
    conversation_id: str
    revision: SavedRevision
    segments: tuple[tuple[str, int], ...]  # (key, size), oldest first
    document: dict[str, Any]  # the document's top-level fields
    summary: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    def summary_row(self) -> ConversationSummary:
        """The list-page row of this conversation."""
        return ConversationSummary(
            conversation_id=self.conversation_id,
            metadata=self.document["metadata"],
            created_at=self.created_at,
            updated_at=self.updated_at,
            revision=self.revision.number,
            **self.summary,
        )


def parse_head(record: Any, store: str, key: str) -> Head:
    """Parse the head record stored under ``key`` in ``store``, checking every field.

    Raises:
        DamagedRecordError: the record is not a head exactly as convtree writes
            it; the message names the conversation, the key and what is wrong.
    """
    try:
        return _parse_head(record, store, key)
    except _Bad as exc:
        raise damaged_error(store, key, str(exc)) from None


def _parse_head(record: Any, store: str, key: str) -> Head:
    if not isinstance(record, dict):
        raise _Bad(f"it is {json_type(record)}, not a JSON object")
    if record.get("kind") != "head":
        _field(record, "kind", str)
        raise _Bad(f"field 'kind' is {_short(record['kind'])}, not 'head'")
    if _field(record, "key", str) != key:
        raise _Bad(f"field 'key' is {_short(record['key'])}, not {key!r}")
    number = _field(record, "revision", int)
    for name in ("created_at", "updated_at"):  # copies for searches: the document's count
        _field(record, name, str)
    _field(record, "meta", dict)
    try:
        doc = decode_json(_field(record, "head", str))
    except ValueError as exc:
        raise _Bad(f"its head text is {exc}") from None
    if not isinstance(doc, dict):
        raise _Bad(f"its head text is {json_type(doc)}, not a JSON object")
    storage = _field(doc, "storage", dict, "head text field")
    summary = _field(doc, "summary", dict, "head text field")
    doc.pop("storage")
    doc.pop("summary")
    stored = _field(storage, "revision", int, "storage field")
    if stored != number:
        raise _Bad(f"its head text is at revision {stored}, the record at revision {number}")
    marks = [
        _field(storage, name, int, "storage field") if name in storage else number
        for name in ("last_destructive", "metadata_revision")
    ]
    segments = []
    for i, entry in enumerate(_field(storage, "segments", list, "storage field")):
        where = f"storage.segments[{i}]"
        if not isinstance(entry, dict):
            raise _Bad(f"{where} is {json_type(entry)}, not an object")
        segment_key = _field(entry, "id", str, f"{where} field")
        if not segment_key.startswith(key + "~"):
            raise _Bad(f"{where} names {_short(segment_key)}, not a segment of this conversation")
        segments.append((segment_key, _field(entry, "size", int, f"{where} field")))
    row = {}
    for name, kind in SUMMARY_FIELDS.items():
        if name in _COUNTS or summary.get(name) is not None:
            row[name] = _field(summary, name, kind, "summary field")
        else:
            row[name] = None
    cid = _field(doc, "conversation_id", str, "head text field")
    if (cid != key or "%" in key) and record_id_or_none(cid) != key:
        raise _Bad(f"its head text names conversation {_short(cid)}, stored under another key")
    created = _stamp(_field(doc, "created_at", str, "head text field"), "head text created_at")
    updated = _stamp(_field(doc, "updated_at", str, "head text field"), "head text updated_at")
    _field(doc, "metadata", dict, "head text field")
    token = record.get("token")
    if token is not None and not (isinstance(token, str) and _TOKEN.fullmatch(token)):
        what = _short(token) if isinstance(token, str) else f"{json_type(token)} ({_short(token)})"
        raise _Bad(f"field 'token' is {what}, not the hexadecimal token convtree writes")
    revision = SavedRevision(store, number, marks[0], marks[1], token)
    return Head(key, cid, revision, tuple(segments), doc, row, created, updated)


_TOKEN = re.compile(r"[0-9a-f]{1,64}")
"""A head's token as convtree writes it (``secrets.token_hex``), with room to grow."""


def record_id_or_none(conversation_id: object) -> str | None:
    """`record_id()`, or ``None`` for an id that cannot be stored."""
    try:
        return record_id(conversation_id)
    except StorageError:
        return None


SEGMENT_LAYOUT = 2
"""The layout of the segment payloads this version writes (see `Segment`)."""

_PLAIN_FIELDS = frozenset(("node_id", "message", "timestamp", "metadata"))


@dataclass(slots=True)
class Segment:
    """A segment's payload as columns: one entry per node record in each list.

    Layout 2 (`SEGMENT_LAYOUT`, written since convtree 0.x unreleased) is the JSON text of
    ``{"layout": 2, "ids": [...], "stamps": [...], "roles": [...], "contents": [...],
    "records": [...], "edges": [[parent, child], ...], "removed": [...]}``. A *plain*
    node (a text message, or none for the root; no metadata, branch or prompt name or
    unknown field) is its id, timestamp text, role and content (a ``null`` role: no
    message) with a ``null`` record; any other node is its whole record in ``records``,
    with ``null`` stamp, role and content. Decoding columns of strings is about three
    times faster than an object per node, and a plain node is built from them without
    validating a record: a load, and above all a path load that builds a few of the
    nodes, no longer pays for every node's record.

    Layout 1 (the payloads written before) is ``{"nodes": [records], "edges": [...],
    "removed": [...]}``: it is read as a segment whose nodes are all records.
    """

    ids: list[str]
    stamps: list[Any]
    roles: list[Any]
    contents: list[Any]
    records: list[Any]
    edges: list[list[str]]
    removed: list[str]

    @classmethod
    def of_records(
        cls,
        nodes: Sequence[Mapping[str, Any]],
        edges: Sequence[Sequence[str]],
        removed: Sequence[str],
    ) -> Segment:
        """The segment of node records (as `ConversationNode.to_dict` gives them)."""
        ids: list[str] = []
        stamps: list[Any] = []
        roles: list[Any] = []
        contents: list[Any] = []
        records: list[Any] = []
        for record in nodes:
            ids.append(record["node_id"])
            message = record.get("message")
            stamp = record.get("timestamp")
            metadata = record.get("metadata", _NO_METADATA)
            if (
                type(stamp) is str
                and _PLAIN_FIELDS.issuperset(record)
                and (metadata is _NO_METADATA or (type(metadata) is dict and not metadata))
                and (
                    message is None
                    or (
                        type(message) is dict
                        and len(message) == 2
                        and type(role := message.get("role")) is str
                        and role
                        and type(content := message.get("content")) is str
                    )
                )
            ):
                stamps.append(stamp)
                if message is None:
                    roles.append(None)
                    contents.append(None)
                else:
                    roles.append(role)
                    contents.append(content)
                records.append(None)
            else:
                stamps.append(None)
                roles.append(None)
                contents.append(None)
                records.append(record)
        return cls(ids, stamps, roles, contents, records, [list(e) for e in edges], list(removed))

    def payload(self) -> str:
        """The payload text of the segment (layout 2)."""
        return json_text(
            {
                "layout": SEGMENT_LAYOUT,
                "ids": self.ids,
                "stamps": self.stamps,
                "roles": self.roles,
                "contents": self.contents,
                "records": self.records,
                "edges": self.edges,
                "removed": self.removed,
            }
        )

    def record(self, i: int) -> dict[str, Any]:
        """The record of node ``i`` (what a document's ``nodes`` holds)."""
        record = self.records[i]
        if record is not None:
            return dict(record)
        role = self.roles[i]
        return {
            "node_id": self.ids[i],
            "message": None if role is None else {"role": role, "content": self.contents[i]},
            "timestamp": self.stamps[i],
            "metadata": {},
        }

    def node_records(self) -> list[dict[str, Any]]:
        """Every node's record, in order."""
        return [self.record(i) for i in range(len(self.ids))]


_NO_METADATA: Any = object()
_COLUMNS = ("stamps", "roles", "contents", "records")


def parse_segment(
    record: Any, store: str, cid: str, key: str, *, head: Head | None = None
) -> Segment:
    """Parse the segment record stored under ``key`` (``None``: it is missing).

    What a fold needs is checked here (ids, edges, removals, and that each node is
    either plain or a record); a node's values are checked when it is built.

    Raises:
        DamagedRecordError: the segment is missing or not as convtree writes it.
    """
    try:
        return _parse_segment(record, head)
    except _Bad as exc:
        raise damaged_error(store, key, str(exc), cid=cid) from None


def _parse_segment(record: Any, head: Head | None) -> Segment:
    if record is None:
        listed = f"head revision {head.revision.number} lists it" if head else "it is listed"
        raise _Bad(f"it is missing ({listed})")
    if not isinstance(record, dict):
        raise _Bad(f"it is {json_type(record)}, not a JSON object")
    if record.get("kind") != "segment":
        _field(record, "kind", str)
        raise _Bad(f"field 'kind' is {_short(record['kind'])}, not 'segment'")
    try:
        payload = decode_json(_field(record, "payload", str))
    except ValueError as exc:
        raise _Bad(f"its payload is {exc}") from None
    if not isinstance(payload, dict):
        raise _Bad(f"its payload is {json_type(payload)}, not a JSON object")
    layout = payload.get("layout")
    if layout is None:
        segment = _rows(payload)
    elif layout == SEGMENT_LAYOUT and type(layout) is int:
        segment = _columns(payload)
    else:
        raise _Bad(
            f"its payload layout is {_short(layout)}; this convtree reads layouts 1 and "
            f"{SEGMENT_LAYOUT} (a newer convtree wrote it? upgrade convtree)"
        )
    bad = (
        None
        if _pairs_of_text(segment.edges)
        else next(
            i
            for i, edge in enumerate(segment.edges)
            if not (
                isinstance(edge, list)
                and len(edge) == 2
                and isinstance(edge[0], str)
                and isinstance(edge[1], str)
            )
        )
    )
    if bad is not None:
        raise _Bad(
            f"payload edges[{bad}] is {_short(segment.edges[bad])}, not [parent id, child id]"
        )
    removed = segment.removed
    if not (isinstance(removed, list) and all(isinstance(r, str) for r in removed)):
        raise _Bad(f"payload removed is {_short(removed)}, not a list of node ids")
    return segment


def _pairs_of_text(edges: list[Any]) -> bool:
    """Whether every edge is a list of two strings (checked at C speed)."""
    if not edges:
        return True
    if set(map(type, edges)) != {list} or set(map(len, edges)) != {2}:
        return False
    try:
        "".join(itertools.chain.from_iterable(edges))
    except TypeError:
        return False
    return True


def _rows(payload: dict[str, Any]) -> Segment:
    """A layout-1 payload: ``{"nodes": [records], "edges": [...], "removed": [...]}``."""
    nodes = _field(payload, "nodes", list, "payload field")
    bad = next(
        (
            i
            for i, node in enumerate(nodes)
            if not (isinstance(node, dict) and isinstance(node.get("node_id"), str))
        ),
        None,
    )
    if bad is not None:
        if not isinstance(nodes[bad], dict):
            raise _Bad(f"payload nodes[{bad}] is {json_type(nodes[bad])}, not an object")
        _field(nodes[bad], "node_id", str, f"payload nodes[{bad}] field")
    edges = _field(payload, "edges", list, "payload field")
    none = [None] * len(nodes)
    return Segment(
        [node["node_id"] for node in nodes],
        none,
        none,
        none,
        nodes,
        edges,
        [] if payload.get("removed") is None else payload["removed"],
    )


def _columns(payload: dict[str, Any]) -> Segment:
    """A layout-2 payload (see `Segment`)."""
    ids = _field(payload, "ids", list, "payload field")
    columns = [_field(payload, name, list, "payload field") for name in _COLUMNS]
    for name, column in zip(_COLUMNS, columns, strict=True):
        if len(column) != len(ids):
            raise _Bad(f"payload {name} holds {len(column)} entries, its ids {len(ids)}")
    try:
        "".join(ids)  # every id a string (the loop below, at C speed)
    except TypeError:
        bad = next(i for i, node_id in enumerate(ids) if type(node_id) is not str)
        raise _Bad(f"payload ids[{bad}] is {json_type(ids[bad])}, not a node id") from None
    records = columns[3]
    for i, node in enumerate(() if records.count(None) == len(records) else records):
        if node is None:
            continue
        if type(node) is not dict:
            raise _Bad(f"payload records[{i}] is {json_type(node)}, not an object or null")
        if node.get("node_id") != ids[i]:
            raise _Bad(
                f"payload records[{i}] is node {_short(node.get('node_id'))}, "
                f"its ids[{i}] is {ids[i]!r}"
            )
    edges = _field(payload, "edges", list, "payload field")
    removed = payload.get("removed")
    stamps, roles, contents, records = columns
    return Segment(ids, stamps, roles, contents, records, edges, [] if removed is None else removed)


class DuplicateNode(Exception):
    """Segment ``segments[position]`` of a `fold` holds node ``node_id`` twice."""

    def __init__(self, position: int, node_id: str) -> None:
        super().__init__(position, node_id)
        self.position = position
        self.problem = f"its payload holds node {node_id!r} twice"


def fold(segments: Sequence[Segment], *, drop_tombstones: bool) -> tuple[Segment, dict[str, int]]:
    """Merge segments, oldest first: later records win (in the place of the first),
    removals apply before additions. Returns the merged segment and each node's index
    in it.

    Raises:
        DuplicateNode: a segment holds a node twice (convtree never writes one).
    """
    ids: list[str] = []
    stamps: list[Any] = []
    roles: list[Any] = []
    contents: list[Any] = []
    records: list[Any] = []
    at: dict[str, int] = {}
    edges: list[list[str]] = []
    pending: set[str] = set()  # removals of nodes in older segments than these
    dead: set[int] = set()
    for position, segment in enumerate(segments):
        if segment.removed:
            gone = set(segment.removed)
            for node_id in gone:
                j = at.pop(node_id, None)
                if j is None:
                    pending.add(node_id)
                else:
                    dead.add(j)
            edges = [e for e in edges if e[1] not in gone]
        if at.keys().isdisjoint(segment.ids):  # new nodes only: the usual case
            known = len(at)
            at.update(zip(segment.ids, range(len(ids), len(ids) + len(segment.ids)), strict=True))
            if len(at) != known + len(segment.ids):
                seen: set[str] = set()
                for node_id in segment.ids:
                    if node_id in seen:
                        raise DuplicateNode(position, node_id)
                    seen.add(node_id)
            ids += segment.ids
            stamps += segment.stamps
            roles += segment.roles
            contents += segment.contents
            records += segment.records
        else:
            for i, node_id in enumerate(segment.ids):
                j = at.get(node_id)
                if j is None:
                    at[node_id] = len(ids)
                    ids.append(node_id)
                    stamps.append(segment.stamps[i])
                    roles.append(segment.roles[i])
                    contents.append(segment.contents[i])
                    records.append(segment.records[i])
                else:
                    stamps[j] = segment.stamps[i]
                    roles[j] = segment.roles[i]
                    contents[j] = segment.contents[i]
                    records[j] = segment.records[i]
        edges.extend(segment.edges)
    removed = [] if drop_tombstones else sorted(pending)
    if dead:
        keep = [j for j in range(len(ids)) if j not in dead]
        ids, stamps, roles, contents, records = (
            [column[j] for j in keep] for column in (ids, stamps, roles, contents, records)
        )
        at = {node_id: j for j, node_id in enumerate(ids)}
    return Segment(ids, stamps, roles, contents, records, edges, removed), at


_STAMPS = TypeAdapter(list[AwareDatetime])  # text only, checked first (a number is refused)


def build_nodes(
    segment: Segment, picks: Sequence[int]
) -> tuple[dict[str, ConversationNode], dict[str, int], list[str]]:
    """Build nodes ``picks`` of ``segment`` as `parse_document` builds a document's nodes
    (``picks[k]`` is ``nodes[k]`` of the document they make): the nodes, each one's index
    in that document, and the ids of those without a message.

    A plain node's values are checked here; a record is validated as a document's.

    Raises:
        FormatError: a node is not valid, naming ``nodes[k]`` and the node id.
    """
    node_ids = list(map(segment.ids.__getitem__, picks))
    records = list(map(segment.records.__getitem__, picks))
    stamps = list(map(segment.stamps.__getitem__, picks))
    index_of = dict(zip(node_ids, range(len(node_ids)), strict=True))
    if len(index_of) != len(node_ids):
        first: dict[str, int] = {}
        for k, node_id in enumerate(node_ids):
            if node_id in first:
                raise duplicate_node(node_id, first[node_id], k)
            first[node_id] = k
    everything_plain = records.count(None) == len(records)
    plain = (
        range(len(picks)) if everything_plain else [k for k, r in enumerate(records) if r is None]
    )
    texts = stamps if everything_plain else [stamps[k] for k in plain]
    try:
        "".join(texts)  # each one text (a number would be read as a Unix time)
        times = _STAMPS.validate_python(texts)
    except (TypeError, ValidationError):
        k = next(k for k in plain if type(stamps[k]) is not str or not _valid_stamp(stamps[k]))
        what = (
            f"not {json_type(stamps[k])}"
            if type(stamps[k]) is not str
            else "not " + _short(stamps[k])
        )
        raise FormatError(
            f"invalid conversation document: a timestamp is ISO 8601 text with an offset, {what}",
            path=f"nodes[{k}].timestamp",
            node_id=node_ids[k],
        ) from None
    rich = {} if everything_plain else {k: r for k, r in enumerate(records) if r is not None}
    validated = validate_node_records(rich, node_ids.__getitem__) if rich else {}
    roles = map(segment.roles.__getitem__, picks)
    contents = map(segment.contents.__getitem__, picks)
    nodes: dict[str, ConversationNode] = {}
    without_message: list[str] = []
    make = ConversationNode._from_record
    next_time = iter(times).__next__
    message: MessageRecord | None
    for k, node_id, role, content, record in zip(
        itertools.count(), node_ids, roles, contents, records
    ):
        if record is not None:
            node = nodes[node_id] = node_from_record(validated[k], k)
            if node._message is None:
                without_message.append(node_id)
            continue
        if type(role) is str and role and type(content) is str:
            message = {"role": role, "content": content}
        elif role is None and content is None:
            message = None
            without_message.append(node_id)
        else:
            raise FormatError(
                f"invalid conversation document: role {_short(role)} and content "
                f"{_short(content)} are not a text message",
                path=f"nodes[{k}].message",
                node_id=node_id,
            )
        nodes[node_id] = make(node_id, message, next_time(), None, None, None, None)
    return nodes, index_of, without_message


def _valid_stamp(text: str) -> bool:
    try:
        _STAMPS.validate_python([text])
    except ValidationError:
        return False
    return True


def state_from_records(
    head: Head, segments: Sequence[dict[str, Any] | None], store: str
) -> ConversationState:
    """Load a conversation from its head and segment records (as read, in the head's order).

    Raises:
        StorageError: a segment is missing or unreadable, or the document is invalid.
        SchemaVersionError: a newer major version ("upgrade convtree to read it").
    """
    with gc_paused():  # what _state decoded is freed when it returns, see below
        state = _state(head, segments, store)
    state.mark_saved(head.revision)
    return state


def _state(head: Head, segments: Sequence[dict[str, Any] | None], store: str) -> ConversationState:
    # Called with the collector paused: the decoded records die with this frame,
    # before it runs again, so the collection the allocations made due walks only
    # what was built, not the decoded records as well (a sixth of a load).
    parsed, (folded, _) = fold_records(head, segments, store)
    picks = range(len(folded.ids))
    document = _document(head, head.document, parsed, folded, picks, folded.edges, store)
    return ConversationState.from_parsed(document)


def _document(
    head: Head,
    fields: dict[str, Any],
    parsed: Sequence[Segment],
    folded: Segment,
    picks: Sequence[int],
    edges: list[list[str]],
    store: str,
) -> ParsedDocument:
    """The document of the document ``fields`` with nodes ``picks`` of ``folded`` and
    ``edges``, parsed with every check of `parse_document` (errors name the record).

    A current version is assembled from the columns; an older one is written out whole
    and migrated first.
    """
    if fields.get("schema_version") != CURRENT_SCHEMA_VERSION:
        doc = {**fields, "nodes": [folded.record(i) for i in picks], "edges": edges}
        return _load_document(head, doc, parsed, store, _parse_whole)

    def load(doc: dict[str, Any]) -> ParsedDocument:
        return assemble_document(_envelope(doc), *build_nodes(folded, picks), edges)

    return _load_document(head, fields, parsed, store, load)


def _envelope(doc: Mapping[str, Any]) -> DocumentFields:
    """The document's fields but nodes and edges, validated as in `parse_document`."""
    try:
        return cast(DocumentFields, DocumentEnvelope.model_validate(doc))
    except ValidationError as exc:
        raise format_error_from_validation(exc, what="conversation document", data=doc) from None


def path_from_records(
    head: Head,
    segments: Sequence[dict[str, Any] | None],
    store: str,
    ref: str | None = None,
) -> list[ConversationNode]:
    """The path from the root to the cursor (or to node ``ref``), built from records.

    Only the path's nodes are built and checked: they are loaded as a conversation of
    their own (a chain, with every check of a full load).

    Raises:
        NodeNotFoundError: ``ref`` names no node.
        DamagedRecordError: a record cannot be read, or the path is not valid.
        SchemaVersionError: a newer major version ("upgrade convtree to read it").
    """
    with gc_paused():  # its temporaries are freed inside, as in state_from_records
        return _path(head, segments, store, ref)


def _path(
    head: Head, segments: Sequence[dict[str, Any] | None], store: str, ref: str | None
) -> list[ConversationNode]:
    cid = head.conversation_id
    parsed, (folded, at) = fold_records(head, segments, store)
    parent = dict(
        zip(map(itemgetter(1), folded.edges), map(itemgetter(0), folded.edges), strict=True)
    )
    target = head.document.get("current_node_id") if ref is None else ref
    if not isinstance(target, str) or target not in at:
        if ref is not None:
            raise NodeNotFoundError(f"no node {ref!r} in conversation {cid!r} in {store}", ref=ref)
        raise damaged_error(store, head.key, f"its cursor {target!r} names no node", cid=cid)
    path = [target]
    up = parent.get
    node_id: str | None = target
    for _ in range(len(at)):  # at most one step per node: a loop stops here
        node_id = up(node_id)
        if node_id is None:
            break
        path.append(node_id)
    path.reverse()
    doc = {k: v for k, v in head.document.items() if k != "active_children"}
    doc["current_node_id"] = target
    edges = list(map(list, itertools.pairwise(path)))
    picks = [at[node_id] for node_id in path if node_id in at]
    # The path is a chain in path order: its checks are those of a full load.
    return list(_document(head, doc, parsed, folded, picks, edges, store).nodes.values())


def _parse_whole(doc: Mapping[str, Any]) -> ParsedDocument:
    return parse_document(upgrade_document(doc))


def fold_records(
    head: Head, segments: Sequence[dict[str, Any] | None], store: str
) -> tuple[list[Segment], tuple[Segment, dict[str, int]]]:
    """The segments of ``head`` parsed (in the head's order), and their `fold`.

    Raises:
        DamagedRecordError: a segment is missing or not as convtree writes it.
    """
    with gc_paused():
        parsed = [
            parse_segment(record, store, head.conversation_id, key, head=head)
            for (key, _), record in zip(head.segments, segments, strict=True)
        ]
        try:
            return parsed, fold(parsed, drop_tombstones=True)
        except DuplicateNode as exc:
            key = head.segments[exc.position][0]
            raise damaged_error(store, key, exc.problem, cid=head.conversation_id) from None


def _load_document(
    head: Head,
    doc: dict[str, Any],
    parsed: Sequence[Segment],
    store: str,
    load: Callable[[dict[str, Any]], _T],
) -> _T:
    """``load(doc)``, its errors naming the conversation and the record at fault."""
    cid = head.conversation_id
    try:
        return load(doc)
    except SchemaVersionError as exc:
        raise SchemaVersionError(
            f"conversation {cid!r} in {store}: {exc}; upgrade convtree to read it"
        ) from None
    except (FormatError, TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        # Name the segment that holds the node at fault (the newest copy of it).
        node_id = getattr(exc, "node_id", None)
        key = head.key
        for (segment_key, _), segment in reversed(list(zip(head.segments, parsed, strict=True))):
            if node_id in segment.ids:
                key = segment_key
                break
        raise damaged_error(
            store, key, f"its nodes do not form a valid conversation: {exc}", cid=cid
        ) from None


@dataclass(frozen=True)
class SavePlan:
    """How to write a change set on top of a head: what to read first, then what to write.

    A store reads `absorb` (older segments the new one swallows), then
    calls `records()` to get the records to commit.
    """

    changes: ChangeSet
    key: str
    head: Head | None
    revision: int
    keep: tuple[tuple[str, int], ...]  # older segments the new head still lists
    absorb: tuple[str, ...]  # older segments merged into the new one (read them first)
    obsolete: tuple[str, ...]  # segments to delete once the head is written

    @property
    def expect(self) -> int | None:
        """The revision the stored head must be at for the commit (``None``: no head)."""
        return None if self.head is None else self.head.revision.number

    def records(
        self, state: ConversationState, store: str, absorbed: Sequence[dict[str, Any] | None]
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], SavedRevision, Head]:
        """The new head record, the new segment (by key), the revision they make, and the
        head as `parse_head` would read it back (without parsing it)."""
        changes = self.changes
        new = Segment.of_records(changes.nodes, changes.edges, changes.removed)
        if self.absorb:
            older = [
                parse_segment(record, store, changes.conversation_id, key, head=self.head)
                for key, record in zip(self.absorb, absorbed, strict=True)
            ]
            try:
                new, _ = fold([*older, new], drop_tombstones=not self.keep)
            except DuplicateNode as exc:
                if exc.position == len(older):  # pragma: no cover - a change set's nodes differ
                    raise
                key = self.absorb[exc.position]
                raise damaged_error(store, key, exc.problem, cid=changes.conversation_id) from None
        segment_key = f"{self.key}~{self.revision}-{secrets.token_hex(4)}"
        segments = [*self.keep, (segment_key, _size(new.ids, new.removed))]
        saved = replace(changes.saved_as(store, self.revision), token=secrets.token_hex(6))
        head_doc = dict(changes.head)
        head_doc["storage"] = {
            "revision": saved.number,
            "segments": [{"id": k, "size": n} for k, n in segments],
            "last_destructive": saved.destructive_at,
            "metadata_revision": saved.metadata_at,
        }
        summary = summarize(state)
        head_doc["summary"] = summary
        head_text = json_text(head_doc)
        head = {
            "kind": "head",
            "key": self.key,
            "revision": saved.number,
            "token": saved.token,
            "created_at": _utc_text(state.created_at),
            "updated_at": _utc_text(state.updated_at),
            "meta": _storable(copy_json(state.metadata, "metadata")),
            "head": head_text,
        }
        segment = {"kind": "segment", "payload": new.payload()}
        document = decode_json(head_text)  # what a read of the head gives back
        del document["storage"], document["summary"]
        parsed = Head(
            self.key,
            changes.conversation_id,
            saved,
            tuple(segments),
            document,
            summary,
            state.created_at,
            state.updated_at,
        )
        return head, {segment_key: segment}, saved, parsed


def plan_save(changes: ChangeSet, key: str, head: Head | None) -> SavePlan:
    """Plan writing ``changes`` over the stored ``head`` (``None``: not stored).

    ``changes`` must be based on ``head``'s revision, or be full.

    Segments merge by size tier (tier ``t`` holds sizes ``8**t`` to ``8**(t+1) - 1``),
    as in a size-tiered LSM tree: the new segment absorbs the tail segments of a
    smaller tier, and the run of tail segments of its own tier once that run and it
    make `MERGE_FANOUT`; the merged segment may then climb a tier and merge again.
    Tiers never grow towards the newest segment, so a conversation has at most
    ``7 * (log8(n) + 1)`` segments (never more than 29 over 10,000 single-message
    saves) and a node is written about ``log8(n)`` times over its life (4.3 times
    on average over those saves, against 8.7 for the binary counter merged
    before, which kept at most 9 segments). The rewrites are what a backend
    without in-place reuse (PostgreSQL until a vacuum) keeps as dead space.
    """
    if head is None:
        return SavePlan(changes, key, None, 1, (), (), ())
    revision = head.revision.number + 1
    old = head.segments
    if changes.full:
        return SavePlan(changes, key, head, revision, (), (), tuple(k for k, _ in old))
    taken = merged_tail([n for _, n in old], _size(changes.nodes, changes.removed))
    keep, absorb = old[: len(old) - taken], tuple(k for k, _ in old[len(old) - taken :])
    return SavePlan(changes, key, head, revision, keep, absorb, absorb)


def merged_tail(sizes: Sequence[int], size: int) -> int:
    """How many of the newest segments (``sizes``, oldest first) a new segment of ``size``
    absorbs (see `plan_save`)."""
    taken = 0  # a merged segment's size counts the one of it, not one per part
    while taken < len(sizes):
        tier = _tier(size)
        if _tier(sizes[-1 - taken]) < tier:  # a smaller tail segment: always absorbed
            size += sizes[-1 - taken] - 1
            taken += 1
            continue
        run = 0  # the tail segments of the new one's tier
        while taken + run < len(sizes) and _tier(sizes[-1 - taken - run]) == tier:
            run += 1
        if run + 1 < MERGE_FANOUT:
            break
        size += sum(sizes[len(sizes) - taken - run : len(sizes) - taken]) - run
        taken += run
    return taken


MERGE_FANOUT = 8
"""Segments of one size tier that are merged into one (see `plan_save`)."""


def _tier(size: int) -> int:
    """A segment's size tier: ``floor(log(size, MERGE_FANOUT))``."""
    tier = 0
    while size >= MERGE_FANOUT:
        size //= MERGE_FANOUT
        tier += 1
    return tier


def _size(nodes: Sequence[Any], removed: Sequence[Any]) -> int:
    """A segment's size for the tiered merge: its records, plus one."""
    return len(nodes) + len(removed) + 1


def summarize(state: ConversationState) -> dict[str, Any]:
    """The summary fields of a conversation (O(1) after appends)."""
    path = state.path_summary()
    cursor = state.current_node
    # `text` and `role` read without handing the messages out: nothing here changes them.
    first = path.first_user
    first_text = None if first is None else first.text
    return {
        "node_count": len(state),
        "message_count": path.message_count,
        "leaf_count": state.leaf_count,
        "first_user_message": None if first_text is None else _preview(first_text),
        "last_message": _preview(cursor.text),
        "last_role": cursor.role,
    }


def _utc_text(stamp: datetime) -> str:
    return stamp.astimezone(timezone.utc).isoformat()


def _storable(value: Any) -> Any:
    """The metadata projection every backend can store (NaN, inf and NUL become None)."""
    if isinstance(value, str):
        return None if "\x00" in value else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items() if "\x00" not in k}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _preview(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_LENGTH else text[: PREVIEW_LENGTH - 1] + "\u2026"
