"""open_storage(url): a ready storage from a URL.

- ``memory://`` or ``memory://name``: dataknobs-data memory backend (``name``: one
  store shared in this process).
- ``file:///path/dir``: convtree's crash-safe file store, one file per record; file locks.
- ``sqlite:///path/file.db``: dataknobs-data SQLite backend (WAL); file locks.
- ``s3://bucket/prefix?endpoint_url=...&region=...``: dataknobs-data S3 backend;
  credentials from the usual AWS environment variables; conditional-PUT leases.
- ``postgresql://user:pass@host:port/db?table=...``: dataknobs-data PostgreSQL backend on
  its own pool (``?host=/socket/dir``, ``&schema=``); advisory locks.

With no URL: ``$CONVTREE_STORE`` if set, else the embedded default,
``sqlite:///~/.local/share/convtree/conversations.db``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import StorageError
from .adapter import DataknobsConversationStorage
from .guards import FileLockGuard, PostgresAdvisoryGuard, S3LeaseGuard

__all__ = ["DEFAULT_STORE", "default_store_url", "mask_url", "open_storage"]

DEFAULT_STORE = Path("~/.local/share/convtree/conversations.db")
"""Where the embedded default SQLite store lives."""

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MEMORY: dict[str, Any] = {}


def default_store_url() -> str:
    """``$CONVTREE_STORE``, or the embedded default SQLite file."""
    return os.environ.get("CONVTREE_STORE") or f"sqlite:///{DEFAULT_STORE.expanduser()}"


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


class open_storage:
    """Open a conversation storage from a URL (see the module doc for URLs).

    Use ``async with open_storage(url) as storage:`` (closed on exit), or
    ``storage = await open_storage(url)`` and ``await storage.close()``.

    Raises:
        StorageError: unknown scheme, a missing extra (the message says which
            ``pip install`` fixes it), or a server that cannot be reached (the
            URL is shown with the password masked).
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = default_store_url() if url is None else url
        self._storage: DataknobsConversationStorage | None = None

    def __await__(self) -> Generator[Any, None, DataknobsConversationStorage]:
        return self._open().__await__()

    async def __aenter__(self) -> DataknobsConversationStorage:
        self._storage = await self._open()
        return self._storage

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._storage is not None:
            await self._storage.close()

    def __repr__(self) -> str:
        return f"open_storage({mask_url(self.url)!r})"

    async def _open(self) -> DataknobsConversationStorage:
        if not isinstance(self.url, str):
            raise StorageError(f"a storage URL is a string, got {self.url!r}")
        scheme = urlsplit(self.url).scheme.lower()
        opener = _OPENERS.get(scheme)
        if opener is None:
            raise StorageError(
                f"unknown storage URL scheme {scheme!r} in {mask_url(self.url)!r}; use one of "
                "memory://, file:///dir, sqlite:///file.db, s3://bucket/prefix, postgresql://..."
            )
        return await opener(self.url)


