"""DataknobsConversationStorage: conversations persisted through any dataknobs-data database.

Stored layout (see docs/storage.md)
-----------------------------------
Each conversation is a small **head** record plus a few immutable **segment**
records, all in one dataknobs-data database:

* head, record id ``<cid>``: ``kind="head"``, ``key`` (the record id), ``revision``,
  ``created_at``/``updated_at`` (UTC ISO text), ``meta`` (the metadata, made
  storable everywhere, used only to narrow searches), and ``head``: exact JSON
  text of the document's top-level fields, the list of segments, and the
  summary (counts, previews) that :meth:`list_summaries` returns.
* segment, record id ``<cid>~<revision>``: ``kind="segment"`` and ``payload``:
  exact JSON text of ``{"nodes": [...], "edges": [...], "removed": [...]}``.

A save writes one segment holding only the nodes added or changed since the
state was loaded (and the ids pruned), then the head. Segments are merged
binary-counter style (a new segment absorbs older tail segments no larger than
twice its size), so a conversation has O(log n) segments, a save costs O(1)
records plus an amortized O(log n) nodes, and a load reads the head and its
segments. JSON text fields make every round trip exact on every backend (NUL,
NaN, -0.0, big ints, key order): no backend's JSON type ever sees the document.

Saves are serialized per conversation by a guard (a lock or a conditional
write, see :mod:`convtree.storage.guards`): the head's revision is compared
under it, so a stale save merges its appends or raises ConflictError.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._json import copy_json
from ..errors import ConflictError, FilterError, FormatError, SchemaVersionError, StorageError
from ..state import ConversationState, _Journal
from .base import ORDER_KEYS, ConversationStorage, ConversationSummary
from .filters import MetadataFilter, check_page
from .guards import Guard, InProcessGuard

if TYPE_CHECKING:
    from dataknobs_data import AsyncDatabase, Record

__all__ = ["MAX_RECORD_ID_LENGTH", "PREVIEW_LENGTH", "DataknobsConversationStorage", "record_id"]

MAX_RECORD_ID_LENGTH = 180
"""Longest encoded conversation id (file names stop at 255 bytes)."""

PREVIEW_LENGTH = 200
"""Characters kept of the first user message and the last message in a summary."""

_MISSING_SEGMENT_RETRIES = 5


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


def _dumps(value: Any) -> str:
    # ASCII-only JSON text: exact for every JSON value Python holds (NaN, -0.0,
    # big ints, lone surrogates) and storable in any backend's text or JSON type.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


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


def _fold(segments: list[dict[str, Any]], *, drop_tombstones: bool) -> dict[str, Any]:
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


class DataknobsConversationStorage(ConversationStorage):
    """The generic adapter: conversations in any dataknobs-data ``AsyncDatabase``.

    Args:
        db: A connected (or connectable) dataknobs-data async database. It may
            hold other records too: convtree's carry a ``kind`` field.
        guard: How saves of one conversation are serialized. The default is an
            in-process lock, right for a database only this process writes;
            :func:`~convtree.open_storage` picks one that also covers other
            processes (a file lock, a PostgreSQL advisory lock, an S3
            conditional write).
        nested_filters: Whether the backend can search nested fields
            (``meta.user_id``). Only narrows candidates; results are the same.
        name: How the store is named in errors and ``repr`` (never a password).
        owns_db: Close ``db`` in :meth:`close`.
    """

    def __init__(
        self,
        db: AsyncDatabase,
        *,
        guard: Guard | None = None,
        nested_filters: bool = True,
        name: str | None = None,
        owns_db: bool = False,
    ) -> None:
        self._db = db
        self._guard = guard if guard is not None else InProcessGuard.for_object(db)
        self._nested_filters = nested_filters
        self.name = name or f"{type(db).__name__}@{id(db):x}"
        self._owns_db = owns_db
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    @property
    def compare_and_set(self) -> str:
        """What serializes saves of one conversation, and across what (see the guard)."""
        return self._guard.describe()

    # ------------------------------------------------------------------ reading

    async def exists(self, conversation_id: str) -> bool:
        self._check_open()
        return await self._head(record_id(conversation_id), conversation_id) is not None

    async def load_conversation(self, conversation_id: str) -> ConversationState | None:
        self._check_open()
        rid = record_id(conversation_id)
        for _ in range(_MISSING_SEGMENT_RETRIES):
            head = await self._head(rid, conversation_id)
            if head is None:
                return None
            state = await self._load(rid, head)
            if state is not None:
                return state
            # A concurrent save merged segments away after we read the head: read again.
        raise StorageError(
            f"conversation {conversation_id!r} in {self.name}: a segment its head lists "
            f"is missing after {_MISSING_SEGMENT_RETRIES} reads"
        )

    async def list_summaries(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        *,
        order_by: str = "-updated_at",
        limit: int | None = 100,
        offset: int = 0,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> list[ConversationSummary]:
        self._check_open()
        limit, offset = check_page(limit, offset)
        key, descending = _order(order_by)
        selected = await self._select(
            MetadataFilter(
                filter_metadata,
                created_after=created_after,
                created_before=created_before,
                updated_after=updated_after,
                updated_before=updated_before,
            )
        )
        selected.sort(key=lambda s: s.conversation_id)
        selected.sort(key=lambda s: getattr(s, key), reverse=descending)
        end = None if limit is None else offset + limit
        return selected[offset:end]

    async def count_conversations(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        *,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> int:
        self._check_open()
        flt = MetadataFilter(
            filter_metadata,
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
        )
        return len(await self._select(flt))

    # ------------------------------------------------------------------ writing

    async def save_conversation(
        self, state: ConversationState, *, full: bool = False, overwrite: bool = False
    ) -> None:
        self._check_open()
        if not isinstance(state, ConversationState):
            raise TypeError(f"save_conversation takes a ConversationState, got {type(state)!r}")
        cid = state.conversation_id
        rid = record_id(cid)
        journal = state._journal
        if journal is not None and journal.store_key != self.name:
            journal = None  # loaded from another store: a first save here
        async with self._guard.hold(rid):
            head = await self._head(rid, cid)
            if head is None:
                if journal is not None and not overwrite:
                    raise ConflictError(
                        f"conversation {cid!r} was deleted from {self.name} after it was "
                        "loaded; pass overwrite=True to store it again",
                        conversation_id=cid,
                    )
                await self._write(state, rid, None, journal=None, full=True)
                return
            if journal is None:
                if not overwrite:
                    raise ConflictError(
                        f"conversation {cid!r} is already stored in {self.name} and this state "
                        "was not loaded from it; load it, or pass overwrite=True to replace it",
                        conversation_id=cid,
                    )
                await self._write(state, rid, head, journal=None, full=True)
                return
            stored = head["storage"]
            if stored["revision"] == journal.revision:
                await self._write(state, rid, head, journal=journal, full=full)
                return
            await self._merge(state, rid, head, journal, full=full)

    async def delete_conversation(self, conversation_id: str) -> bool:
        self._check_open()
        rid = record_id(conversation_id)
        async with self._guard.hold(rid):
            head = await self._head(rid, conversation_id)
            if head is None:
                return False
            await self._db.delete(rid)  # the conversation is gone from here on
            for segment in head["storage"]["segments"]:
                await self._db.delete(segment["id"])
            return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._guard.close()
        if self._owns_db:
            await self._db.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.name} is closed")

    async def _head(self, rid: str, cid: str) -> dict[str, Any] | None:
        record = await self._db.read(rid)
        if record is None:
            if await self._db.exists(rid):  # S3's read() answers None for any error
                raise StorageError(
                    f"conversation {cid!r} in {self.name}: its head record exists but "
                    "cannot be read (corrupt?); nothing was changed"
                )
            return None
        return self._parse_head(record, cid)

    def _parse_head(self, record: Record, cid: str | None) -> dict[str, Any]:
        try:
            if record.get_value("kind") != "head":
                raise ValueError("not a head record")
            head: dict[str, Any] = json.loads(record.get_value("head"))
            head["storage"]["revision"]
        except (TypeError, ValueError, KeyError) as exc:
            raise StorageError(
                f"conversation {cid or record.get_value('key')!r} in {self.name}: "
                f"its head record is corrupt ({exc}); nothing was changed"
            ) from None
        return head

    async def _load(self, rid: str, head: dict[str, Any]) -> ConversationState | None:
        cid = head["conversation_id"]
        ids = [segment["id"] for segment in head["storage"]["segments"]]
        records = await asyncio.gather(*(self._db.read(i) for i in ids))
        segments = []
        for segment_id, record in zip(ids, records, strict=True):
            if record is None:
                return None
            segments.append(self._parse_segment(record, cid, segment_id))
        folded = _fold(segments, drop_tombstones=True)
        doc = {k: v for k, v in head.items() if k not in ("storage", "summary")}
        doc["nodes"] = folded["nodes"]
        doc["edges"] = folded["edges"]
        try:
            state = ConversationState.from_dict(doc)
        except SchemaVersionError as exc:
            raise SchemaVersionError(
                f"conversation {cid!r} in {self.name}: {exc}; upgrade convtree to read it"
            ) from None
        except FormatError as exc:
            raise StorageError(f"conversation {cid!r} in {self.name} is invalid: {exc}") from exc
        state._journal = _Journal(self.name, head["storage"]["revision"], _dumps(state.metadata))
        return state

    def _parse_segment(self, record: Record, cid: str, segment_id: str) -> dict[str, Any]:
        try:
            segment: dict[str, Any] = json.loads(record.get_value("payload"))
            segment["nodes"], segment["edges"]
        except (TypeError, ValueError, KeyError) as exc:
            raise StorageError(
                f"conversation {cid!r} in {self.name}: segment {segment_id!r} is corrupt "
                f"({exc}); nothing was changed"
            ) from None
        return segment

    async def _write(
        self,
        state: ConversationState,
        rid: str,
        head: dict[str, Any] | None,
        *,
        journal: _Journal | None,
        full: bool,
    ) -> None:
        """Write a segment and the head at the next revision (under the guard).

        ``journal`` is what the state changed since ``head``'s revision; without
        one (a new conversation, an overwrite) the whole tree is written.
        """
        old = head["storage"] if head is not None else None
        revision = 1 if old is None else old["revision"] + 1
        segments: list[dict[str, Any]] = [] if old is None or full else list(old["segments"])
        merged_away = [] if old is None else [s["id"] for s in old["segments"]]
        if full or journal is None or old is None:
            doc = state.to_dict()
            payload: dict[str, Any] = {"nodes": doc["nodes"], "edges": doc["edges"], "removed": []}
            destructive = revision
        else:
            payload = _changes(state, journal)
            destructive = old["last_destructive"]
            if journal.changed or journal.removed:
                destructive = revision
            merged_away = []
            size = _size(payload)
            parts = [payload]
            while segments and segments[-1]["size"] <= 2 * size:
                older = segments.pop()
                record = await self._db.read(older["id"])
                if record is None:
                    raise StorageError(
                        f"conversation {state.conversation_id!r} in {self.name}: segment "
                        f"{older['id']!r} is missing; nothing was changed"
                    )
                parts.insert(0, self._parse_segment(record, state.conversation_id, older["id"]))
                merged_away.append(older["id"])
                size += older["size"]
            if len(parts) > 1:
                payload = _fold(parts, drop_tombstones=not segments)
        segment_id = f"{rid}~{revision}"
        segments.append({"id": segment_id, "size": _size(payload)})
        metadata_text = _dumps(state.metadata)
        metadata_revision = revision
        if old is not None and journal is not None and metadata_text == journal.base_metadata:
            metadata_revision = old["metadata_revision"]
        new_head = state.head_fields()
        new_head["storage"] = {
            "revision": revision,
            "segments": segments,
            "last_destructive": destructive,
            "metadata_revision": metadata_revision,
        }
        new_head["summary"] = _summary(state)
        from dataknobs_data import Record

        await self._db.upsert(
            segment_id,
            Record(
                {
                    "kind": "segment",
                    "payload": _dumps(payload),
                }
            ),
        )
        await self._db.upsert(
            rid,
            Record(
                {
                    "kind": "head",
                    "key": rid,
                    "revision": revision,
                    "created_at": _utc_text(state.created_at),
                    "updated_at": _utc_text(state.updated_at),
                    "meta": _storable(copy_json(state.metadata, "metadata")),
                    "head": _dumps(new_head),
                }
            ),
        )
        for stale in merged_away:
            if stale != segment_id:
                await self._db.delete(stale)
        state._journal = _Journal(self.name, revision, metadata_text)

    async def _merge(
        self,
        state: ConversationState,
        rid: str,
        head: dict[str, Any],
        journal: _Journal,
        *,
        full: bool,
    ) -> None:
        """Another writer saved since ``state`` was loaded: merge appends, or refuse."""
        cid = state.conversation_id
        stored = head["storage"]
        reason = None
        if full:
            reason = "a full save would replace their changes"
        elif journal.removed:
            reason = "this state pruned nodes"
        elif journal.changed:
            reason = "this state changed existing nodes"
        elif stored["last_destructive"] > journal.revision:
            reason = "the other writer pruned or changed existing nodes"
        metadata_changed = _dumps(state.metadata) != journal.base_metadata
        if reason is None and metadata_changed and stored["metadata_revision"] > journal.revision:
            reason = "both changed the conversation metadata"
        if reason is None:
            theirs = await self._load(rid, head)
            if theirs is None:
                reason = "the stored conversation changed while it was being merged"
        if reason is not None:
            raise ConflictError(
                f"conversation {cid!r} in {self.name} was saved by another writer "
                f"(revision {stored['revision']}, this state has revision "
                f"{journal.revision}) and {reason}; load it again and redo the change",
                conversation_id=cid,
            )
        assert theirs is not None
        theirs._journal = None
        for node_id in journal.added:
            tree = state._index[node_id]
            assert tree.parent is not None  # only the root has no parent
            parent_id = tree.parent.data.node_id
            if node_id in theirs._index or parent_id not in theirs._index:
                raise ConflictError(
                    f"conversation {cid!r} in {self.name}: node {node_id!r} cannot be merged "
                    "(its id is taken or its parent is gone); load it again",
                    conversation_id=cid,
                )
            theirs._attach(theirs._index[parent_id], tree.data)
        theirs._cursor = theirs._index[state.current_node_id]
        theirs._path_memo = None
        theirs.updated_at = max(theirs.updated_at, state.updated_at)
        if metadata_changed:
            theirs._metadata = state._metadata
        # The merged save: our appends on top of their revision; a metadata
        # change of ours ("" never equals the text) gets a new metadata revision.
        merged = _Journal(
            self.name,
            stored["revision"],
            "" if metadata_changed else _dumps(theirs._metadata),
            added=dict(journal.added),
        )
        await self._write(theirs, rid, head, journal=merged, full=False)
        state._adopt(theirs)

    async def _select(self, flt: MetadataFilter) -> list[ConversationSummary]:
        from dataknobs_data import Filter, Operator, Query

        filters = [Filter("kind", Operator.EQ, "head")]
        if self._nested_filters:
            for path, value in flt.pushdown():
                filters.append(Filter("meta." + ".".join(path), Operator.EQ, value))
        records = await self._db.search(Query(filters=filters))
        out = []
        for record in records:
            head = self._parse_head(record, None)
            created = datetime.fromisoformat(head["created_at"])
            updated = datetime.fromisoformat(head["updated_at"])
            if flt.matches(head["metadata"], created, updated):
                summary = head["summary"]
                out.append(
                    ConversationSummary(
                        conversation_id=head["conversation_id"],
                        metadata=head["metadata"],
                        created_at=created,
                        updated_at=updated,
                        revision=head["storage"]["revision"],
                        **summary,
                    )
                )
        return out


def _changes(state: ConversationState, journal: _Journal) -> dict[str, Any]:
    index = state._index
    nodes = [index[i].data.to_dict() for i in journal.added]
    nodes.extend(index[i].data.to_dict() for i in sorted(journal.changed) if i in index)
    edges = [[index[i].parent.data.node_id, i] for i in journal.added]  # type: ignore[union-attr]
    return {"nodes": nodes, "edges": edges, "removed": sorted(journal.removed)}


def _size(payload: dict[str, Any]) -> int:
    return len(payload["nodes"]) + len(payload["removed"]) + 1


def _summary(state: ConversationState) -> dict[str, Any]:
    path = state.path_summary()
    cursor = state.current_node
    message = cursor.message if cursor.has_message else None
    first = path.first_user
    return {
        "node_count": len(state),
        "message_count": path.message_count,
        "leaf_count": state.leaf_count,
        "first_user_message": None if first is None else _preview(_text(first)),
        "last_message": None if message is None else _preview(message.text),
        "last_role": None if message is None else message.role,
    }


def _text(node: Any) -> str:
    message = node.message
    return "" if message is None else str(message.text)


def _order(order_by: object) -> tuple[str, bool]:
    if not isinstance(order_by, str):
        raise FilterError(f"order_by must be a string, got {order_by!r}")
    key = order_by.removeprefix("-")
    if key not in ORDER_KEYS:
        raise FilterError(
            f"cannot order by {order_by!r}; use one of {list(ORDER_KEYS)}, '-' first for descending"
        )
    return key, order_by.startswith("-")
