"""DataknobsConversationStorage: save, load, merge, list and count over any record store.

The storage is the same for every backend: it reads the head, plans the save
with `layout`, and commits it with the record store's
conditional write. A stale save (another writer committed first) reads the
newer revision, lets the core rebase its changes on top of it
([`rebase()`][convtree.ConversationState.rebase]: appends merge, anything else is a
[`ConflictError`][convtree.ConflictError]), and tries again. What makes this safe is
the backend's atomic conditional write of the head, not a lock: the
per-conversation lock held here only keeps one storage's own writers from
racing each other (fewer retries).
"""

from __future__ import annotations

import asyncio
import random
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._json import json_text
from ..errors import (
    ConflictError,
    DamagedRecordError,
    DamagedRecordWarning,
    PreconditionFailed,
    StorageError,
    StorageUnavailableError,
)
from ..node import ConversationNode
from ..state import ConversationState
from ._cache import RecordCache
from ._locks import KeyLocks
from .base import ConversationStorage, ConversationSummary
from .filters import MetadataFilter, check_page
from .layout import (
    MAX_RECORD_ID_LENGTH,
    PREVIEW_LENGTH,
    Head,
    as_damaged,
    damaged_error,
    fold_records,
    parse_head,
    path_from_records,
    plan_save,
    record_id,
    state_from_records,
)
from .query import (
    HeadQuery,
    decode_cursor,
    message_search_text,
    order_spec,
    search_term,
    sort_text,
    text_changes,
)
from .records import CommitItem, Record, RecordStore

if TYPE_CHECKING:
    from dataknobs_data import AsyncDatabase

    from .check import CheckReport, DamagedRecord

T = TypeVar("T")

__all__ = ["MAX_RECORD_ID_LENGTH", "PREVIEW_LENGTH", "DataknobsConversationStorage", "record_id"]

_LOAD_ATTEMPTS = 20
_UNAVAILABLE_ATTEMPTS = 4
_MISSING_READS = 3  # a segment missing while its head stays at one revision: damaged
_PACKAGE = str(Path(__file__).resolve().parent.parent)
_SAVE_ATTEMPTS = 1000  # each failed attempt means another writer's save succeeded
_BATCH = 256  # conversations per transaction in save_many
_SEARCH_INDEX = "search_index"
_SEARCH_INDEX_VERSION = "1"  # texts of every message, case-folded


