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
[`StorageUnavailableError`][convtree.StorageUnavailableError] on every path (read, scan, delete,
save); the storage retries, and saving the same state again is safe either
way. Sessions set ``lock_timeout`` (``?lock_timeout=`` seconds in the URL,
default 30) and ``idle_in_transaction_session_timeout`` (60 s), so a stalled
client cannot block a conversation forever.

Reads and scans are convtree's own SQL: a row whose ``data`` is not a record
raises `DamagedRecordError` for that row only. Rows set aside
by ``convtree check --repair`` stay in the table under the id
``quarantine/<key>/<UTC time>`` (no key contains ``/``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from dataknobs_data.backends.postgres import AsyncPostgresDatabase
from dataknobs_data.backends.postgres_mixins import PostgresTableManager
from dataknobs_data.backends.sql_base import SQLQueryBuilder

from ...errors import PreconditionFailed, StorageError, StorageUnavailableError
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
from ..urls import identifier, mask_url, query
from ._sql import PostgresDialect, Statement, batch_rows, created_name
from .dataknobs import DataknobsRecordStore, connected, indexed_storage

if TYPE_CHECKING:
    from ..adapter import DataknobsConversationStorage

__all__ = ["OwnPoolPostgresDatabase", "PostgresRecordStore", "connect_args", "open_postgres"]

# PostgreSQL's reserved key words (appendix C of its manual): not usable as
# unquoted table or schema names.
RESERVED = frozenset(
    """all analyse analyze and any array as asc asymmetric authorization binary both case cast
    check collate collation column concurrently constraint create cross current_catalog
    current_date current_role current_schema current_time current_timestamp current_user
    default deferrable desc distinct do else end except false fetch for foreign freeze from
    full grant group having ilike in initially inner intersect into is isnull join lateral
    leading left like limit localtime localtimestamp natural not notnull null offset on
    only or order outer overlaps placing primary references returning right select
    session_user similar some symmetric system_user table tablesample then to trailing true
    union unique user using variadic verbose when where window with""".split()  # noqa: SIM905 - a word list
)

_PAYLOAD = (
    "jsonb_path_query_first(data, "
    "'$ ? (@.kind == \"segment\" && @.payload.type() == \"string\").payload') #>> '{}'"
)
"""A segment record's payload text, else NULL: one read of the (TOASTed) value; each
``data->...`` of its own reads and decompresses the whole value again."""

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

    def __init__(
        self,
        config: dict[str, Any],
        connect: dict[str, Any],
        settings: Mapping[str, str] = SERVER_SETTINGS,
    ) -> None:
        super().__init__(dict(config, ensure_database=False))
        self._connect_kwargs = connect
        self._settings = dict(settings)

    async def connect(self) -> None:
        if self._connected:
            return
        import asyncpg

        self._pool = await asyncpg.create_pool(
            min_size=1,
            max_size=4,
            server_settings=self._settings,
            reset=_keep_session,
            **self._connect_kwargs,
        )
        self.query_builder = SQLQueryBuilder(self.table_name, self.schema_name, dialect="postgres")
        async with self._pool.acquire() as conn:
            # DDL only for a new table: CREATE INDEX IF NOT EXISTS waits for every open
            # transaction on the table, so a stalled writer would block each open.
            exists = await conn.fetchval(
                "SELECT to_regclass($1)", f"{self.schema_name}.{self.table_name}"
            )
            if exists is None:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema_name}")
        if exists is None:
            await self._ensure_table()
        self._connected = True

    @staticmethod
    def get_create_table_sql(schema_name: str, table_name: str) -> str:
        """dataknobs-data's table as it defines it, without its indexes (`UNUSED_INDEXES`)."""
        script = PostgresTableManager.get_create_table_sql(schema_name, table_name)
        return ";".join(
            ddl for ddl in script.split(";") if ddl.strip() and "CREATE INDEX" not in ddl
        )

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
            f"{name}: timed out waiting for a row lock (a writer stalled while saving?); "
            "nothing was changed"
        ) from None
    except asyncpg.PostgresError as exc:
        raise StorageError(f"{name}: {type(exc).__name__}: {exc}") from None