def _import(module: str, extra: str, url: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise StorageError(
            f"{mask_url(url)!r} needs the {module} package: pip install 'convtree[{extra}]'"
        ) from None


def _query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def _local_path(url: str, what: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise StorageError(f"{what} URL {url!r} must be {parts.scheme}:///absolute/path")
    path = unquote(parts.path)
    if not path or path == "/":
        raise StorageError(f"{what} URL {url!r} has no path")
    return Path(path).expanduser()


async def _connected(db: Any, url: str) -> None:
    try:
        await db.connect()
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError(f"cannot open {mask_url(url)}: {_scrub(str(exc), url)}") from None


def _scrub(message: str, url: str) -> str:
    password = urlsplit(url).password
    if password:
        message = message.replace(password, "***").replace(unquote(password), "***")
    return message


async def _open_memory(url: str) -> DataknobsConversationStorage:
    from dataknobs_data.backends.memory import AsyncMemoryDatabase

    name = urlsplit(url).netloc
    db = _MEMORY.get(name) if name else None
    if db is None:
        db = AsyncMemoryDatabase({})
        if name:
            _MEMORY[name] = db
    return DataknobsConversationStorage(db, name=url if name else f"memory://@{id(db):x}")


async def _open_file(url: str) -> DataknobsConversationStorage:
    from .filestore import FileDatabase

    directory = _local_path(url, "file store")
    db = FileDatabase({"path": str(directory), "fsync": _query(url).get("fsync") != "0"})
    await _connected(db, url)
    return DataknobsConversationStorage(
        db, guard=FileLockGuard(directory / ".locks"), name=f"file://{directory}", owns_db=True
    )


async def _open_sqlite(url: str) -> DataknobsConversationStorage:
    _import("aiosqlite", "sqlite", url)
    from dataknobs_data.backends.sqlite_async import AsyncSQLiteDatabase

    path = _local_path(url, "SQLite")
    table = _identifier(_query(url).get("table", "conversations"), "table", url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the directory of {path}: {exc}") from None
    db = AsyncSQLiteDatabase({"path": str(path), "table": table, "timeout": 30.0})
    await _connected(db, url)
    return DataknobsConversationStorage(
        db,
        guard=FileLockGuard(Path(f"{path}.locks")),
        name=f"sqlite://{path}?table={table}",
        owns_db=True,
    )


async def _open_s3(url: str) -> DataknobsConversationStorage:
    _import("aioboto3", "s3", url)
    parts = urlsplit(url)
    bucket = parts.netloc
    if not bucket:
        raise StorageError(f"S3 URL {url!r} has no bucket: s3://bucket/prefix")
    prefix = unquote(parts.path).strip("/")
    query = _query(url)
    client: dict[str, Any] = {}
    if query.get("endpoint_url"):
        client["endpoint_url"] = query["endpoint_url"]
    region = query.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    client["region_name"] = region
    base = f"{prefix}/" if prefix else ""
    config: dict[str, Any] = {"bucket": bucket, "prefix": f"{base}data", "region_name": region}
    if "endpoint_url" in client:
        config["endpoint_url"] = client["endpoint_url"]
    for key in ("aws_access_key_id", "aws_secret_access_key"):
        value = os.environ.get(key.upper())
        if value:
            config[key] = value
    db = _s3_database(config)
    await _connected(db, url)
    name = f"s3://{bucket}/{prefix}"
    guard = S3LeaseGuard(client, bucket, base)
    storage = DataknobsConversationStorage(
        db,
        guard=guard,
        nested_filters=False,  # dataknobs' S3 search cannot filter nested fields
        name=name,
        owns_db=True,
    )
    try:
        s3 = await guard._get_client()
        await s3.head_bucket(Bucket=bucket)
    except Exception as exc:
        await storage.close()
        raise StorageError(f"cannot reach bucket {bucket!r} at {name}: {exc}") from None
    return storage


async def _open_postgres(url: str) -> DataknobsConversationStorage:
    _import("asyncpg", "postgres", url)
    parts = urlsplit(url)
    query = _query(url)
    connect: dict[str, Any] = {
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or "") or None,
        "database": unquote(parts.path.lstrip("/")) or "postgres",
        "host": query.get("host") or parts.hostname or "localhost",
    }
    if parts.port:
        connect["port"] = parts.port
    table = _identifier(query.get("table", "conversations"), "table", url)
    schema = _identifier(query.get("schema", "public"), "schema", url)
    db = _postgres_database({"table": table, "schema": schema}, connect, url)
    await _connected(db, url)
    return DataknobsConversationStorage(
        db,
        guard=PostgresAdvisoryGuard(connect, f"{schema}.{table}"),
        name=mask_url(url),
        owns_db=True,
    )


def _postgres_database(config: dict[str, Any], connect: dict[str, Any], url: str) -> Any:
    from dataknobs_data.backends.postgres import AsyncPostgresDatabase
    from dataknobs_data.backends.sql_base import SQLQueryBuilder

    class OwnPoolPostgresDatabase(AsyncPostgresDatabase):
        """dataknobs' backend on a pool of its own.

        dataknobs-data shares one pool between instances with the same
        host/port/db/user (closing one breaks the others) and builds its DSN
        without escaping (a password with ``@`` or a socket directory breaks
        it); here asyncpg gets the parts as keywords.
        """

        async def connect(self) -> None:
            if self._connected:
                return
            import asyncpg

            self._pool = await asyncpg.create_pool(min_size=1, max_size=4, **connect)
            async with self._pool.acquire() as conn:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{config["schema"]}"')
            self.query_builder = SQLQueryBuilder(
                self.table_name, self.schema_name, dialect="postgres"
            )
            await self._ensure_table()
            self._connected = True

        async def close(self) -> None:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                await pool.close()
            self._connected = False

    return OwnPoolPostgresDatabase(dict(config, ensure_database=False))


_S3_READS_AT_ONCE = 32


def _s3_database(config: dict[str, Any]) -> Any:
    import asyncio
    import json

    from aiobotocore.config import AioConfig
    from botocore.exceptions import ClientError
    from dataknobs_data.backends.s3_async import AsyncS3Database

    class _OneClient:
        """Stands in for the aioboto3 session: every ``client()`` is the same one."""

        def __init__(self, client: Any) -> None:
            self._client = client

        def client(self, *args: Any, **kwargs: Any) -> Any:
            return self

        async def __aenter__(self) -> Any:
            return self._client

        async def __aexit__(self, *exc: object) -> None:
            return None

    class OneClientS3Database(AsyncS3Database):
        """dataknobs' S3 backend on one client, with a concurrent search.

        dataknobs-data opens a new S3 client (a new connection pool and
        credential lookup) on every call, and its ``search`` reads the objects
        one after another. Here one client lives from ``connect`` to
        ``close``, and ``search`` reads up to 32 objects at once, skipping the
        ids convtree never searches (segments, ``<id>~<revision>``).
        """

        _client_cm: Any = None
        _client: Any = None

        async def connect(self) -> None:
            if self._connected:
                return
            await super().connect()
            session: Any = self._session
            cm = session.client(
                "s3",
                endpoint_url=self._pool_config.endpoint_url,
                config=AioConfig(max_pool_connections=_S3_READS_AT_ONCE),
            )
            self._client = await cm.__aenter__()
            self._client_cm = cm
            self._session = _OneClient(self._client)  # type: ignore[assignment]

        async def close(self) -> None:
            cm, self._client_cm, self._client = self._client_cm, None, None
            if cm is not None:
                await cm.__aexit__(None, None, None)
            await super().close()

        async def search(self, query: Any) -> list[Any]:
            if query.sort_specs or query.offset_value or query.limit_value or query.fields:
                raise NotImplementedError("convtree's S3 database searches by filters only")
            self._check_connection()
            bucket, prefix = self._pool_config.bucket, f"{self._pool_config.prefix}/"
            s3 = self._client
            ids = []
            async for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                for item in page.get("Contents", ()):
                    key = item["Key"]
                    rid = key[len(prefix) : -len(".json")]
                    if key.endswith(".json") and "/" not in rid and "~" not in rid:
                        ids.append(rid)
            slots = asyncio.Semaphore(_S3_READS_AT_ONCE)

            async def get(rid: str) -> Any:
                async with slots:
                    try:
                        response = await s3.get_object(Bucket=bucket, Key=self._get_key(rid))
                    except ClientError as exc:
                        if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                            return None  # deleted since the listing
                        raise
                    body = await response["Body"].read()
                record = self._s3_object_to_record(json.loads(body))
                record.metadata["id"] = rid
                return record

            records = await asyncio.gather(*(get(rid) for rid in ids))
            return [r for r in records if r is not None and self._matches_filters(r, query.filters)]

    return OneClientS3Database(config)


def _identifier(value: str, what: str, url: str) -> str:
    if not _IDENT.match(value):
        raise StorageError(
            f"{what} {value!r} in {mask_url(url)!r} must be a SQL identifier "
            "(letters, digits, _; not starting with a digit)"
        )
    return value


_OPENERS = {
    "memory": _open_memory,
    "file": _open_file,
    "sqlite": _open_sqlite,
    "s3": _open_s3,
    "postgresql": _open_postgres,
    "postgres": _open_postgres,
}
