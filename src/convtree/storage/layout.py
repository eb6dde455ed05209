"""The stored layout: a state or a change set as records, and records back as a state.

No I/O happens here. Each conversation is one **head** record plus a few
immutable **segment** records (see docs/storage.md):

* head, key ``record_id(cid)``: ``kind="head"``, ``key``, ``revision``,
  ``created_at``/``updated_at`` (UTC ISO text), ``meta`` (the metadata made
  storable everywhere, used only to narrow searches), and ``head``: exact JSON
  text of the document's top-level fields, the segment list, the revision
  history the merge rules need, and the summary list pages show;
* segment, key ``<head key>~<revision>-<token>``: ``kind="segment"`` and
  ``payload``: exact JSON text of ``{"nodes": [...], "edges": [...], "removed": [...]}``.

A save writes one new segment with what changed. Segments merge like a binary
counter: a new segment absorbs the older tail segments no larger than twice
its size, so a conversation has O(log n) segments and a save costs O(1)
records plus an amortized O(log n) nodes. JSON *text* fields make every round
trip exact on every backend (NUL, NaN, -0.0, big ints, key order).
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from .._json import copy_json, json_text
from ..changes import ChangeSet, SavedRevision
from ..errors import FormatError, SchemaVersionError, StorageError
from ..state import ConversationState
from .base import ConversationSummary

__all__ = [
    "MAX_RECORD_ID_LENGTH",
    "PREVIEW_LENGTH",
    "Head",
    "SavePlan",
    "parse_head",
    "parse_segment",
    "plan_save",
    "record_id",
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


@dataclass(frozen=True)
class Head:
    """A parsed head record."""

    conversation_id: str
    revision: SavedRevision
    segments: tuple[tuple[str, int], ...]  # (key, size), oldest first
    document: dict[str, Any]  # the document's top-level fields
    summary: dict[str, Any]

    def summary_row(self) -> ConversationSummary:
        """The list-page row of this conversation."""
        doc = self.document
        return ConversationSummary(
            conversation_id=self.conversation_id,
            metadata=doc["metadata"],
            created_at=datetime.fromisoformat(doc["created_at"]),
            updated_at=datetime.fromisoformat(doc["updated_at"]),
            revision=self.revision.number,
            **self.summary,
        )


def parse_head(record: dict[str, Any], store: str, cid: str | None = None) -> Head:
    """Parse a head record of ``store``; ``cid`` names the conversation in errors.

    Raises:
        StorageError: the record is not a readable head ("nothing was changed").
    """
    try:
        if record.get("kind") != "head":
            raise ValueError("not a head record")
        doc: dict[str, Any] = json.loads(record["head"])
        storage = doc.pop("storage")
        summary = doc.pop("summary")
        number = storage["revision"]
        revision = SavedRevision(
            store,
            number,
            storage.get("last_destructive", number),
            storage.get("metadata_revision", number),
        )
        segments = tuple((s["id"], s["size"]) for s in storage["segments"])
        conversation_id = doc["conversation_id"]
        datetime.fromisoformat(doc["created_at"])
        datetime.fromisoformat(doc["updated_at"])
        if not isinstance(doc["metadata"], dict):
            raise TypeError("metadata is not an object")
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        name = cid if cid is not None else record.get("key") if isinstance(record, dict) else None
        raise StorageError(
            f"conversation {name!r} in {store}: its head record is corrupt "
            f"({type(exc).__name__}: {exc}); nothing was changed"
        ) from None
    return Head(conversation_id, revision, segments, doc, summary)


def parse_segment(record: dict[str, Any] | None, store: str, cid: str, key: str) -> dict[str, Any]:
    """Parse a segment record.

    Raises:
        StorageError: the segment is missing or unreadable.
    """
    if record is None:
        raise StorageError(f"conversation {cid!r} in {store}: segment {key!r} is missing")
    try:
        segment: dict[str, Any] = json.loads(record["payload"])
        segment["nodes"], segment["edges"]
    except (TypeError, ValueError, KeyError) as exc:
        raise StorageError(
            f"conversation {cid!r} in {store}: segment {key!r} is corrupt "
            f"({type(exc).__name__}: {exc}); nothing was changed"
        ) from None
    return segment


def fold(segments: Sequence[dict[str, Any]], *, drop_tombstones: bool) -> dict[str, Any]:
    """Merge segments, oldest first: later records win, removals apply before additions."""
    nodes: dict[str, Any] = {}
    edges: list[list[str]] = []
    pending_removed: set[str] = set()
    for segment in segments:
        removed = segment.get("removed") or ()
        if removed:
            gone = set(removed)
            for node_id in gone:
                if nodes.pop(node_id, None) is None:
                    pending_removed.add(node_id)  # lives in an older segment
            edges = [e for e in edges if e[1] not in gone]
        for record in segment["nodes"]:
            nodes[record["node_id"]] = record
        edges.extend(segment["edges"])
    return {
        "nodes": list(nodes.values()),
        "edges": edges,
        "removed": [] if drop_tombstones else sorted(pending_removed),
    }


def state_from_records(
    head: Head, segments: Sequence[dict[str, Any] | None], store: str
) -> ConversationState:
    """Load a conversation from its head and segment records (as read, in the head's order).

    Raises:
        StorageError: a segment is missing or unreadable, or the document is invalid.
        SchemaVersionError: a newer major version ("upgrade convtree to read it").
    """
    cid = head.conversation_id
    parsed = [
        parse_segment(record, store, cid, key)
        for (key, _), record in zip(head.segments, segments, strict=True)
    ]
    folded = fold(parsed, drop_tombstones=True)
    doc = dict(head.document)
    doc["nodes"] = folded["nodes"]
    doc["edges"] = folded["edges"]
    try:
        state = ConversationState.from_dict(doc)
    except SchemaVersionError as exc:
        raise SchemaVersionError(
            f"conversation {cid!r} in {store}: {exc}; upgrade convtree to read it"
        ) from None
    except FormatError as exc:
        raise StorageError(f"conversation {cid!r} in {store} is invalid: {exc}") from exc
    state.mark_saved(head.revision)
    return state


@dataclass(frozen=True)
class SavePlan:
    """How to write a change set on top of a head: what to read first, then what to write.

    A store reads :attr:`absorb` (older segments the new one swallows), then
    calls :meth:`records` to get the records to commit.
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
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], SavedRevision]:
        """The new head, the new segment (by key) and the revision they make."""
        changes = self.changes
        payload: dict[str, Any] = {
            "nodes": list(changes.nodes),
            "edges": [list(e) for e in changes.edges],
            "removed": list(changes.removed),
        }
        if self.absorb:
            older = [
                parse_segment(record, store, changes.conversation_id, key)
                for key, record in zip(self.absorb, absorbed, strict=True)
            ]
            payload = fold([*older, payload], drop_tombstones=not self.keep)
        segment_key = f"{self.key}~{self.revision}-{secrets.token_hex(4)}"
        segments = [*self.keep, (segment_key, _size(payload["nodes"], payload["removed"]))]
        saved = changes.saved_as(store, self.revision)
        head_doc = dict(changes.head)
        head_doc["storage"] = {
            "revision": saved.number,
            "segments": [{"id": k, "size": n} for k, n in segments],
            "last_destructive": saved.destructive_at,
            "metadata_revision": saved.metadata_at,
        }
        head_doc["summary"] = summarize(state)
        head = {
            "kind": "head",
            "key": self.key,
            "revision": saved.number,
            "created_at": _utc_text(state.created_at),
            "updated_at": _utc_text(state.updated_at),
            "meta": _storable(copy_json(state.metadata, "metadata")),
            "head": json_text(head_doc),
        }
        segment = {"kind": "segment", "payload": json_text(payload)}
        return head, {segment_key: segment}, saved