UNUSED_INDEXES = ("idx_{table}_data", "idx_{table}_metadata")
"""dataknobs-data's GIN indexes of the whole ``data`` and ``metadata`` columns, which no
query of convtree's uses (its own indexes serve them). Every save added a dozen entries
to the first (each key and value of the head), and each non-HOT head update a new
version of them: after 10,000 appends they held 675 bytes per message, more than the
records. New tables are created without them; `PostgresRecordStore.ensure_indexes`
drops them from older tables (a dataknobs-data client connecting to the table creates
them again)."""


TOAST_TARGET = "toast_tuple_target=128"
"""The table's storage setting: a row over 2 KB (merged segments, a large head) keeps
its ``data`` in the TOAST table, compressed, instead of compressed in the table itself.

Why: a save updates the head (a new row version, never a HOT update: the indexes
read ``data``) and inserts the new segment, and the merges delete older segments.
PostgreSQL reclaims dead versions inside a page when a read visits it (the head's page
at every save), but records the space for new rows only at ``VACUUM``: merged
segments stored in the table spread the heads and fresh segments over new pages, and
the table grew by every row written. Measured (`benchmarks/bench_scale.py`, 10,000
single-message saves, then ``VACUUM``): the records took 1,311 bytes per message with
the default (2,032 bytes), 1,064 with this; whole store 2.04x a one-shot save, then
1.82x. Heads of ordinary size (under 2 KB) stay in the table as before. The setting
applies to rows written after it; existing rows are not rewritten. A table that has a
``toast_tuple_target`` of its own keeps it."""


