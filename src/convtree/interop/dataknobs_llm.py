"""Copy every conversation of a store that dataknobs-llm wrote into a convtree store.

dataknobs-llm 0.5.x (``DataknobsConversationStorage``) keeps each conversation
as one dataknobs-data record whose id is the conversation id and whose fields
are the conversation's document (``schema_version``, ``conversation_id``,
``nodes``, ``edges``, ``current_node_id``, ``metadata``, ``created_at``,
``updated_at``: schema 0.0.0, 1.0.0 or 1.1.0). [`migrate()`][convtree.interop.dataknobs_llm.migrate]
reads those records through dataknobs-data itself, **without changing the source**
(SQLite is opened read-only, PostgreSQL in read-only transactions, no table or
database is ever created), loads each document with
[`ConversationState.from_dict`][convtree.ConversationState.from_dict] (which migrates
the old schemas: positional ids kept as opaque ids, naive timestamps read as UTC,
tool calls into the message) and saves it into the destination.

A source is named by the URL of its dataknobs-data backend, prefixed with
``dataknobs-llm+``; the path and connection rules are those of convtree's
own store URLs (see docs/storage.md), the table is dataknobs-data's default,
``records``, unless ``?table=`` says otherwise:

- file backend (one JSON file): ``dataknobs-llm+file:///abs/path/conversations.json``;
- SQLite: ``dataknobs-llm+sqlite:////abs/path.db?table=records`` (three slashes:
  a relative path, ``dataknobs-llm+sqlite:///rel.db``);
- PostgreSQL: ``dataknobs-llm+postgresql://user:pass@host:5432/db?table=records&schema=public``
  (``?host=/socket/dir`` for a Unix socket);
- memory: no URL (it lives inside one process): pass the dataknobs-data database object.

Example:
    ```python
    import asyncio
    from convtree.interop.dataknobs_llm import migrate

    report = asyncio.run(migrate("dataknobs-llm+sqlite:////srv/app/chats.db",
                                 "sqlite:////srv/app/convtree.db"))
    print("\\n".join(report.lines()))
    ```
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from ..errors import ConvtreeError, StorageError, StorageUnavailableError
from ..state import ConversationState
from . import Outcome, put

if TYPE_CHECKING:
    from ..storage.base import ConversationStorage

__all__ = [
    "DEFAULT_TABLE",
    "SCHEME_PREFIX",
    "Failure",
    "MigrationReport",
    "migrate",
    "open_source",
    "read_source",
]

SCHEME_PREFIX: Final = "dataknobs-llm+"
"""What a source URL starts with: ``dataknobs-llm+sqlite:///...``."""

DEFAULT_TABLE: Final = "records"
"""The table dataknobs-data creates when it is given none (what dataknobs-llm uses)."""

_PAGE = 100  # records read per query from SQL backends
_SETTINGS: Final = {
    "application_name": "convtree-migrate",
    # Every transaction of this session is read-only: the source cannot be changed.
    "default_transaction_read_only": "on",
}

Progress = Callable[[int, "int | None"], None]
"""Called after each record with (records done, records in the source or ``None``)."""


@dataclass(frozen=True)
class Failure:
    """A record that was not copied: its id in the source, and why."""

    record_id: str
    reason: str


