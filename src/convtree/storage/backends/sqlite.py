"""``sqlite:///file.db``: dataknobs-data's SQLite backend, saves in one transaction.

dataknobs-data creates the table (``id``, ``data`` JSON text, ...) and serves
reads and searches; a save is one ``BEGIN IMMEDIATE`` transaction on the same
connection that inserts the new segment, updates the head ``WHERE
json_extract(data, '$.revision') = <expected>`` (or inserts it ``ON CONFLICT
DO NOTHING``), deletes the segments it absorbed, and commits: all or nothing,
for every process that opens the file (SQLite's own file locking; a writer
waits up to ``timeout`` seconds, ``?timeout=`` in the URL, default 30, then
fails with a StorageError). Commits are durable: ``PRAGMA synchronous=FULL`` syncs
the write-ahead log at each commit (``?synchronous=normal`` trades the last saves
before a power cut for the fsync). No lock file of convtree's: SQLite locks the
database file itself, so saving and deleting any number of conversations
leaves the database and its ``-wal``/``-shm`` files, nothing else.

A segment's ``data`` holds its payload as a JSON object, not as a JSON string of it
(``{"kind":"segment","payload":{...}}``): reading it back is then a slice of the
row, where the string form had every quote of the payload escaped, to be unescaped
by a JSON decode of the whole record before the payload's own decode (a seventh of a
load). Rows written as strings by earlier versions are read as they are.

Reads and scans are convtree's own SQL, so that a row whose ``data`` is not a
record (truncated, garbled, not UTF-8) raises `DamagedRecordError`
for that row only. Rows set aside by ``convtree check --repair`` stay in the
table under the id ``quarantine/<key>/<UTC time>`` (no key contains ``/``).
Deleted rows are overwritten with zeros (``PRAGMA secure_delete``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import sqlite3
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from dataknobs_data.backends.sqlite_async import AsyncSQLiteDatabase

from ...errors import PreconditionFailed, StorageError
from ..filters import Condition
from ..query import HeadQuery, SortedHead, TextChanges
from ..records import (
    Capabilities,
    CommitItem,
    HeadItem,
    Record,
    decode_record,
    head_item,
    quarantine_id,
    refusal,
)
from ..urls import identifier, local_path, mask_url, path_url, query
from ._sql import SQLiteDialect, batch_rows, created_name
from .dataknobs import DataknobsRecordStore, connected, indexed_storage

if TYPE_CHECKING:
    from ..adapter import DataknobsConversationStorage

__all__ = ["SQLiteRecordStore", "open_sqlite"]

_T = TypeVar("_T")
_INLINE = '{"kind":"segment","payload":'
_INLINE_BYTES = _INLINE.encode()
_SYNCHRONOUS = ("FULL", "NORMAL")
"""``PRAGMA synchronous`` settings offered: FULL syncs the WAL at every commit, so a save
that returned survives a power cut; NORMAL (WAL) survives a crash of the process, not of
the machine, and skips the fsync."""
_IN_LIMIT = 500  # keys per IN (...) list: far below SQLite's limit on parameters

_Step = tuple[str, list[Any], PreconditionFailed | None]
"""A statement of a transaction: SQL, parameters, and the refusal if it changes no row."""


class SQLiteRecordStore(DataknobsRecordStore):
    """Records in a dataknobs-data ``AsyncSQLiteDatabase``; commits are SQL transactions."""

    db: Any

    capabilities = Capabilities(
        compare_and_set="UPDATE ... WHERE revision in one SQLite transaction (every process)",
        atomic_commit=True,
        filters=True,
        quarantine=True,
        query=True,
        search="FTS5 trigram index of every message (substring, case-folded)",
    )

    def __init__(self, db: Any, *, name: str, timeout: float = 30.0) -> None:
        super().__init__(db, name=name, owns_db=True)
        self.table = db.table_name
        self.timeout = timeout
        self.dialect = SQLiteDialect(self.table)
        # One connection: statements of concurrent coroutines must not land
        # inside another coroutine's transaction.
        self._connection = asyncio.Lock()
        _OPEN_STORES.add(self)

    def _conn(self) -> Any:
        conn = self.db.db
        if conn is None:
            raise StorageError(f"{self.name} is closed")
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors as StorageErrors naming the store (a lock wait as a timeout)."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise StorageError(
                    f"{self.name}: timed out after {self.timeout:g} s waiting for the database "
                    f"lock (a writer stalled while saving?): {text}"
                ) from None
            raise StorageError(f"{self.name}: {text}") from None
        except sqlite3.Error as exc:
            raise StorageError(f"{self.name}: {type(exc).__name__}: {exc}") from None

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """``fn(connection)`` in the connection's thread: one hop, however many statements.

        aiosqlite runs each call in its worker thread and wakes the event loop
        for each result; a transaction of six statements cost six round trips
        between threads (most of a save's time). Running the whole of it as
        one function is one round trip, and the transaction cannot be left
        open by a cancelled coroutine: it commits or rolls back in the thread.
        """
        conn = self._conn()
        with self._errors():
            result: _T = await conn._execute(lambda: fn(conn._conn))
        return result

    async def _write(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """``body(connection)`` in one ``BEGIN IMMEDIATE`` transaction, in the connection's
        thread: committed if it returns, rolled back if it raises (the caller holds
        ``_connection``)."""

        def atomically(raw: sqlite3.Connection) -> _T:
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = body(raw)
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
            return result

        return await self._run(atomically)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        async with self._connection:
            return await self._run(lambda raw: raw.execute(sql, list(params)).fetchall())

    async def _change(self, sql: str, params: Sequence[Any]) -> int:
        """Run one statement that changes rows, committed; the number of rows it changed."""

        def change(raw: sqlite3.Connection) -> int:
            count = int(raw.execute(sql, list(params)).rowcount)
            raw.commit()
            return count

        async with self._connection:
            return await self._run(change)

    async def read(self, key: str) -> Record | None:
        # As bytes: text that is not UTF-8 is one damaged record, not a failed query.
        rows = await self._fetch(f"SELECT CAST(data AS BLOB) FROM {self.table} WHERE id = ?", [key])
        return self._record(rows[0][0], key) if rows else None

    async def read_many(self, keys: Sequence[str]) -> list[Record | None]:
        """One ``SELECT ... WHERE id IN (...)``: the records as of one moment."""
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), _IN_LIMIT):
            chunk = list(keys[start : start + _IN_LIMIT])
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT id, CAST(data AS BLOB) FROM {self.table} WHERE id IN ({marks})"
            found.update(await self._fetch(sql, chunk))
        return [None if (raw := found.get(key)) is None else self._record(raw, key) for key in keys]

    def _record(self, data: bytes, key: str) -> Record:
        """A stored row's record; a segment's payload as the text it is stored as (`_stored`)."""
        if data.startswith(_INLINE_BYTES) and data.endswith(b"}"):
            try:
                return {"kind": "segment", "payload": data[len(_INLINE_BYTES) : -1].decode()}
            except UnicodeDecodeError:
                pass  # damaged: the decode below says so
        return decode_record(data, store=self.name, key=key)

    async def delete(self, key: str) -> bool:
        if "~" in key:
            return await self._change(f"DELETE FROM {self.table} WHERE id = ?", [key]) > 0
        statements: list[_Step] = [
            (f"DELETE FROM {self.table} WHERE id = ?", [key], None),
            (self.dialect.text_sql()[0], [key], None),
        ]
        async with self._connection:
            counts = await self._transaction(statements)
        return counts[0] > 0

    def pushable(self, condition: Condition) -> bool:
        return self.dialect.pushable(condition)

    async def query_heads(self, query: HeadQuery) -> list[SortedHead]:
        statement = self.dialect.select(query)
        rows = await self._fetch(statement.sql, statement.params)
        return [
            SortedHead(key, sort, head_item(data, store=self.name, key=key)[1])
            for key, sort, data in rows
        ]

    async def count_heads(self, query: HeadQuery) -> int:
        statement = self.dialect.count(query)
        rows = await self._fetch(statement.sql, statement.params)
        return int(rows[0][0])

    async def ensure_indexes(self) -> None:
        """Create the indexes and search tables convtree keeps that are missing (one
        transaction). Existing ones are looked up first, so that opening a store
        whose write lock a stalled writer holds does not wait for it."""
        wanted = {created_name(ddl): ddl for ddl in self.dialect.indexes()}
        rows = await self._fetch(
            f"SELECT name FROM sqlite_master WHERE name IN ({', '.join('?' * len(wanted))})",
            list(wanted),
        )
        for (name,) in rows:
            wanted.pop(name, None)
        if wanted:
            async with self._connection:
                await self._transaction([(ddl, [], None) for ddl in wanted.values()])

    async def get_setting(self, name: str) -> str | None:
        rows = await self._fetch(self.dialect.state_sql()[0], [name])
        return None if not rows else rows[0][0]

    async def put_setting(self, name: str, value: str) -> None:
        async with self._connection:
            await self._transaction([(self.dialect.state_sql()[1], [name, value], None)])

    async def replace_texts(self, key: str, revision: int, texts: TextChanges) -> bool:
        """Set a conversation's search texts, if its head is still at ``revision``."""
        check = (
            f"SELECT 1 FROM {self.table} WHERE id = ? AND json_valid(data) "
            "AND json_extract(data, '$.revision') = ?"
        )

        def replace(raw: sqlite3.Connection) -> bool:
            still = raw.execute(check, [key, revision]).fetchone() is not None
            if still:
                self._texts(raw, key, texts)
            return still

        async with self._connection:
            return await self._write(replace)

    def _texts(self, raw: sqlite3.Connection, key: str, texts: TextChanges) -> None:
        for sql, rows in self.dialect.text_writes(key, texts):
            raw.executemany(sql, rows)

    async def scan_keys(self, prefix: str = "") -> AsyncIterator[str]:
        rows = await self._fetch(
            f"SELECT id FROM {self.table} WHERE substr(id, 1, ?) = ? AND instr(id, '/') = 0",
            [len(prefix), prefix],
        )
        for (key,) in rows:
            yield key

    async def scan_heads(
        self, where: Sequence[tuple[tuple[str, ...], str]] = ()
    ) -> AsyncIterator[HeadItem]:
        # Narrow by meta only where data is a record with a meta object: a row
        # that is not is returned, to be reported as damaged, never dropped.
        sql = [
            f"SELECT id, CAST(data AS BLOB) FROM {self.table} "
            "WHERE instr(id, '~') = 0 AND instr(id, '/') = 0"
        ]
        params: list[Any] = []
        for path, value in where:
            sql.append(
                "AND CASE WHEN NOT json_valid(data) THEN 1 "
                "WHEN json_type(data, '$.meta') IS NOT 'object' THEN 1 "
                "ELSE json_extract(data, ?) IS ? END"
            )
            params += ["$.meta." + ".".join(path), value]
        for key, data in await self._fetch(" ".join(sql), params):
            yield head_item(data, store=self.name, key=key)

    async def quarantine(self, key: str) -> str:
        aside = quarantine_id(key)
        statements: list[_Step] = [
            (
                f"UPDATE {self.table} SET id = ?, updated_at = CURRENT_TIMESTAMP WHERE id = ?",
                [aside, key],
                None,
            )
        ]
        if "~" not in key:
            statements.append((self.dialect.text_sql()[0], [key], None))
        async with self._connection:
            changed = (await self._transaction(statements))[0]
        if not changed:
            raise StorageError(f"{self.name}: no record {key!r} to set aside")
        return f"row {aside!r} of table {self.table}"

    async def _upsert(self, key: str, record: Record) -> None:
        async with self._connection:
            await self._transaction([self._upsert_sql(key, record)])

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
        statements: list[_Step] = [self._upsert_sql(k, r) for k, r in segments.items()]
        statements.append(self._head_sql(key, head, expect, token))
        statements.extend((f"DELETE FROM {self.table} WHERE id = ?", [k], None) for k in obsolete)
        async with self._connection:
            await self._transaction(statements, key=key, texts=texts)

    def _upsert_sql(self, key: str, record: Record) -> _Step:
        return (
            f"INSERT INTO {self.table} (id, data, metadata, created_at, updated_at) "
            "VALUES (?, ?, NULL, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) "
            "ON CONFLICT(id) DO UPDATE SET data = excluded.data, updated_at = CURRENT_TIMESTAMP",
            [key, _stored(record)],
            None,
        )

    def _head_sql(
        self, key: str, head: Record, expect: int | None, token: str | None = None
    ) -> _Step:
        """The conditional write of a head: create it (``expect`` None) or update it at
        revision ``expect``; refused unless it changes exactly one row."""
        data = json.dumps(head)
        if expect is None:
            sql = (
                f"INSERT INTO {self.table} (id, data, metadata, created_at, updated_at) "
                "VALUES (?, ?, NULL, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) "
                "ON CONFLICT(id) DO NOTHING"
            )
            return sql, [key, data], refusal(self.name, key, None)
        sql = (
            f"UPDATE {self.table} SET data = ?, updated_at = CURRENT_TIMESTAMP "
            "WHERE id = ? AND json_extract(data, '$.revision') = ?"
        )
        params: list[Any] = [data, key, expect]
        if token is not None:
            sql += " AND json_extract(data, '$.token') = ?"
            params.append(token)
        return sql, params, refusal(self.name, key, expect)

    async def commit_new(self, items: Sequence[CommitItem]) -> list[bool]:
        """All in one transaction, statements batched (``executemany``)."""
        insert = (
            f"INSERT INTO {self.table} (id, data, metadata, created_at, updated_at) "
            "VALUES (?, ?, NULL, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) ON CONFLICT(id) DO NOTHING"
        )
        records, texts = batch_rows(items, _stored)

        def insert_all(raw: sqlite3.Connection) -> None:
            if raw.executemany(insert, records).rowcount != len(records):
                raise PreconditionFailed(f"{self.name}: a conversation of the batch exists already")
            if texts:
                raw.executemany(*self.dialect.insert_texts(texts))

        async with self._connection:
            await self._write(insert_all)
        return [True] * len(items)

    async def _transaction(
        self,
        statements: Sequence[_Step],
        *,
        key: str | None = None,
        texts: TextChanges | None = None,
    ) -> list[int]:
        """Run the statements in one transaction, all or nothing; their row counts.

        A statement that must change one row and did not raises its refusal
        (the third item) and rolls everything back. ``texts`` (the search
        index changes of conversation ``key``) are applied last.
        """

        def run(raw: sqlite3.Connection) -> list[int]:
            counts = []
            for sql, params, refused in statements:
                cursor = raw.execute(sql, params)
                if refused is not None and cursor.rowcount != 1:
                    raise refused
                counts.append(cursor.rowcount)
            if texts is not None and key is not None:
                self._texts(raw, key, texts)
            return counts

        return await self._write(run)


def _stored(record: Record) -> str:
    """A record's ``data`` text: a segment with its payload text inlined as JSON, anything
    else as JSON.

    The payload is `json_text` of an object (`SavePlan.records`): ASCII, nesting at most
    ``MAX_DEPTH`` plus the payload's own levels, within what SQLite's ``json_valid``
    (the table's CHECK) reads. Python's ``NaN`` and ``Infinity`` are not JSON to SQLite:
    a payload that may hold one (the words anywhere, in a text too) is stored as a
    string, as before.
    """
    payload = record.get("payload")
    if (
        record.get("kind") == "segment"
        and len(record) == 2
        and type(payload) is str
        and payload.startswith("{")
        and payload.isascii()
        and "NaN" not in payload
        and "Infinity" not in payload
    ):
        return _INLINE + payload + "}"
    return json.dumps(record)


_OPEN_STORES: weakref.WeakSet[SQLiteRecordStore] = weakref.WeakSet()


def _stop_stores_left_open() -> None:
    """At interpreter exit, stop the connection thread of each store never closed.

    aiosqlite's worker is not a daemon thread: a program that never awaited
    ``close()`` (a script, a notebook kernel) would wait for it forever at exit.
    This runs before the interpreter joins its threads (``threading``'s exit hook,
    as ``concurrent.futures`` uses): the worker closes the SQLite connection,
    which rolls back a transaction left open (none is: a save commits or rolls
    back within one call of the worker), and ends.
    """
    for store in list(_OPEN_STORES):
        conn = getattr(store.db, "db", None)
        if conn is not None:
            with warnings.catch_warnings(), contextlib.suppress(Exception):
                warnings.simplefilter("ignore")  # asyncio's "no current event loop"
                conn.stop()


getattr(threading, "_register_atexit", atexit.register)(_stop_stores_left_open)


async def open_sqlite(url: str) -> DataknobsConversationStorage:
    """``sqlite:///path/file.db`` (``?table=``, default ``conversations``; ``?timeout=`` s;
    ``?synchronous=full``, the default, or ``normal``)."""
    path = local_path(url, "SQLite")
    params = query(url)
    table = identifier(params.get("table", "conversations"), "table", url)
    _refuse_keyword(table, url)
    try:
        timeout = float(params.get("timeout", "30"))
    except ValueError:
        raise StorageError(f"timeout in {url!r} must be a number of seconds") from None
    synchronous = params.get("synchronous", "full").upper()
    if synchronous not in _SYNCHRONOUS:
        raise StorageError(
            f"synchronous in {mask_url(url)!r} must be full or normal, not {synchronous.lower()!r}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the directory of {path}: {exc}") from None
    db = AsyncSQLiteDatabase(
        {"path": str(path), "table": table, "timeout": timeout, "synchronous": synchronous}
    )
    await connected(db, url)  # closes the connection (and its thread) if the open fails
    store = SQLiteRecordStore(db, name=f"{path_url('sqlite', path)}?table={table}", timeout=timeout)

    async def secure_delete() -> None:  # deleted records are overwritten, not left in the file
        async with store._connection:
            await store._run(lambda raw: raw.execute("PRAGMA secure_delete = ON"))

    return await indexed_storage(store, secure_delete)


def _refuse_keyword(table: str, url: str) -> None:
    """Refuse a table name SQLite cannot use unquoted (``select``): before anything is created."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute(f"CREATE TABLE {table} (x)")
    except sqlite3.Error:
        raise StorageError(
            f"table {table!r} in {mask_url(url)!r} is an SQL keyword; choose another name"
        ) from None
    finally:
        probe.close()