class PostgresRecordStore(DataknobsRecordStore):
    """Records in a table of dataknobs-data's layout; commits are SQL transactions."""

    db: OwnPoolPostgresDatabase

    capabilities = Capabilities(
        compare_and_set="UPDATE ... WHERE revision in one PostgreSQL transaction "
        "(every client of the server)",
        atomic_commit=True,
        filters=True,
        quarantine=True,
        query=True,
        search="pg_trgm GIN index of every message (substring, case-folded)",
    )

    def __init__(self, db: OwnPoolPostgresDatabase, *, name: str) -> None:
        super().__init__(db, name=name, owns_db=True)
        self.table = f"{db.schema_name}.{db.table_name}"
        self.dialect = PostgresDialect(self.table)

    def pushable(self, condition: Condition) -> bool:
        return self.dialect.pushable(condition)

    async def query_heads(self, query: HeadQuery) -> list[SortedHead]:
        statement = self.dialect.select(query)
        with _connection_errors(self.name):
            rows = await self._pool().fetch(statement.sql, *statement.params)
        return [
            SortedHead(key, sort, head_item(data, store=self.name, key=key)[1])
            for key, sort, data in rows
        ]

    async def count_heads(self, query: HeadQuery) -> int:
        statement = self.dialect.count(query)
        with _connection_errors(self.name):
            return int(await self._pool().fetchval(statement.sql, *statement.params))

    async def ensure_indexes(self) -> None:
        """Create the indexes and search tables convtree keeps, those that are missing.

        Existing ones are looked up first: ``CREATE INDEX IF NOT EXISTS`` would
        wait for every open transaction on the table even when the index exists.
        dataknobs-data's generic indexes that no query uses (`UNUSED_INDEXES`)
        are dropped after, and the table gets its storage setting (`TOAST_TARGET`),
        when they can be (`_tune`).
        Without the ``pg_trgm`` extension (and the right to create it), search
        scans the text table instead of using a trigram index.
        """
        schema = self.db.schema_name
        with _connection_errors(self.name):
            async with self._pool().acquire() as conn:
                trigram = await conn.fetchval(
                    "SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'"
                )
                if not trigram:
                    try:
                        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                        trigram = 1
                    except asyncpg_errors() as exc:  # no right to create it
                        self.capabilities = replace(
                            self.capabilities,
                            search=f"scan of the text table (no pg_trgm: {exc})",
                        )
                self.dialect = PostgresDialect(self.table, trigram=bool(trigram))
                wanted = {created_name(ddl): ddl for ddl in self.dialect.indexes()}
                unused = [name.format(table=self.db.table_name) for name in UNUSED_INDEXES]
                # One lookup of both: ours that exist, and dataknobs-data's unused
                # ones that are indexes of this table (the second column).
                present = await conn.fetch(
                    "SELECT c.relname, i.indrelid = $3::regclass FROM pg_class c "
                    "LEFT JOIN pg_index i ON i.indexrelid = c.oid "
                    "WHERE c.relnamespace = $1::regnamespace AND c.relname = ANY($2::text[])",
                    schema,
                    [*wanted, *unused],
                    self.table,
                )
                droppable = [name for name, ours in present if ours and name in unused]
                options = await conn.fetchval(
                    "SELECT reloptions FROM pg_class WHERE oid = $1::regclass", self.table
                )
                # A target the table's owner set is kept.
                retune = not any(o.startswith("toast_tuple_target=") for o in options or [])
                for name, _ in present:
                    wanted.pop(name, None)
                missing = list(wanted.values())
                # Statistics on the head test (PostgreSQL 14+), without which the planner
                # takes every table for a handful of heads and probes the search texts
                # once per head instead of using their trigram index.
                stats = f"{self.db.table_name}_ct_heads"
                if int(await conn.fetchval("SHOW server_version_num")) >= 140000 and not (
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_statistic_ext WHERE stxname = $1 "
                        "AND stxnamespace = $2::regnamespace",
                        stats,
                        schema,
                    )
                ):
                    missing.append(
                        f"CREATE STATISTICS IF NOT EXISTS {schema}.{stats} "
                        f"ON (strpos(id, '~')), (strpos(id, '/')) FROM {self.table}"
                    )
                if missing:
                    async with conn.transaction():
                        for ddl in missing:
                            await conn.execute(ddl)
                    await conn.execute(f"ANALYZE {self.table}")
                    await conn.execute(f"ANALYZE {self.table}_text")
                if droppable or retune:
                    await self._tune(conn, droppable, retune)

    async def _tune(self, conn: Any, names: Sequence[str], retune: bool) -> None:
        """Drop the `UNUSED_INDEXES` the table has (``names``) and set `TOAST_TARGET`
        (``retune``): best effort, each in a transaction of its own. A drop needs the
        table to itself, so it waits at most 2 s for other transactions; the setting
        waits as long for vacuums and schema changes (not for reads and writes). Without
        the right (not the table's owner), or on a busy table, the table stays as it is
        (costing space, not answers) and the next open tries again."""
        statements = [f"DROP INDEX IF EXISTS {self.db.schema_name}.{name}" for name in names]
        if retune:
            statements.append(f"ALTER TABLE {self.table} SET ({TOAST_TARGET})")
        for sql in statements:
            try:
                async with conn.transaction():
                    await conn.execute("SET LOCAL lock_timeout = '2s'")
                    await conn.execute(sql)
            except asyncpg_errors():
                continue

    async def get_setting(self, name: str) -> str | None:
        with _connection_errors(self.name):
            value = await self._pool().fetchval(self.dialect.state_sql()[0], name)
        return None if value is None else str(value)

    async def put_setting(self, name: str, value: str) -> None:
        with _connection_errors(self.name):
            await self._pool().execute(self.dialect.state_sql()[1], name, value)

    async def replace_texts(self, key: str, revision: int, texts: TextChanges) -> bool:
        with _connection_errors(self.name):
            async with self._pool().acquire() as conn, conn.transaction():
                still = await conn.fetchval(
                    f"SELECT 1 FROM {self.table} WHERE id = $1 "
                    "AND (data->>'revision')::bigint = $2 FOR UPDATE",
                    key,
                    revision,
                )
                if still:
                    await self._texts(conn, key, texts)
        return bool(still)

    async def _texts(self, conn: Any, key: str, texts: TextChanges) -> None:
        for sql, rows in self.dialect.text_writes(key, texts):
            await conn.executemany(sql, rows)

    def _pool(self) -> Any:
        pool = self.db._pool
        if pool is None:
            raise StorageError(f"{self.name} is closed")
        return pool

    async def read(self, key: str) -> Record | None:
        with _connection_errors(self.name):
            data = await self._pool().fetchval(
                f"SELECT data::text FROM {self.table} WHERE id = $1", key
            )
        return None if data is None else decode_record(data, store=self.name, key=key)

    async def read_many(self, keys: Sequence[str]) -> list[Record | None]:
        """One ``SELECT ... WHERE id = ANY(...)``: the records as of one moment.

        A segment comes back as ``{"kind": "segment", "payload": <text>}`` with the
        payload text taken out of the JSONB by the server (`_PAYLOAD`): turning a
        large JSONB value into text, sending it escaped and decoding it again was
        half of a load. Every other row comes back whole.
        """
        with _connection_errors(self.name):
            rows = await self._pool().fetch(
                f"SELECT id, payload, CASE WHEN payload IS NULL THEN data::text END "
                f"FROM (SELECT id, data, {_PAYLOAD} AS payload FROM {self.table} "
                "WHERE id = ANY($1::text[]) OFFSET 0) AS r",
                list(keys),
            )
        found = {key: (payload, data) for key, payload, data in rows}
        out: list[Record | None] = []
        for key in keys:
            row = found.get(key)
            if row is None:
                out.append(None)
            elif row[0] is not None:
                out.append({"kind": "segment", "payload": row[0]})
            else:
                out.append(decode_record(row[1], store=self.name, key=key))
        return out

    async def delete(self, key: str) -> bool:
        with _connection_errors(self.name):
            if "~" in key:
                status = await self._pool().execute(f"DELETE FROM {self.table} WHERE id = $1", key)
            else:
                async with self._pool().acquire() as conn, conn.transaction():
                    status = await conn.execute(f"DELETE FROM {self.table} WHERE id = $1", key)
                    await conn.execute(self.dialect.text_sql()[0], key)
        return bool(status != "DELETE 0")

    async def scan_keys(self, prefix: str = "") -> AsyncIterator[str]:
        with _connection_errors(self.name):
            rows = await self._pool().fetch(
                f"SELECT id FROM {self.table} WHERE left(id, $2) = $1 AND strpos(id, '/') = 0",
                prefix,
                len(prefix),
            )
        for row in rows:
            yield row[0]

    async def scan_heads(
        self, where: Sequence[tuple[tuple[str, ...], str]] = ()
    ) -> AsyncIterator[HeadItem]:
        # Narrow by meta only where data has a meta object: a row that has not
        # is returned, to be reported as damaged, never dropped.
        sql = [
            f"SELECT id, data::text FROM {self.table} "
            "WHERE strpos(id, '~') = 0 AND strpos(id, '/') = 0"
        ]
        params: list[Any] = []
        for path, value in where:
            params += [["meta", *path], value]
            sql.append(
                "AND (jsonb_typeof(data -> 'meta') IS DISTINCT FROM 'object' "
                f"OR data #>> ${len(params) - 1}::text[] = ${len(params)})"
            )
        with _connection_errors(self.name):
            rows = await self._pool().fetch(" ".join(sql), *params)
        for key, data in rows:
            yield head_item(data, store=self.name, key=key)

    async def quarantine(self, key: str) -> str:
        aside = quarantine_id(key)
        with _connection_errors(self.name):
            async with self._pool().acquire() as conn, conn.transaction():
                status = await conn.execute(
                    f"UPDATE {self.table} SET id = $2, updated_at = now() WHERE id = $1",
                    key,
                    aside,
                )
                if "~" not in key:
                    await conn.execute(self.dialect.text_sql()[0], key)
        if status == "UPDATE 0":
            raise StorageError(f"{self.name}: no record {key!r} to set aside")
        return f"row {aside!r} of table {self.table}"

    def _upsert_sql(self) -> str:
        return (
            f"INSERT INTO {self.table} (id, data, metadata, created_at, updated_at) "
            "VALUES ($1, $2::jsonb, NULL, now(), now()) "
            "ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, updated_at = now()"
        )

    async def _upsert(self, key: str, record: Record) -> None:
        with _connection_errors(self.name):
            await self._pool().execute(self._upsert_sql(), key, json.dumps(record))

    async def commit_new(self, items: Sequence[CommitItem]) -> list[bool]:
        """All in one transaction, statements batched (``executemany``)."""
        insert = (
            f"INSERT INTO {self.table} (id, data, metadata, created_at, updated_at) "
            "VALUES ($1, $2::jsonb, NULL, now(), now()) ON CONFLICT (id) DO NOTHING"
        )
        rows, texts = batch_rows(items)
        keys = [key for key, _ in rows]
        with _connection_errors(self.name):
            async with self._pool().acquire() as conn, conn.transaction():
                existing = await conn.fetchval(
                    f"SELECT count(*) FROM {self.table} WHERE id = ANY($1::text[])", keys
                )
                if existing:
                    raise PreconditionFailed(
                        f"{self.name}: a conversation of the batch exists already"
                    )
                await conn.executemany(insert, rows)
                if texts:
                    await conn.executemany(self.dialect.text_sql()[2], texts)
                # Another writer may have inserted one between the check and the insert:
                # then ours was skipped (DO NOTHING) and the stored head is not ours.
                mine = await conn.fetchval(
                    f"SELECT count(*) FROM {self.table} WHERE id = ANY($1::text[]) "
                    "AND data->>'token' = ANY($2::text[])",
                    [item.key for item in items],
                    [item.head["token"] for item in items],
                )
                if mine != len(items):
                    raise PreconditionFailed(
                        f"{self.name}: a conversation of the batch was created meanwhile"
                    )
        return [True] * len(items)

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
        texts = texts or TextChanges(full=False, texts={}, removed=())
        statement = self._commit_statement(
            key, head, expect=expect, token=token, segments=segments, obsolete=obsolete, texts=texts
        )
        with _connection_errors(self.name):
            written = await self._pool().fetchval(statement.sql, *statement.params)
        if written != 1:
            raise refusal(self.name, key, expect)

    def _commit_statement(
        self,
        key: str,
        head: Record,
        *,
        expect: int | None,
        token: str | None,
        segments: Mapping[str, Record],
        obsolete: Sequence[str],
        texts: TextChanges,
    ) -> Statement:
        """A save as one statement, so one round trip and atomic by itself: the head's
        conditional write is the first CTE, and every other write happens only if it
        changed a row (a refused save writes nothing).

        Only the writes this save makes are in it (an append inserts a segment and
        its texts, and deletes nothing): the statement then has one shape per kind
        of save, with no parameter choosing a branch, so the server keeps one plan
        of each (a generic plan) instead of planning again at every save.
        """
        t, text = self.table, self.dialect.text_table
        params: list[Any] = []

        def p(value: Any, cast: str) -> str:
            return f"{self.dialect.param(params, value)}::{cast}"

        k, data = p(key, "text"), p(json.dumps(head), "jsonb")
        if expect is None:
            write = (
                f"INSERT INTO {t} (id, data, metadata, created_at, updated_at) "
                f"VALUES ({k}, {data}, NULL, now(), now()) ON CONFLICT (id) DO NOTHING"
            )
        else:
            write = (
                f"UPDATE {t} SET data = {data}, updated_at = now() WHERE id = {k} "
                f"AND (data->>'revision')::bigint = {p(expect, 'bigint')}"
            )
            if token is not None:
                write += f" AND data->>'token' = {p(token, 'text')}"
        done = "EXISTS (SELECT 1 FROM h)"
        writes: list[str] = []  # what happens only if the head write changed a row
        if segments:
            keys = p(list(segments), "text[]")
            records = p([json.dumps(segment) for segment in segments.values()], "text[]")
            writes.append(
                f"INSERT INTO {t} (id, data, metadata, created_at, updated_at) "
                f"SELECT k, d::jsonb, NULL, now(), now() FROM unnest({keys}, {records}) "
                f"AS u(k, d) WHERE {done} "
                "ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, updated_at = now()"
            )
        if obsolete:
            gone_segments = p(list(obsolete), "text[]")
            writes.append(f"DELETE FROM {t} WHERE id = ANY({gone_segments}) AND {done}")
        nodes = list(texts.texts)
        if texts.full:  # every text but the new ones
            writes.append(
                f"DELETE FROM {text} WHERE conv = {k} "
                f"AND node <> ALL({p(nodes, 'text[]')}) AND {done}"
            )
        elif gone := [node for node in texts.removed if node not in texts.texts]:
            writes.append(
                f"DELETE FROM {text} WHERE conv = {k} AND node = ANY({p(gone, 'text[]')}) "
                f"AND {done}"
            )
        if nodes:
            bodies = [texts.texts[node] for node in nodes]
            writes.append(
                f"INSERT INTO {text} (conv, node, body) SELECT {k}, n, b "
                f"FROM unnest({p(nodes, 'text[]')}, {p(bodies, 'text[]')}) AS u(n, b) "
                f"WHERE {done} ON CONFLICT (conv, node) DO UPDATE SET body = EXCLUDED.body"
            )
        named = [f"h AS ({write} RETURNING 1)", *(f"w{i} AS ({w})" for i, w in enumerate(writes))]
        return Statement(f"WITH {', '.join(named)} SELECT count(*) FROM h", params)