@dataclass
class MigrationReport:
    """What [`migrate()`][convtree.interop.dataknobs_llm.migrate] did (or, in a dry run, would do).

    Attributes:
        source: The source, its password masked.
        dest: The destination store, its password masked.
        dry_run: Nothing was written.
        copied: Ids of conversations added to the destination.
        replaced: Ids stored differently before and replaced (``replace=True``).
        unchanged: Ids the destination already held exactly so: nothing written.
        present: Ids the destination holds differently, kept (``replace=False``).
        failed: Records that could not be read or saved, with the reason.
    """

    source: str
    dest: str
    dry_run: bool = False
    copied: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Records read from the source."""
        return (
            len(self.copied)
            + len(self.replaced)
            + len(self.unchanged)
            + len(self.present)
            + len(self.failed)
        )

    @property
    def exit_code(self) -> int:
        """0 when the destination now holds every conversation of the source as it is there."""
        return 1 if self.failed or self.present else 0

    def lines(self) -> list[str]:
        """The report as the ``convtree migrate`` command prints it."""
        would = "would be " if self.dry_run else ""
        out = [
            f"{'dry run: ' if self.dry_run else ''}{self.total} conversation(s) in {self.source}, "
            f"into {self.dest}: {len(self.copied)} {would}copied, {len(self.replaced)} "
            f"{would}replaced, {len(self.unchanged)} unchanged, {len(self.present)} already "
            f"present and different (kept), {len(self.failed)} failed"
        ]
        out += [
            f"kept: {cid!r} is already stored and differs (--replace replaces it)"
            for cid in self.present
        ]
        out += [f"failed: {f.record_id!r}: {f.reason}" for f in self.failed]
        return out


async def migrate(
    source: str | Any,
    dest: str | ConversationStorage,
    *,
    dry_run: bool = False,
    replace: bool = False,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy every conversation of a dataknobs-llm store into a convtree store.

    The source is only read. Each record becomes a conversation with the same
    id, node ids, tree, cursor, metadata and times (see the module docs); one
    that cannot be loaded is reported in ``failed`` with the reason and the
    others are copied. A conversation the destination holds already is left
    alone when it is the same (``unchanged``), and when it differs too
    (``present``) unless ``replace``. Running it again copies only what is new.

    Args:
        source: A ``dataknobs-llm+...`` URL, a dataknobs-data ``AsyncDatabase``
            (the memory backend's only way in; it is not closed), or dataknobs-llm's
            ``DataknobsConversationStorage`` (its ``backend`` is read).
        dest: A convtree store URL ([`open_storage()`][convtree.open_storage]), or an
            open [`ConversationStorage`][convtree.ConversationStorage] (not closed).
        dry_run: Read and compare everything, write nothing.
        replace: Replace destination conversations that differ.
        progress: Called after each record with (done, total).

    Returns:
        What was copied, replaced, unchanged, kept and failed.

    Raises:
        StorageError: a store cannot be opened or read (a missing file or table,
            no dataknobs-data, a lost connection).
    """
    from ..storage.registry import open_storage
    from ..storage.urls import mask_url

    async with contextlib.AsyncExitStack() as stack:
        if isinstance(source, str):
            db = await stack.enter_async_context(open_source(source))
            source_name = mask_url(source)
        else:
            db = getattr(source, "backend", source)
            if not callable(getattr(db, "search", None)):
                raise TypeError(
                    "migrate() reads a dataknobs-llm+ URL, a dataknobs-data AsyncDatabase or "
                    f"a DataknobsConversationStorage, not {type(source).__name__}"
                )
            source_name = _db_name(db)
        if isinstance(dest, str):
            storage = await stack.enter_async_context(open_storage(dest))
            dest_name = mask_url(dest)
        else:
            storage = dest
            dest_name = str(getattr(dest, "name", None) or type(dest).__name__)
        report = MigrationReport(source_name, dest_name, dry_run)
        total = await _count(db, source_name)
        done = 0
        async for record_id, data in read_source(db, name=source_name):
            await _copy_one(storage, record_id, data, report, replace=replace, dry_run=dry_run)
            done += 1
            if progress is not None:
                progress(done, total)
        return report


async def _copy_one(
    storage: ConversationStorage,
    record_id: str,
    data: dict[str, Any] | Exception,
    report: MigrationReport,
    *,
    replace: bool,
    dry_run: bool,
) -> None:
    if isinstance(data, Exception):
        report.failed.append(Failure(record_id, str(data)))
        return
    try:
        state = ConversationState.from_dict(data)
    except ConvtreeError as exc:
        report.failed.append(Failure(record_id, f"cannot be loaded: {exc}"))
        return
    cid = state.conversation_id
    try:
        outcome = await put(storage, state, replace=replace, dry_run=dry_run)
    except StorageError as exc:
        if isinstance(exc, StorageUnavailableError):
            raise  # the store, not this conversation: stop
        report.failed.append(Failure(record_id, f"cannot be saved: {exc}"))
        return
    {
        Outcome.ADDED: report.copied,
        Outcome.REPLACED: report.replaced,
        Outcome.UNCHANGED: report.unchanged,
        Outcome.KEPT: report.present,
    }[outcome].append(cid)


