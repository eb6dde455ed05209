"""``sqlite:///file.db``: dataknobs-data's SQLite backend, saves in one transaction.

dataknobs-data creates the table (``id``, ``data`` JSON text, ...) and serves
reads and searches; a save is one ``BEGIN IMMEDIATE`` transaction on the same
connection that inserts the new segment, updates the head ``WHERE
json_extract(data, '$.revision') = <expected>`` (or inserts it ``ON CONFLICT
DO NOTHING``), deletes the segments it absorbed, and commits: all or nothing,
for every process that opens the file (SQLite's own file locking; a writer
waits up to ``timeout`` seconds, ``?timeout=`` in the URL, default 30).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dataknobs_data.backends.sqlite_async import AsyncSQLiteDatabase

from ...errors import PreconditionFailed, StorageError
from ..records import Capabilities, Record, refusal
from ..urls import identifier, local_path, query
from .dataknobs import DataknobsRecordStore, connected

if TYPE_CHECKING:
    from ..adapter import DataknobsConversationStorage

__all__ = ["SQLiteRecordStore", "open_sqlite"]


class SQLiteRecordStore(DataknobsRecordStore):
    """Records in a dataknobs-data ``AsyncSQLiteDatabase``; commits are SQL transactions."""

    db: Any

    capabilities = Capabilities(
        compare_and_set="UPDATE ... WHERE revision in one SQLite transaction (every process)",
        atomic_commit=True,
        filters=True,
    )

    def __init__(self, db: Any, *, name: str) -> None:
        super().__init__(db, name=name, owns_db=True)
        self.table = db.table_name
        # One connection: statements of concurrent coroutines must not land
        # inside another coroutine's transaction.
        self._connection = asyncio.Lock()

    async def read(self, key: str) -> Record | None:
        async with self._connection:
            return await super().read(key)

    async def delete(self, key: str) -> bool:
        async with self._connection:
            return await super().delete(key)

    async def scan_heads(
        self, where: Sequence[tuple[tuple[str, ...], str]] = ()
    ) -> AsyncIterator[Record]:
        async with self._connection:
            rows = [record async for record in super().scan_heads(where)]
        for record in rows:
            yield record

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
    ) -> None:
        statements: list[tuple[str, list[Any], PreconditionFailed | None]]
        statements = [self._upsert_sql(k, r) for k, r in segments.items()]
        statements.append(self._head_sql(key, head, expect))
        statements.extend((f"DELETE FROM {self.table} WHERE id = ?", [k], None) for k in obsolete)
        async with self._connection:
            await self._transaction(statements)

    def _upsert_sql(self, key: str, record: Record) -> tuple[str, list[Any], None]:
        return (
            f"INSERT INTO {self.table} (id, data, metadata, created_at, updated_at) "
            "VALUES (?, ?, NULL, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) "
            "ON CONFLICT(id) DO UPDATE SET data = excluded.data, updated_at = CURRENT_TIMESTAMP",
            [key, json.dumps(record)],
            None,
        )

    def _head_sql(
        self, key: str, head: Record, expect: int | None
    ) -> tuple[str, list[Any], PreconditionFailed]:
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
        return sql, [data, key, expect], refusal(self.name, key, expect)

    async def _transaction(
        self, statements: Sequence[tuple[str, list[Any], PreconditionFailed | None]]
    ) -> None:
        """Run the statements in one transaction, all or nothing.

        A statement that must change one row and did not raises its refusal
        (the third item) and rolls everything back.
        """
        conn = self.db.db
        if conn is None:
            raise StorageError(f"{self.name} is closed")
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params, refusal in statements:
                cursor = await conn.execute(sql, params)
                if refusal is not None and cursor.rowcount != 1:
                    raise refusal
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise


async def open_sqlite(url: str) -> DataknobsConversationStorage:
    """``sqlite:///path/file.db`` (``?table=``, default ``conversations``; ``?timeout=`` s)."""
    from ..adapter import DataknobsConversationStorage

    path = local_path(url, "SQLite")
    params = query(url)
    table = identifier(params.get("table", "conversations"), "table", url)
    try:
        timeout = float(params.get("timeout", "30"))
    except ValueError:
        raise StorageError(f"timeout in {url!r} must be a number of seconds") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the directory of {path}: {exc}") from None
    db = AsyncSQLiteDatabase({"path": str(path), "table": table, "timeout": timeout})
    await connected(db, url)
    return DataknobsConversationStorage(
        SQLiteRecordStore(db, name=f"sqlite://{path}?table={table}")
    )