async def _keep_session(conn: Any) -> None:
    """The pool's reset of a released connection: nothing to undo.

    asyncpg's default runs ``RESET ALL``, ``CLOSE ALL``, ``UNLISTEN *`` and
    ``pg_advisory_unlock_all()`` at every release, a round trip each time (as long
    as a save's). convtree sets no session state: its settings are given at
    connect, it opens no cursor outside a transaction, listens to nothing and
    takes no advisory lock; an open transaction is still rolled back by asyncpg.
    """


def connect_args(url: str, shown: str | None = None) -> dict[str, Any]:
    """asyncpg's connection keywords from a ``postgresql://`` URL (``?host=`` a socket
    directory); ``shown`` is how errors name the URL (``url`` by default)."""
    parts = urlsplit(url)
    connect: dict[str, Any] = {
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or "") or None,
        "database": unquote(parts.path.lstrip("/")) or "postgres",
        "host": query(url).get("host") or parts.hostname or "localhost",
    }
    try:
        if parts.port:
            connect["port"] = parts.port
    except ValueError:
        raise StorageError(f"bad port in {mask_url(shown or url)!r}") from None
    return connect


async def open_postgres(url: str) -> DataknobsConversationStorage:
    """``postgresql://user:pass@host:port/db?table=...&schema=...`` (``?host=/socket/dir``)."""
    params = query(url)
    connect = connect_args(url)
    table = identifier(params.get("table", "conversations"), "table", url)
    schema = identifier(params.get("schema", "public"), "schema", url)
    for what, name in (("table", table), ("schema", schema)):
        if name in RESERVED:
            raise StorageError(
                f"{what} {name!r} in {mask_url(url)!r} is an SQL keyword; choose another name"
            )
    settings = dict(SERVER_SETTINGS)
    if "lock_timeout" in params:
        try:
            seconds = float(params["lock_timeout"])
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise StorageError(f"lock_timeout in {mask_url(url)!r} must be a number of seconds > 0")
        settings["lock_timeout"] = f"{max(1, round(seconds * 1000))}ms"
    db = OwnPoolPostgresDatabase({"table": table, "schema": schema}, connect, settings)
    await connected(db, url)  # closes the pool if the open fails
    return await indexed_storage(PostgresRecordStore(db, name=mask_url(url)))


def asyncpg_errors() -> type[Exception]:
    """asyncpg's base error (imported late: the driver is an optional dependency)."""
    import asyncpg

    return asyncpg.PostgresError  # type: ignore[no-any-return]
