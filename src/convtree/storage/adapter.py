"""DataknobsConversationStorage: save, load, merge, list and count over any record store.

The storage is the same for every backend: it reads the head, plans the save
with :mod:`convtree.storage.layout`, and commits it with the record store's
conditional write. A stale save (another writer committed first) reads the
newer revision, lets the core rebase its changes on top of it
(:meth:`ConversationState.rebase`: appends merge, anything else is a
:class:`~convtree.ConflictError`), and tries again. What makes this safe is
the backend's atomic conditional write of the head, not a lock: the
per-conversation lock held here only keeps one storage's own writers from
racing each other (fewer retries).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._json import json_text
from ..errors import (
    ConflictError,
    FilterError,
    PreconditionFailed,
    StorageError,
    StorageUnavailableError,
)
from ..state import ConversationState
from ._locks import KeyLocks
from .base import ORDER_KEYS, ConversationStorage, ConversationSummary
from .filters import MetadataFilter, check_page
from .layout import (
    MAX_RECORD_ID_LENGTH,
    PREVIEW_LENGTH,
    Head,
    parse_head,
    plan_save,
    record_id,
    state_from_records,
)
from .records import RecordStore

if TYPE_CHECKING:
    from dataknobs_data import AsyncDatabase

__all__ = ["MAX_RECORD_ID_LENGTH", "PREVIEW_LENGTH", "DataknobsConversationStorage", "record_id"]

_LOAD_ATTEMPTS = 20
_UNAVAILABLE_ATTEMPTS = 4
_SAVE_ATTEMPTS = 1000  # each failed attempt means another writer's save succeeded


class DataknobsConversationStorage(ConversationStorage):
    """The generic storage: conversations in a record store or any dataknobs-data database.

    Args:
        db: A :class:`~convtree.storage.records.RecordStore` (what
            :func:`~convtree.open_storage` builds for each URL), or a
            dataknobs-data ``AsyncDatabase``, connected or connectable, which is
            wrapped in :class:`~convtree.storage.backends.dataknobs.DataknobsRecordStore`
            (it may hold other records too: convtree's carry a ``kind`` field).
            A bare dataknobs-data database has no conditional write, so saves
            are then safe only among the writers of this process; the stores
            :func:`~convtree.open_storage` opens are safe across processes.
        name: How the store is named in errors and ``repr`` (never a password);
            the record store's name by default.
        nested_filters: For a dataknobs-data database: whether it can search
            nested fields (``meta.user_id``). Only narrows candidates.
        owns_db: For a dataknobs-data database: close it in :meth:`close`.
    """

    def __init__(
        self,
        db: RecordStore | AsyncDatabase,
        *,
        name: str | None = None,
        nested_filters: bool = True,
        owns_db: bool = False,
    ) -> None:
        if isinstance(db, RecordStore):
            records = db
        else:
            from .backends.dataknobs import DataknobsRecordStore

            records = DataknobsRecordStore(db, name=name, filters=nested_filters, owns_db=owns_db)
        self.records = records
        self.name = name or records.name
        self._locks = KeyLocks()
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    @property
    def compare_and_set(self) -> str:
        """How the backend makes a save's conditional write atomic, and across which writers."""
        return self.records.capabilities.compare_and_set

    # ------------------------------------------------------------------ reading

    async def exists(self, conversation_id: str) -> bool:
        self._check_open()
        return await self._head(record_id(conversation_id), conversation_id) is not None

    async def load_conversation(self, conversation_id: str) -> ConversationState | None:
        self._check_open()
        key = record_id(conversation_id)
        for attempt in range(_LOAD_ATTEMPTS):
            head = await self._head(key, conversation_id)
            if head is None:
                return None
            state = await self._load(head)
            if state is not None:
                return state
            # A concurrent save merged segments away after we read the head: read again.
            await _backoff(attempt)
        raise StorageError(
            f"conversation {conversation_id!r} in {self.name}: a segment its head lists "
            f"is missing after {_LOAD_ATTEMPTS} reads"
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
        flt = MetadataFilter(
            filter_metadata,
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
        )
        limit, offset = check_page(limit, offset)
        key, descending = _order(order_by)
        rows = await self._select(flt)
        rows.sort(key=lambda s: s.conversation_id)  # ties by id
        rows.sort(key=lambda s: getattr(s, key), reverse=descending)
        return rows[offset:] if limit is None else rows[offset : offset + limit]

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
        key = record_id(cid)
        async with self._locks(key):
            unavailable = 0
            for attempt in range(_SAVE_ATTEMPTS):
                try:
                    if await self._save_once(state, key, full=full, overwrite=overwrite):
                        return
                except StorageUnavailableError as exc:
                    unavailable += 1
                    if unavailable >= _UNAVAILABLE_ATTEMPTS:
                        raise StorageUnavailableError(
                            f"conversation {cid!r} in {self.name}: {exc}; the save may or "
                            "may not have happened (saving this state again is safe)"
                        ) from None
                await _backoff(attempt)
        raise StorageError(  # pragma: no cover - needs 1,000 other saves meanwhile
            f"conversation {cid!r} in {self.name}: gave up after {_SAVE_ATTEMPTS} attempts, "
            "other writers kept saving first"
        )

    async def _save_once(
        self, state: ConversationState, key: str, *, full: bool, overwrite: bool
    ) -> bool:
        """One attempt: ``True`` when saved, ``False`` when another writer came first."""
        cid = state.conversation_id
        saved = state.saved_revision
        mine = saved is not None and saved.store == self.name
        head = await self._head(key, cid)
        if head is None:
            if mine and not overwrite:
                raise ConflictError(
                    f"conversation {cid!r} was deleted from {self.name} after it was "
                    "loaded; pass overwrite=True to store it again",
                    conversation_id=cid,
                )
            changes = state.changes(full=True)
        elif not mine:
            if not overwrite:
                raise ConflictError(
                    f"conversation {cid!r} is already stored in {self.name} and this state "
                    "was not loaded from it; load it, or pass overwrite=True to replace it",
                    conversation_id=cid,
                )
            changes = state.changes(full=True)
        else:
            assert saved is not None
            if head.revision.number != saved.number:
                upstream = await self._load(head)
                if upstream is None:
                    return False  # merged away meanwhile: read again
                try:
                    state.rebase(upstream, full=full)
                except ConflictError as exc:
                    raise ConflictError(f"{exc} (in {self.name})", conversation_id=cid) from None
            changes = state.changes(full=full)
            if (
                changes.empty
                and not changes.metadata_changed
                and json_text(changes.head) == json_text(head.document)
            ):
                state.mark_saved(head.revision)  # nothing to write
                return True
        plan = plan_save(changes, key, head)
        absorbed = await self.records.read_many(plan.absorb) if plan.absorb else []
        if any(record is None for record in absorbed):
            return False  # another writer merged them away: it saved first
        new_head, segments, revision = plan.records(state, self.name, absorbed)
        try:
            await self.records.commit(
                key, new_head, expect=plan.expect, segments=segments, obsolete=plan.obsolete
            )
        except PreconditionFailed:
            return False
        state.mark_saved(revision)
        return True

    async def delete_conversation(self, conversation_id: str) -> bool:
        self._check_open()
        key = record_id(conversation_id)
        async with self._locks(key):
            head = await self._head(key, conversation_id)
            if head is None:
                return False
            await self.records.delete(key)  # the conversation is gone from here on
            for segment_key, _ in head.segments:
                await self.records.delete(segment_key)
            return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.records.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.name} is closed")

    async def _head(self, key: str, cid: str) -> Head | None:
        record = await self.records.read(key)
        return None if record is None else parse_head(record, self.name, cid)

    async def _load(self, head: Head) -> ConversationState | None:
        """The conversation at ``head``; ``None`` if a segment is gone (read the head again)."""
        records = await self.records.read_many([k for k, _ in head.segments])
        if any(record is None for record in records):
            return None
        return state_from_records(head, records, self.name)

    async def _select(self, flt: MetadataFilter) -> list[ConversationSummary]:
        where = flt.pushdown() if self.records.capabilities.filters else []
        out = []
        async for record in self.records.scan_heads(where):
            head = parse_head(record, self.name)
            row = head.summary_row()
            if flt.matches(row.metadata, row.created_at, row.updated_at):
                out.append(row)
        return out


async def _backoff(attempt: int) -> None:
    """Jittered exponential backoff between save attempts (1 ms up to 50 ms)."""
    await asyncio.sleep(min(0.001 * 2 ** min(attempt, 6), 0.05) * random.random())


def _order(order_by: object) -> tuple[str, bool]:
    if not isinstance(order_by, str):
        raise FilterError(f"order_by must be a string, got {order_by!r}")
    key = order_by.removeprefix("-")
    if key not in ORDER_KEYS:
        raise FilterError(
            f"cannot order by {order_by!r}; use one of {list(ORDER_KEYS)}, '-' first for descending"
        )
    return key, order_by.startswith("-")