async def read_source(
    db: Any, *, name: str | None = None
) -> AsyncIterator[tuple[str, dict[str, Any] | Exception]]:
    """Every record of a dataknobs-data database: ``(record id, document fields)``.

    SQL backends are read in pages of 100 ordered by id (memory bounded by a
    page); other backends (memory, file) in one search, as they hold or read
    everything at once anyway. A record whose fields cannot be read yields the
    exception instead of its fields.

    Raises:
        StorageError: the database cannot be read.
    """
    from dataknobs_data import Query

    label = name or _db_name(db)
    keyset = _is_sql(db)
    last: str | None = None
    while True:
        query = Query()
        if keyset:
            query = query.sort_by("id", "asc").limit(_PAGE)
            if last is not None:
                query = query.filter("id", ">", last)
        async with _reading(label):
            batch = await db.search(query)
        for record in batch:
            record_id = _record_id(record)
            try:
                data: dict[str, Any] | Exception = {
                    key: value.value for key, value in record.fields.items()
                }
            except (AttributeError, TypeError, ValueError) as exc:
                data = exc
            yield record_id, data
        if not keyset or len(batch) < _PAGE:
            return
        last = _record_id(batch[-1])


def _record_id(record: Any) -> str:
    for candidate in (getattr(record, "storage_id", None), getattr(record, "id", None)):
        if isinstance(candidate, str) and candidate:
            return candidate
    try:
        value = record.fields["conversation_id"].value
    except (AttributeError, KeyError, TypeError):
        return "<no id>"
    return value if isinstance(value, str) else repr(value)


def _is_sql(db: Any) -> bool:
    return any(
        cls.__name__ in ("AsyncSQLiteDatabase", "AsyncPostgresDatabase") for cls in type(db).__mro__
    )


def _db_name(db: Any) -> str:
    return f"a dataknobs-data {type(db).__name__}"


async def _count(db: Any, name: str) -> int | None:
    count = getattr(db, "count", None)
    if count is None:
        return None
    async with _reading(name):
        total = await count()
    return total if isinstance(total, int) else None


@contextlib.asynccontextmanager
async def _reading(name: str) -> AsyncIterator[None]:
    """The errors of reading a source, as one StorageError naming it."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, sqlite3.Error, RuntimeError)
    try:
        import asyncpg
    except ImportError:
        pass
    else:
        errors += (asyncpg.PostgresError, asyncpg.InterfaceError)
    try:
        yield
    except StorageError:
        raise
    except errors as exc:
        raise StorageError(f"cannot read {name}: {type(exc).__name__}: {exc}") from None


# ------------------------------------------------------------------ opening a source


@contextlib.asynccontextmanager
async def open_source(url: str) -> AsyncIterator[Any]:
    """Open the dataknobs-data database a ``dataknobs-llm+...`` URL names, read-only.

    Nothing is created or changed: a missing file, database or table is an error.

    Raises:
        StorageError: not a ``dataknobs-llm+`` URL, an unknown backend, a missing
            file or table, a connection that fails, dataknobs-data (or asyncpg)
            not installed.
    """
    from ..storage.urls import mask_url

    if not url.startswith(SCHEME_PREFIX):
        raise StorageError(
            f"{mask_url(url)!r} is not a dataknobs-llm store URL: write {SCHEME_PREFIX}"
            "sqlite:///..., file:///..., or postgresql://..."
        )
    inner = url[len(SCHEME_PREFIX) :]
    scheme = urlsplit(inner).scheme.lower()
    try:
        if scheme == "sqlite":
            db = await _open_sqlite(inner, url)
        elif scheme == "file":
            db = await _open_file(inner, url)
        elif scheme in ("postgresql", "postgres"):
            db = await _open_postgres(inner, url)
        elif scheme == "memory":
            raise StorageError(
                "a dataknobs-data memory database exists only inside the process that made "
                "it: pass the database object to convtree.interop.dataknobs_llm.migrate()"
            )
        else:
            raise StorageError(
                f"unknown dataknobs-llm backend {scheme!r} in {mask_url(url)!r}: "
                "sqlite, file or postgresql"
            )
    except ImportError as exc:
        raise StorageError(
            f"reading {mask_url(url)!r} needs {exc.name or 'a package'}: "
            "pip install 'convtree[postgres]' for PostgreSQL"
        ) from None
    try:
        yield db
    finally:
        await db.close()


def _table(inner: str, url: str) -> str:
    from ..storage.urls import identifier, query

    return identifier(query(inner).get("table", DEFAULT_TABLE), "table", url)


async def _open_sqlite(inner: str, url: str) -> Any:
    import aiosqlite
    from dataknobs_data.backends.sqlite_async import AsyncSQLiteDatabase

    from ..storage.urls import local_path

    path = local_path(inner, "dataknobs-llm SQLite")
    table = _table(inner, url)
    if not path.is_file():
        raise StorageError(f"no SQLite database at {path} (from {url!r})")

    class ReadOnlySQLite(AsyncSQLiteDatabase):
        """dataknobs-data's SQLite backend on a read-only connection; creates nothing."""

        async def connect(self) -> None:
            if self._connected:
                return
            conn = await aiosqlite.connect(
                f"{Path(self.db_path).as_uri()}?mode=ro", uri=True, timeout=self.timeout
            )
            try:
                conn.row_factory = aiosqlite.Row
                async with conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (self.table_name,),
                ) as cursor:
                    found = await cursor.fetchone()
            except BaseException:
                await conn.close()
                raise
            if found is None:
                await conn.close()
                raise StorageError(f"no table {self.table_name!r} in the SQLite database {path}")
            self.db = conn
            self._connected = True

    db = ReadOnlySQLite({"path": str(path), "table": table, "timeout": 30.0})
    async with _reading(url):
        await db.connect()
    return db