class DataknobsConversationStorage(ConversationStorage):
    """The generic storage: conversations in a record store or any dataknobs-data database.

    Args:
        db: A `RecordStore` (what
            [`open_storage()`][convtree.open_storage] builds for each URL), or a
            dataknobs-data ``AsyncDatabase``, connected or connectable, which is
            wrapped in `DataknobsRecordStore`
            (it may hold other records too: convtree's carry a ``kind`` field).
            A bare dataknobs-data database has no conditional write, so saves
            are then safe only among the writers of this process; the stores
            [`open_storage()`][convtree.open_storage] opens are safe across processes.
        name: How the store is named in errors and ``repr`` (never a password);
            the record store's name by default.
        nested_filters: For a dataknobs-data database: whether it can search
            nested fields (``meta.user_id``). Only narrows candidates.
        owns_db: For a dataknobs-data database: close it in `close()`.
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
        self._cache = RecordCache()
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
        key = record_id(conversation_id)

        async def once() -> bool:
            try:
                return await self._head(key, conversation_id) is not None
            except DamagedRecordError:
                return True  # there, though it cannot be read

        return await self._reading(f"exists({conversation_id!r})", once)

    async def load_conversation(self, conversation_id: str) -> ConversationState | None:
        """The stored conversation, or ``None`` when there is none with this id.

        Raises:
            DamagedRecordError: a record of it cannot be read (the error names
                the conversation, the record's key and what is wrong).
            SchemaVersionError: a newer convtree wrote it in a newer major format.
        """
        self._check_open()
        key = record_id(conversation_id)

        async def once() -> ConversationState | None:
            for attempt in range(_LOAD_ATTEMPTS):
                head = await self._head(key, conversation_id)
                if head is None:
                    return None
                state = await self._load(head)
                if state is not None:
                    return state
                # A concurrent save merged segments away after we read the head: read again.
                await _backoff(attempt)
            raise StorageError(  # pragma: no cover - needs 20 saves during one load
                f"conversation {conversation_id!r} in {self.name}: its head moved on "
                f"{_LOAD_ATTEMPTS} times while it was being read (very busy writers); "
                "load it again"
            )

        return await self._reading(f"loading conversation {conversation_id!r}", once)

    async def load_path(
        self, conversation_id: str, ref: str | None = None
    ) -> list[ConversationNode] | None:
        """The nodes from the root to the cursor of a stored conversation, without its tree.

        What a chat service reads on every turn: the active path (or the path to
        node ``ref``), as `ConversationState.get_path()` would return it from the
        loaded conversation, at the cost of reading the records and building only
        the path's nodes. ``None`` when there is no such conversation.

        Raises:
            NodeNotFoundError: ``ref`` names no node of the conversation.
            DamagedRecordError: a record of it cannot be read.
        """
        self._check_open()
        key = record_id(conversation_id)

        async def once() -> list[ConversationNode] | None:
            for attempt in range(_LOAD_ATTEMPTS):
                head = await self._head(key, conversation_id)
                if head is None:
                    return None
                records = await self._read_segments(conversation_id, [k for k, _ in head.segments])
                missing = [k for (k, _), r in zip(head.segments, records, strict=True) if r is None]
                if not missing:
                    return path_from_records(head, records, self.name, ref)
                await self._vanished(head, missing)
                await _backoff(attempt)
            raise StorageError(  # pragma: no cover - needs 20 saves during one read
                f"conversation {conversation_id!r} in {self.name}: its head moved on "
                f"{_LOAD_ATTEMPTS} times while it was being read; read it again"
            )

        return await self._reading(f"reading the path of {conversation_id!r}", once)

    async def list_summaries(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        *,
        search: str | None = None,
        order_by: str = "-updated_at",
        limit: int | None = 100,
        offset: int = 0,
        after: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> list[ConversationSummary]:
        """Summaries of the matching conversations, sorted and paged, no trees loaded.

        On SQLite and PostgreSQL the filter, search, order and page run in SQL
        through convtree's indexes (docs/storage.md says which query runs
        where); elsewhere the heads are scanned. The rows are the same on every
        backend. A conversation whose head record cannot be read (or, in a search
        that reads segments, a segment of it) is skipped with a
        `DamagedRecordWarning` naming it (see `damaged_conversations()`).
        """
        self._check_open()
        flt, query = _listing(
            filter_metadata,
            search,
            order_by,
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
        )
        limit, offset = check_page(limit, offset)
        if after is not None:
            query = replace(query, after=decode_cursor(after, order_by))
        query = replace(query, limit=limit, offset=offset)
        return await self._reading("listing", lambda: self._list(flt, query))

    async def count_conversations(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        *,
        search: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> int:
        """How many conversations match; damaged ones are skipped (with a warning when read)."""
        self._check_open()
        flt, query = _listing(
            filter_metadata,
            search,
            "-updated_at",
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
        )
        return await self._reading("counting", lambda: self._count(flt, query))

    async def damaged_conversations(self) -> list[DamagedRecord]:
        """The conversations whose head record cannot be read: what listings skip.

        Reads every head (as an unfiltered listing does), not the segments:
        `check()` reads every record.
        """
        from .check import DamagedRecord

        self._check_open()

        async def once() -> list[DamagedRecord]:
            found = []
            async for key, item in self.records.scan_heads():
                try:
                    self._parse_item(key, item)
                except DamagedRecordError as exc:
                    found.append(DamagedRecord.from_error(exc))
            return sorted(found, key=lambda d: (d.conversation_id, d.key))

        return await self._reading("looking for damaged conversations", once)

    async def check(self, *, repair: bool = False, grace: float = 10.0) -> CheckReport:
        """Read every record of the store; report (and with ``repair``, fix) what is wrong.

        Finds conversations that cannot be read (a damaged head or segment, a
        segment its head lists that is missing, nodes that do not form a
        tree), **orphans** (segments no head lists, left by crashed or refused
        saves) and **leftovers** (the file store's temporary files). With
        ``repair``: orphans and leftovers are deleted, and every record of a
        conversation that cannot be read is **quarantined**, moved aside
        unchanged where no listing sees it (see docs/storage.md), never deleted.

        Args:
            repair: Fix what was found.
            grace: Seconds to wait before deleting an orphan or leftover that a
                save in progress could still be writing (on stores without
                transactions); it is deleted only if it is still there and still
                unreferenced after that.

        Returns:
            A `CheckReport`.
        """
        from .check import check_store

        self._check_open()
        # Checking again after a broken connection is safe: repairs re-verify first.
        return await self._reading(
            "checking the store",
            lambda: check_store(self, repair=repair, grace=grace),
            "what was repaired stays repaired",
        )

    async def build_search_index(self) -> int:
        """Index the stored conversations for ``search=``, unless the index is complete.

        Stores that run queries in SQL keep a search index that every save
        updates in its transaction. A store written before convtree kept one
        (or whose indexing was interrupted) is indexed here, one conversation
        per transaction, each only if no save moved it on meanwhile; opening
        the store calls this. Safe to run again, and alongside writers.

        Returns:
            How many conversations were indexed (0 when the index was complete).
        """
        self._check_open()
        records = self.records
        if not records.capabilities.query:
            return 0
        if await records.get_setting(_SEARCH_INDEX) == _SEARCH_INDEX_VERSION:
            return 0
        keys = sorted([key async for key in records.scan_keys() if "~" not in key])
        done = 0
        for key in keys:
            for attempt in range(_LOAD_ATTEMPTS):
                try:
                    head = await self._head(key, key)
                    state = None if head is None else await self._load(head)
                except DamagedRecordError:
                    break  # indexed when it is repaired or replaced (a full save)
                if head is None:
                    break
                if state is not None:
                    nodes = [node.to_dict() for node in state.nodes()]
                    texts = text_changes(nodes, (), full=True)
                    if await records.replace_texts(key, head.revision.number, texts):
                        done += 1
                        break
                await _backoff(attempt)
        await records.put_setting(_SEARCH_INDEX, _SEARCH_INDEX_VERSION)
        return done

    # ------------------------------------------------------------------ writing

    async def save_conversation(
        self, state: ConversationState, *, full: bool = False, overwrite: bool = False
    ) -> None:
        self._check_open()
        if not isinstance(state, ConversationState):
            raise TypeError(f"save_conversation takes a ConversationState, got {type(state)!r}")
        await self._save(state, full=full, overwrite=overwrite)

    async def _save(
        self, state: ConversationState, *, full: bool, overwrite: bool, unsure: bool = False
    ) -> None:
        """`save_conversation()`; ``unsure``: an earlier write of it may have happened."""
        cid = state.conversation_id
        key = record_id(cid)
        async with self._locks(key):
            unavailable = 1 if unsure else 0
            for attempt in range(_SAVE_ATTEMPTS):
                try:
                    if await self._save_once(
                        state, key, full=full, overwrite=overwrite, unsure=unavailable > 0
                    ):
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
        self, state: ConversationState, key: str, *, full: bool, overwrite: bool, unsure: bool
    ) -> bool:
        """One attempt: ``True`` when saved, ``False`` when another writer came first.

        ``unsure``: an earlier attempt broke off with its outcome unknown.
        """
        cid = state.conversation_id
        saved = state.saved_revision
        mine = saved is not None and saved.store == self.name
        cached = self._cache.head(key)
        if mine and not unsure and cached is not None and cached.revision == saved:
            head: Head | None = cached  # the commit is conditional on its revision and token
        else:
            try:
                head = await self._head(key, cid)
            except DamagedRecordError:
                if not overwrite:
                    raise
                await self._discard(key)  # replace what cannot be read
                head = None
        if head is None:
            if mine and not overwrite:
                raise ConflictError(
                    f"conversation {cid!r} was deleted from {self.name} after it was "
                    "loaded; pass overwrite=True to store it again",
                    conversation_id=cid,
                )
            changes = state.changes(full=True)
        elif not mine:
            if unsure and await self._stored_as(head, state):
                state.mark_saved(head.revision)  # the attempt that broke off did save it
                return True
            if not overwrite:
                raise ConflictError(
                    f"conversation {cid!r} is already stored in {self.name} and this state "
                    "was not loaded from it; load it, or pass overwrite=True to replace it",
                    conversation_id=cid,
                )
            changes = state.changes(full=True)
        else:
            assert saved is not None
            if (
                head.revision.number == saved.number
                and head.revision.token != saved.token
                and None not in (head.revision.token, saved.token)
            ):
                raise ConflictError(
                    f"conversation {cid!r} was deleted from {self.name} and saved again by "
                    "another writer after this state was loaded; load it again, or pass "
                    "overwrite=True to replace it",
                    conversation_id=cid,
                )
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
        absorbed = await self._segments(cid, plan.absorb) if plan.absorb else []
        if head is not None and any(record is None for record in absorbed):
            missing = [k for k, r in zip(plan.absorb, absorbed, strict=True) if r is None]
            await self._vanished(head, missing)
            return False  # another writer merged them away: it saved first
        new_head, segments, revision, parsed = plan.records(state, self.name, absorbed)
        texts = None
        if self.records.capabilities.query:
            texts = text_changes(changes.nodes, changes.removed, full=changes.full)
        try:
            await self.records.commit(
                key,
                new_head,
                expect=plan.expect,
                segments=segments,
                obsolete=plan.obsolete,
                texts=texts,
                token=None if head is None else head.revision.token,
            )
        except PreconditionFailed:
            self._cache.forget(key)
            if head is not None and await self._refused_unchanged(head):
                if not overwrite:
                    raise damaged_error(
                        self.name,
                        key,
                        f"the store refuses a write conditioned on what it holds (revision "
                        f"{head.revision.number}, token {head.revision.token!r}): the record "
                        "does not hold what convtree reads from it",
                        cid=cid,
                    ) from None
                await self._discard(key, head)  # replace what cannot be written over
            return False
        except BaseException:
            self._cache.forget(key)  # the outcome is unknown
            raise
        self._cache.keep_head(parsed)
        for segment_key, segment in segments.items():
            self._cache.keep_segment(segment_key, segment)
        state.mark_saved(revision)
        return True

    async def save_many(
        self, states: Iterable[ConversationState], *, overwrite: bool = False
    ) -> int:
        """Save many conversations: new ones in batches, one transaction per batch.

        For bulk imports. Conversations not stored yet are written 256 at a
        time, in one transaction on SQLite and PostgreSQL (and with the batch's
        heads read at once); anything else (a conversation already stored, a
        batch a concurrent writer interfered with) goes through
        `save_conversation()`, with its rules (``overwrite``
        to replace). Each conversation is saved whole or not at all.

        Returns:
            How many conversations were saved.
        """
        self._check_open()
        batch: list[ConversationState] = []
        saved = 0
        for state in states:
            if not isinstance(state, ConversationState):
                raise TypeError(f"save_many takes ConversationStates, got {type(state)!r}")
            batch.append(state)
            if len(batch) == _BATCH:
                saved += await self._save_batch(batch, overwrite)
                batch = []
        if batch:
            saved += await self._save_batch(batch, overwrite)
        return saved

    async def _save_batch(self, states: list[ConversationState], overwrite: bool) -> int:
        keys = [record_id(s.conversation_id) for s in states]
        rest: list[ConversationState] = []
        fresh: list[tuple[ConversationState, str]] = []
        if self.records.capabilities.atomic_commit and len(set(keys)) == len(keys):
            try:
                heads = await self._reading("reading heads", lambda: self.records.read_many(keys))
            except DamagedRecordError:
                heads = [{} for _ in keys]  # let save_conversation sort it out
            for state, key, head in zip(states, keys, heads, strict=True):
                if head is None and state.saved_revision is None:
                    fresh.append((state, key))
                else:
                    rest.append(state)
        else:
            rest = list(states)
        if fresh:
            planned: list[tuple[ConversationState, CommitItem, Head]] = []
            for state, key in fresh:
                changes = state.changes(full=True)
                plan = plan_save(changes, key, None)
                head, segments, revision, parsed = plan.records(state, self.name, [])
                texts = None
                if self.records.capabilities.query:
                    texts = text_changes(changes.nodes, (), full=True)
                planned.append((state, CommitItem(key, head, segments, texts, revision), parsed))
            items = [item for _, item, _ in planned]
            unsure: list[ConversationState] = []
            try:
                written = await self.records.commit_new(items)
            except PreconditionFailed:
                written = [False] * len(items)  # one exists meanwhile: nothing was written
            except StorageUnavailableError:
                written = [False] * len(items)
                unsure = [state for state, _ in fresh]
            for (state, item, parsed), done in zip(planned, written, strict=True):
                if done:
                    state.mark_saved(item.revision)
                    self._cache.keep_head(parsed)
                elif not unsure:
                    rest.append(state)  # one by one, with their rules
            for state in unsure:  # written or not: a save that knows it may have been
                await self._save(state, full=False, overwrite=overwrite, unsure=True)
        for state in rest:
            await self.save_conversation(state, overwrite=overwrite)
        return len(states)

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a conversation and every record of it; ``True`` if it existed.

        Works on a conversation that cannot be read, too. Besides the segments
        its head lists, every record under its key prefix goes (segments that
        crashed saves left), so nothing of it lingers in the store.
        """
        self._check_open()
        key = record_id(conversation_id)
        async with self._locks(key):
            existed = started = False
            for attempt in range(_UNAVAILABLE_ATTEMPTS):
                try:
                    try:
                        head = await self._head(key, conversation_id)
                        present = head is not None
                    except DamagedRecordError:
                        head, present = None, True
                    if present:
                        started = existed = True
                        self._cache.forget(key)
                        await self.records.delete(key)  # the conversation is gone from here on
                    if started:
                        await self._remove_records(key, head)
                    return existed
                except StorageUnavailableError as exc:
                    if attempt + 1 == _UNAVAILABLE_ATTEMPTS:
                        raise StorageUnavailableError(
                            f"deleting conversation {conversation_id!r}: {exc}; it may or may "
                            "not be deleted (deleting it again is safe)"
                        ) from None
                    await _backoff(attempt)
            raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.records.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.name} is closed")

    async def _reading(
        self,
        what: str,
        once: Callable[[], Awaitable[T]],
        outcome: str = "nothing was changed",
    ) -> T:
        """Run an operation that is safe to repeat (a read), again when the connection broke."""
        for attempt in range(_UNAVAILABLE_ATTEMPTS):
            try:
                return await once()
            except StorageUnavailableError as exc:
                if attempt + 1 == _UNAVAILABLE_ATTEMPTS:
                    raise StorageUnavailableError(
                        f"{what}: {exc} (tried {_UNAVAILABLE_ATTEMPTS} times); {outcome} "
                        "(trying again is safe)"
                    ) from None
                await _backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _refused_unchanged(self, head: Head) -> bool:
        """Whether the stored head is still ``head`` after a write conditioned on it was
        refused: then no other writer came first, the record is at fault (a save would
        be refused forever), and the save reports it instead of retrying."""
        try:
            again = await self._head(head.key, head.conversation_id)
        except DamagedRecordError:
            return False  # the next attempt reads it and reports the damage
        return (
            again is not None
            and again.revision.number == head.revision.number
            and again.revision.token == head.revision.token
        )

    async def _head(self, key: str, cid: str) -> Head | None:
        try:
            record = await self.records.read(key)
        except DamagedRecordError as exc:
            self._cache.forget(key)
            raise as_damaged(exc, self.name, key, cid) from None
        if record is None:
            self._cache.forget(key)
            return None
        head = parse_head(record, self.name, key)
        self._cache.keep_head(head)
        return head

    async def _segments(self, cid: str, keys: Sequence[str]) -> list[Record | None]:
        """Segment records a save merges, from the cache where they are (a key's record
        never changes). Loads read the store, so that they report damage."""
        got: list[Record | None] = [self._cache.segment(k) for k in keys]
        missing = [k for k, r in zip(keys, got, strict=True) if r is None]
        if missing:
            read = iter(await self._read_segments(cid, missing))
            got = [r if r is not None else next(read) for r in got]
            for key, record in zip(keys, got, strict=True):
                if record is not None:
                    self._cache.keep_segment(key, record)
        return got

    def _parse_item(self, key: str, item: Record | DamagedRecordError) -> Head:
        """A head from a scan (raises the DamagedRecordError of one that cannot be read)."""
        if isinstance(item, DamagedRecordError):
            raise as_damaged(item, self.name, key)
        return parse_head(item, self.name, key)

    async def _read_segments(self, cid: str, keys: Sequence[str]) -> list[Record | None]:
        try:
            return await self.records.read_many(keys)
        except DamagedRecordError as exc:
            raise as_damaged(exc, self.name, exc.key or keys[0], cid) from None

    async def _load(self, head: Head) -> ConversationState | None:
        """The conversation at ``head``; ``None`` if the head moved on (read it again).

        Raises:
            DamagedRecordError: a segment cannot be read, or is missing while
                the head stays at the revision that lists it.
        """
        records = await self._read_segments(head.conversation_id, [k for k, _ in head.segments])
        missing = [k for (k, _), r in zip(head.segments, records, strict=True) if r is None]
        if missing:
            await self._vanished(head, missing)
            return None
        return state_from_records(head, records, self.name)

    async def _vanished(self, head: Head, missing: list[str]) -> None:
        """Segments ``head`` lists are gone: return if a newer save (or a delete) merged
        them away, raise `DamagedRecordError` if the head stays where it was."""
        for attempt in range(_MISSING_READS):
            await _backoff(attempt + 3)
            try:
                again = await self._head(head.key, head.conversation_id)
            except DamagedRecordError:
                return  # changed since: the caller reads it again and reports it
            if again is None or again.revision != head.revision or again.segments != head.segments:
                return
            still = [r is None for r in await self._read_segments(head.conversation_id, missing)]
            if not any(still):
                return  # a slow store caught up: read again
        raise damaged_error(
            self.name,
            missing[0],
            f"it is missing (head revision {head.revision.number} lists it)",
            cid=head.conversation_id,
        )

    async def _stored_as(self, head: Head, state: ConversationState) -> bool:
        """Whether the conversation at ``head`` is exactly ``state`` (as a document)."""
        stored = await self._load(head)
        return stored is not None and json_text(stored.to_dict()) == json_text(state.to_dict())

    async def _discard(self, key: str, head: Head | None = None) -> None:
        """Delete the head under ``key``, then every record of it: what an overwrite
        does to a conversation that cannot be read or written over, before creating it."""
        await self.records.delete(key)
        await self._remove_records(key, head)

    async def _remove_records(self, key: str, head: Head | None) -> None:
        """Delete every record under ``key``'s prefix (and what ``head`` lists)."""
        keys = {segment_key for segment_key, _ in head.segments} if head is not None else set()
        keys.update([k async for k in self.records.scan_keys(key + "~")])
        for segment_key in sorted(keys):
            await self.records.delete(segment_key)

    async def _list(self, flt: MetadataFilter, query: HeadQuery) -> list[ConversationSummary]:
        records = self.records
        if not records.capabilities.query:
            return await self._scan(flt, query, "list_summaries")
        pushed = [c for c in flt.conditions if records.pushable(c)]
        damaged: list[DamagedRecordError] = []
        if len(pushed) == len(flt.conditions):  # SQL does everything
            out = [
                row
                for head in await records.query_heads(query)
                if (row := self._row(head.key, head.item, damaged)) is not None
            ]
        else:  # SQL narrows and orders; the rest is checked here, batch by batch
            out = []
            need = None if query.limit is None else query.offset + query.limit
            async for row in self._narrowed(flt, query.narrowed(pushed), damaged):
                out.append(row)
                if need is not None and len(out) >= need:
                    break
            out = out[query.offset :]
        if damaged:
            self._warn_damaged("list_summaries", damaged)
        return out

    async def _count(self, flt: MetadataFilter, query: HeadQuery) -> int:
        records = self.records
        if not records.capabilities.query:
            return len(await self._scan(flt, query, "count_conversations"))
        pushed = [c for c in flt.conditions if records.pushable(c)]
        if len(pushed) == len(flt.conditions):
            return await records.count_heads(query)
        damaged: list[DamagedRecordError] = []
        count = 0
        async for _ in self._narrowed(flt, query.narrowed(pushed), damaged):
            count += 1
        if damaged:
            self._warn_damaged("count_conversations", damaged)
        return count

    async def _narrowed(
        self, flt: MetadataFilter, query: HeadQuery, damaged: list[DamagedRecordError]
    ) -> AsyncIterator[ConversationSummary]:
        """The rows of ``query`` (pushable conditions only) that pass every condition, in
        order: read in keyset batches, so a page stops reading once it is full."""
        batch = 256
        while True:
            heads = await self.records.query_heads(replace(query, limit=batch))
            for head in heads:
                row = self._row(head.key, head.item, damaged)
                if row is not None and flt.matches(row.metadata, row.created_at, row.updated_at):
                    yield row
            if len(heads) < batch:
                return
            query = replace(query, after=(heads[-1].sort, heads[-1].key))
            batch = min(batch * 2, 4096)

    def _row(
        self, key: str, item: Record | DamagedRecordError, damaged: list[DamagedRecordError]
    ) -> ConversationSummary | None:
        try:
            return self._parse_item(key, item).summary_row()
        except DamagedRecordError as exc:
            damaged.append(exc)
            return None

    async def _scan(
        self, flt: MetadataFilter, query: HeadQuery, what: str
    ) -> list[ConversationSummary]:
        """A listing by reading every head (stores without ``capabilities.query``)."""
        where = flt.pushdown() if self.records.capabilities.filters else []
        found: list[tuple[tuple[str, str], Head]] = []
        damaged: list[DamagedRecordError] = []
        async for key, item in self.records.scan_heads(where):
            try:
                head = self._parse_item(key, item)
            except DamagedRecordError as exc:
                damaged.append(exc)
                continue
            if flt.matches(head.document["metadata"], head.created_at, head.updated_at):
                found.append((_sort_key(head, query.order), head))
        found.sort(key=lambda pair: pair[0], reverse=query.descending)
        if query.after is not None:
            after = query.after
            found = [
                pair for pair in found if (pair[0] < after if query.descending else pair[0] > after)
            ]
        rows: list[ConversationSummary] = []
        need = None if query.limit is None else query.offset + query.limit
        for _, head in found:
            if need is not None and len(rows) >= need:
                break
            if query.search is not None:
                try:
                    if not await self._holds(head, query.search):
                        continue
                except DamagedRecordError as exc:  # a segment it lists cannot be read
                    damaged.append(exc)
                    continue
            rows.append(head.summary_row())
        if damaged:
            self._warn_damaged(what, damaged)
        return rows[query.offset :]

    async def _holds(self, head: Head, term: str) -> bool:
        """Whether a message of the conversation at ``head``, on any branch, holds ``term``."""
        records = await self._read_segments(head.conversation_id, [k for k, _ in head.segments])
        if any(record is None for record in records):
            state = await self.load_conversation(head.conversation_id)  # merged meanwhile
            if state is None:
                return False
            nodes = state.to_dict()["nodes"]
        else:
            nodes = fold_records(head, records, self.name)[1][0].node_records()
        return any(
            term in text for node in nodes if (text := message_search_text(node)) is not None
        )

    def _warn_damaged(self, what: str, damaged: list[DamagedRecordError]) -> None:
        damaged.sort(key=lambda e: (e.conversation_id or "", e.key or ""))
        shown = "; ".join(
            f"{e.conversation_id!r} (record {e.key!r}: {e.problem})" for e in damaged[:5]
        )
        more = f"; and {len(damaged) - 5} more" if len(damaged) > 5 else ""
        ids = tuple(e.conversation_id or e.key or "?" for e in damaged)
        warnings.warn(
            DamagedRecordWarning(
                f"{what} in {self.name} skipped {len(damaged)} damaged conversation"
                f"{'s' if len(damaged) > 1 else ''}: {shown}{more}. "
                "storage.damaged_conversations() lists them; `convtree check --repair` "
                "sets them aside",
                conversation_ids=ids,
            ),
            stacklevel=_caller_stacklevel(),
        )


async def _backoff(attempt: int) -> None:
    """Jittered exponential backoff between save attempts (1 ms up to 50 ms)."""
    await asyncio.sleep(min(0.001 * 2 ** min(attempt, 6), 0.05) * random.random())


def _listing(
    filter_metadata: Mapping[str, Any] | None,
    search: object,
    order_by: object,
    **bounds: datetime | None,
) -> tuple[MetadataFilter, HeadQuery]:
    """The validated filter and the query of a listing's arguments."""
    flt = MetadataFilter(filter_metadata, **bounds)
    order, descending = order_spec(order_by)
    query = HeadQuery(
        conditions=tuple(flt.conditions),
        bounds=tuple(flt.bounds),
        search=search_term(search),
        order=order,
        descending=descending,
    )
    return flt, query


def _sort_key(head: Head, order: str) -> tuple[str, str]:
    """A head's place in a listing: its sort text, then its storage key."""
    return sort_text(order, head.key, head.created_at, head.updated_at), head.key


def _caller_stacklevel() -> int:
    """The stack level of the first frame outside convtree (where the user called us)."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level
