"""Any dataknobs-data ``AsyncDatabase`` as a record store, and ``dataknobs-memory://``.

dataknobs-data has no conditional write, so `DataknobsRecordStore`
makes one with an asyncio lock per key held around the compare and the write:
correct among the writers of one process only, which its capabilities say.
The backends [`open_storage()`][convtree.open_storage] opens over dataknobs-data
(``file``, ``sqlite``, ``postgres``, ``s3``) subclass it and replace the lock
with the database's own atomic conditional write.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

from ...errors import StorageError
from .._locks import KeyLocks
from ..query import TextChanges
from ..records import (
    Capabilities,
    HeadItem,
    IfRevision,
    PutMode,
    Record,
    RecordStore,
    check_expected,
    check_mode,
    expected_revision,
)

if TYPE_CHECKING:
    from dataknobs_data import AsyncDatabase

    from ..adapter import DataknobsConversationStorage

__all__ = ["DataknobsRecordStore", "open_dataknobs_memory"]

_NAMED: dict[str, Any] = {}
_LOCKS: WeakKeyDictionary[Any, KeyLocks] = WeakKeyDictionary()


def _locks_for(db: Any) -> KeyLocks:
    """One set of key locks per database object, shared by every store over it."""
    try:
        return _LOCKS.setdefault(db, KeyLocks())
    except TypeError:  # not weak-referenceable
        return KeyLocks()


class DataknobsRecordStore(RecordStore):
    """Records as dataknobs-data records (one field per record key) in ``db``.

    Args:
        db: A dataknobs-data ``AsyncDatabase``.
        name: The store's name in errors; derived from the database by default.
        filters: The database can filter nested fields (``meta.user_id``).
        owns_db: Close ``db`` in `close()`.
    """

    capabilities = Capabilities(
        compare_and_set="in-process lock (writers in this process)",
        filters=True,
        cross_process=False,
    )

    def __init__(
        self,
        db: AsyncDatabase,
        *,
        name: str | None = None,
        filters: bool = True,
        owns_db: bool = False,
    ) -> None:
        self.db = db
        self.name = name or f"{type(db).__name__}@{id(db):x}"
        self._owns_db = owns_db
        self._key_locks = _locks_for(db)
        if not filters:
            self.capabilities = Capabilities(
                compare_and_set=self.capabilities.compare_and_set,
                atomic_commit=self.capabilities.atomic_commit,
                filters=False,
                cross_process=self.capabilities.cross_process,
            )

    async def read(self, key: str) -> Record | None:
        record = await self.db.read(key)
        if record is None:
            return None
        return {name: record.get_value(name) for name in record.fields}

    async def write(self, key: str, record: Record, mode: PutMode = "overwrite") -> None:
        """Overwrite with `_upsert()`; a conditional write is a commit without segments."""
        check_mode(mode)
        if mode == "overwrite":
            await self._upsert(key, record)
        else:
            token = mode.token if isinstance(mode, IfRevision) else None
            await self.commit(key, record, expect=expected_revision(mode), segments={}, token=token)

    async def commit(
        self,
        key: str,
        head: Record,
        *,
        expect: int | None,
        segments: Mapping[str, Record],
        obsolete: Sequence[str] = (),
        texts: TextChanges | None = None,
        token: str | None = None,
    ) -> None:
        """Compare and write under an in-process lock per key (dataknobs-data has no
        conditional write); subclasses replace it with the database's own."""
        async with self._key_locks(key):
            check_expected(await self.read(key), expect, store=self.name, key=key, token=token)
            for segment_key in segments:  # new keys: never overwrite one
                check_expected(await self.read(segment_key), None, store=self.name, key=segment_key)
            for segment_key, segment in segments.items():
                await self._upsert(segment_key, segment)
            await self._upsert(key, head)
        for stale in obsolete:
            await self.delete(stale)

    async def _upsert(self, key: str, record: Record) -> None:
        from dataknobs_data import Record as DataknobsRecord

        await self.db.upsert(key, DataknobsRecord(dict(record)))

    async def delete(self, key: str) -> bool:
        return bool(await self.db.delete(key))

    async def scan_keys(self, prefix: str = "") -> AsyncIterator[str]:
        """The keys of convtree's records (``kind`` head or segment) under ``prefix``.

        The database may hold records of others; a record whose ``kind`` is
        unreadable is not listed here (the stores convtree opens list every key).
        """
        from dataknobs_data import Filter, Operator, Query

        query = Query(filters=[Filter("kind", Operator.IN, ["head", "segment"])])
        for record in await self.db.search(query):
            key = record.storage_id or record.id
            if isinstance(key, str) and key.startswith(prefix):
                yield key

    async def scan_heads(
        self, where: Sequence[tuple[tuple[str, ...], str]] = ()
    ) -> AsyncIterator[HeadItem]:
        """Records of ``kind`` head (the database may hold records of others)."""
        from dataknobs_data import Filter, Operator, Query

        filters = [Filter("kind", Operator.EQ, "head")]
        if self.capabilities.filters:
            for path, value in where:
                filters.append(Filter("meta." + ".".join(path), Operator.EQ, value))
        for record in await self.db.search(Query(filters=filters)):
            key = record.storage_id or record.id
            if isinstance(key, str):
                yield key, {name: record.get_value(name) for name in record.fields}

    async def close(self) -> None:
        if self._owns_db:
            await self.db.close()


async def connected(db: Any, url: str) -> None:
    """Connect a dataknobs-data database, as a StorageError naming ``url`` if it fails."""
    from ..urls import mask_url, scrub

    before = set(threading.enumerate())
    try:
        await db.connect()
    except BaseException as exc:
        # Release what the failed open started (aiosqlite's thread would keep
        # the process from exiting; a pool would leak its connections).
        with contextlib.suppress(Exception):
            await db.close()
        # Let the threads it started finish while this event loop still runs:
        # aiosqlite's worker posts its last result to the loop, and after
        # asyncio.run() has closed it that prints "Event loop is closed".
        for thread in set(threading.enumerate()) - before:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(thread.join, 2.0)
        if isinstance(exc, StorageError) or not isinstance(exc, Exception):
            raise
        raise StorageError(f"cannot open {mask_url(url)}: {scrub(str(exc), url)}") from None


async def indexed_storage(
    store: Any, prepare: Callable[[], Awaitable[object]] | None = None
) -> DataknobsConversationStorage:
    """The storage over a connected SQL record store, once ``prepare`` (a setting of
    the connection) has run, the store's indexes exist and its search texts are
    complete; the store is closed if any of it fails."""
    from ..adapter import DataknobsConversationStorage

    try:
        if prepare is not None:
            await prepare()
        await store.ensure_indexes()
        storage = DataknobsConversationStorage(store)
        await storage.build_search_index()
    except BaseException:
        await store.close()
        raise
    return storage


async def open_dataknobs_memory(url: str) -> DataknobsConversationStorage:
    """``dataknobs-memory://[name]``: dataknobs-data's own memory backend."""
    from dataknobs_data.backends.memory import AsyncMemoryDatabase

    from ..adapter import DataknobsConversationStorage

    name = urlsplit(url).netloc
    db = _NAMED.get(name) if name else None
    if db is None:
        db = AsyncMemoryDatabase({})
        if name:
            _NAMED[name] = db
    label = url if name else f"dataknobs-memory://@{id(db):x}"
    return DataknobsConversationStorage(DataknobsRecordStore(db, name=label))