async def _open_file(inner: str, url: str) -> Any:
    from dataknobs_data.backends.file import AsyncFileDatabase

    from ..storage.urls import local_path

    path = local_path(inner, "dataknobs-llm file")
    if not path.is_file():
        raise StorageError(f"no dataknobs-data file at {path} (from {url!r})")
    if path.suffix.lower() not in (".csv", ".tsv", ".parquet", ".pq", ".gz"):
        _check_json(path)
    return AsyncFileDatabase({"path": str(path)})


def _check_json(path: Path) -> None:
    """Refuse a JSON file that does not parse, streaming it (bounded memory).

    dataknobs-data reads an unparsable file as an empty database; a migration
    would then report nothing to copy.
    """
    import ijson  # type: ignore[import-untyped]

    if path.stat().st_size == 0:
        return  # what dataknobs-data writes for no records: empty, truly
    try:
        with path.open("rb") as f:
            first = None
            for _prefix, event, _value in ijson.parse(f):
                if first is None:
                    first = event
            if first != "start_map":
                raise StorageError(
                    f"{path} is not a dataknobs-data file store: it holds no JSON object"
                )
    except ijson.JSONError as exc:
        raise StorageError(
            f"{path} is not valid JSON ({exc}): dataknobs-data would read it as empty"
        ) from None


async def _open_postgres(inner: str, url: str) -> Any:
    from dataknobs_data.backends.sql_base import SQLQueryBuilder

    from ..storage.backends.postgres import OwnPoolPostgresDatabase, connect_args
    from ..storage.urls import identifier, mask_url, query

    params = query(inner)
    connect = connect_args(inner, url)
    table = _table(inner, url)
    schema = identifier(params.get("schema", "public"), "schema", url)

    class ReadOnlyPostgres(OwnPoolPostgresDatabase):
        """dataknobs-data's PostgreSQL backend in read-only transactions; creates nothing."""

        async def connect(self) -> None:
            if self._connected:
                return
            import asyncpg

            pool = await asyncpg.create_pool(
                min_size=1, max_size=2, server_settings=self._settings, **self._connect_kwargs
            )
            try:
                found = await pool.fetchval(
                    "SELECT to_regclass($1)", f"{self.schema_name}.{self.table_name}"
                )
            except BaseException:
                await pool.close()
                raise
            if found is None:
                await pool.close()
                raise StorageError(
                    f"no table {self.schema_name}.{self.table_name} in {mask_url(url)!r}"
                )
            self._pool = pool
            self.query_builder = SQLQueryBuilder(
                self.table_name, self.schema_name, dialect="postgres"
            )
            self._connected = True

    db = ReadOnlyPostgres({"table": table, "schema": schema}, connect, _SETTINGS)
    async with _reading(mask_url(url)):
        await db.connect()
    return db