def plan_save(changes: ChangeSet, key: str, head: Head | None) -> SavePlan:
    """Plan writing ``changes`` over the stored ``head`` (``None``: not stored).

    ``changes`` must be based on ``head``'s revision, or be full.
    """
    if head is None:
        return SavePlan(changes, key, None, 1, (), (), ())
    revision = head.revision.number + 1
    old = head.segments
    if changes.full:
        return SavePlan(changes, key, head, revision, (), (), tuple(k for k, _ in old))
    size = _size(changes.nodes, changes.removed)
    keep = list(old)
    absorb: list[str] = []
    while keep and keep[-1][1] <= 2 * size:
        segment_key, segment_size = keep.pop()
        absorb.insert(0, segment_key)
        size += segment_size
    return SavePlan(changes, key, head, revision, tuple(keep), tuple(absorb), tuple(absorb))


def _size(nodes: Sequence[Any], removed: Sequence[Any]) -> int:
    """A segment's size for the binary-counter merge: its records, plus one."""
    return len(nodes) + len(removed) + 1


def summarize(state: ConversationState) -> dict[str, Any]:
    """The summary fields of a conversation (O(1) after appends)."""
    path = state.path_summary()
    cursor = state.current_node
    message = cursor.message if cursor.has_message else None
    first = path.first_user
    first_text = None
    if first is not None and first.message is not None:
        first_text = _preview(str(first.message.text))
    return {
        "node_count": len(state),
        "message_count": path.message_count,
        "leaf_count": state.leaf_count,
        "first_user_message": first_text,
        "last_message": None if message is None else _preview(message.text),
        "last_role": None if message is None else message.role,
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
