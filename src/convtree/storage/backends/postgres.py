"""``postgresql://``: dataknobs-data's PostgreSQL backend on a pool of its own, saves in
one transaction.

dataknobs-data creates the table (``id``, ``data`` JSONB, ...) and serves reads
and searches. A save is one transaction on one connection: insert the new
segment, ``UPDATE`` the head ``WHERE (data->>'revision')::bigint = <expected>``
(or insert it ``ON CONFLICT DO NOTHING``), delete the segments it absorbed,
commit. The row lock the ``UPDATE`` takes serializes concurrent saves of one
conversation inside the server; no lock is held beside the write, so a killed
connection loses only its own uncommitted transaction.

A connection that breaks (``pg_terminate_backend``, a restarted server) raises
:class:`~convtree.StorageUnavailableError`; the storage retries, and saving the
same state again is safe either way. Sessions set ``lock_timeout`` (30 s) and
``idle_in_transaction_session_timeout`` (60 s), so a stalled client cannot
block a conversation forever.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from dataknobs_data.backends.postgres import AsyncPostgresDatabase
from dataknobs_data.backends.sql_base import SQLQueryBuilder

from ...errors import StorageError, StorageUnavailableError
from ..records import Capabilities, Record, refusal
from ..urls import identifier, mask_url, query
from .dataknobs import DataknobsRecordStore, connected

if TYPE_CHECKING:
    from ..adapter import DataknobsConversationStorage

__all__ = ["OwnPoolPostgresDatabase", "PostgresRecordStore", "open_postgres"]

SERVER_SETTINGS = {
    "application_name": "convtree",
    "lock_timeout": "30s",
    "idle_in_transaction_session_timeout": "60s",
}


class OwnPoolPostgresDatabase(AsyncPostgresDatabase):
    """dataknobs' PostgreSQL backend on a pool of its own.

    dataknobs-data shares one pool between instances with the same
    host/port/db/user (closing one breaks the others) and builds its DSN
    without escaping (a password with ``@`` or a socket directory breaks it);
    here asyncpg gets the connection parts as keywords.
    """

    def __init__(self, config: dict[str, Any], connect: dict[str, Any]) -> None:
        super().__init__(dict(config, ensure_database=False))
        self._connect_kwargs = connect

    async def connect(self) -> None:
        if self._connected:
            return
        import asyncpg

        self._pool = await asyncpg.create_pool(
            min_size=1, max_size=4, server_settings=SERVER_SETTINGS, **self._connect_kwargs
        )
        async with self._pool.acquire() as conn:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema_name}")
        self.query_builder = SQLQueryBuilder(self.table_name, self.schema_name, dialect="postgres")
        await self._ensure_table()
        self._connected = True

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
        self._connected = False


@contextmanager
def _connection_errors(name: str) -> Iterator[None]:
    """Broken connections as StorageUnavailableError; other errors as they are."""
    import asyncpg

    try:
        yield
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.OperatorInterventionError,  # pg_terminate_backend, shutdown
        asyncpg.exceptions.InternalClientError,
        ConnectionError,
        OSError,
        asyncio.TimeoutError,
    ) as exc:
        raise StorageUnavailableError(
            f"{name}: the connection to PostgreSQL broke ({type(exc).__name__}: {exc})"
        ) from None
    except asyncpg.exceptions.LockNotAvailableError:
        raise StorageError(
            f"{name}: timed out waiting for a row lock (a writer stalled while saving?)"
        ) from None


class PostgresRecordStore(DataknobsRecordStore):
    """Records in a table of dataknobs-data's layout; commits are SQL transactions."""

    db: OwnPoolPostgresDatabase

    capabilities = Capabilities(
        compare_and_set="UPDATE ... WHERE revision in one PostgreSQL transaction "
        "(every client of the server)",
        atomic_commit=True,
        filters=True,
    )

    def __init__(self, db: OwnPoolPostgresDatabase, *, name: str) -> None:
        super().__init__(db, name=name, owns_db=True)
        self.table = f"{db.schema_name}.{db.table_name}"

    async def read(self, key: str) -> Record | None:
        with _connection_errors(self.name):
            return await super().read(key)

    async def delete(self, key: str) -> bool:
        with _connection_errors(self.name):
            return await super().delete(key)

    async def scan_heads(
        self, where: Sequence[tuple[tuple[str, ...], str]] = ()
    ) -> AsyncIterator[Record]:
        with _connection_errors(self.name):
            rows = [record async for record in super().scan_heads(where)]
        for record in rows:
            yield record

    def _pool(self) -> Any:
        pool = self.db._pool
        if pool is None:
            raise StorageError(f"{self.name} is closed")
        return pool

    def _upsert_sql(self) -> str:
        return (
            f"INSERT INTO {self.table} (id, data, metadata, created_at, updated_at) "
            "VALUES ($1, $2::jsonb, NULL, now(), now()) "
            "ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, updated_at = now()"
        )

    async def _upsert(self, key: str, record: Record) -> None:
        with _connection_errors(self.name):
            await self._pool().execute(self._upsert_sql(), key, json.dumps(record))

    async def commit(
        self,
        key: str,
        head: Record,
        *,
        expect: int | None,
        segments: Mapping[str, Record],
        obsolete: Sequence[str] = (),
    ) -> None:
        table = self.table
        upsert = self._upsert_sql()
        with _connection_errors(self.name):
            async with self._pool().acquire() as conn, conn.transaction():
                for segment_key, segment in segments.items():
                    await conn.execute(upsert, segment_key, json.dumps(segment))
                data = json.dumps(head)
                if expect is None:
                    status = await conn.execute(
                        f"INSERT INTO {table} (id, data, metadata, created_at, updated_at) "
                        "VALUES ($1, $2::jsonb, NULL, now(), now()) ON CONFLICT (id) DO NOTHING",
                        key,
                        data,
                    )
                    if status != "INSERT 0 1":
                        raise refusal(self.name, key, expect)
                else:
                    status = await conn.execute(
                        f"UPDATE {table} SET data = $2::jsonb, updated_at = now() "
                        "WHERE id = $1 AND (data->>'revision')::bigint = $3",
                        key,
                        data,
                        expect,
                    )
                    if status != "UPDATE 1":
                        raise refusal(self.name, key, expect)
                if obsolete:
                    await conn.execute(
                        f"DELETE FROM {table} WHERE id = ANY($1::text[])", list(obsolete)
                    )


async def open_postgres(url: str) -> DataknobsConversationStorage:
    """``postgresql://user:pass@host:port/db?table=...&schema=...`` (``?host=/socket/dir``)."""
    from ..adapter import DataknobsConversationStorage

    parts = urlsplit(url)
    params = query(url)
    connect: dict[str, Any] = {
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or "") or None,
        "database": unquote(parts.path.lstrip("/")) or "postgres",
        "host": params.get("host") or parts.hostname or "localhost",
    }
    try:
        if parts.port:
            connect["port"] = parts.port
    except ValueError:
        raise StorageError(f"bad port in {mask_url(url)!r}") from None
    table = identifier(params.get("table", "conversations"), "table", url)
    schema = identifier(params.get("schema", "public"), "schema", url)
    db = OwnPoolPostgresDatabase({"table": table, "schema": schema}, connect)
    await connected(db, url)
    return DataknobsConversationStorage(PostgresRecordStore(db, name=mask_url(url)))
