"""``s3://bucket/prefix``: dataknobs-data's S3 object layout, saves by conditional PUT.

Records are dataknobs-data S3 objects (``<prefix>/data/<key>.json``). A save
PUTs its new segment (a new, unique key), then PUTs the head with
``If-Match: <etag>`` (``If-None-Match: *`` for a new conversation): S3 accepts
it only if the head is still the object whose revision the save was based
on, so two writers can never both win, and no lease or lock is left behind by
a writer that dies. A refused PUT deletes the segment it wrote; the storage
reads the newer head, merges or raises ConflictError, and tries again. The
ETag of each head this store read or wrote is cached, so a save by the last
writer costs a segment PUT and a head PUT.

dataknobs-data opens a new S3 client on every call and its search reads one
object at a time: here one client lives from open to close, and a scan reads
32 heads at once, skipping segment keys (they contain ``~``). An object that
is not a record (truncated, garbled, not UTF-8) raises
`DamagedRecordError` naming it; ``convtree check --repair``
moves such objects under ``<prefix>/quarantine/``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aioboto3  # noqa: F401 - dataknobs-data imports it lazily; fail here, with the hint
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError
from dataknobs_data.backends.s3_async import AsyncS3Database

from ...errors import DamagedRecordError, PreconditionFailed, StorageError, StorageUnavailableError
from ..records import (
    Capabilities,
    HeadItem,
    IfRevision,
    PutMode,
    Record,
    RecordStore,
    check_expected,
    check_mode,
    damaged,
    decode_record,
    json_type,
    read_or_damage,
)
from ..urls import query
from .dataknobs import DataknobsRecordStore, connected

if TYPE_CHECKING:
    from ..adapter import DataknobsConversationStorage

__all__ = ["OneClientS3Database", "S3RecordStore", "open_s3"]

READS_AT_ONCE = 32


class OneClientS3Database(AsyncS3Database):
    """dataknobs' S3 backend on one client that lives from ``connect`` to ``close``."""

    client: Any = None
    _client_cm: Any = None

    async def connect(self) -> None:
        if self._connected:
            return
        await super().connect()
        session: Any = self._session
        cm = session.client(
            "s3",
            endpoint_url=self._pool_config.endpoint_url,
            region_name=self._pool_config.region_name,
            config=AioConfig(max_pool_connections=READS_AT_ONCE),
        )
        self.client = await cm.__aenter__()
        self._client_cm = cm

    async def close(self) -> None:
        cm, self._client_cm, self.client = self._client_cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)
        await super().close()


def _precondition_failed(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
        409,
        412,
    )


def _not_found(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


@contextmanager
def _connection_errors(name: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if status >= 500:
            raise StorageUnavailableError(f"{name}: S3 answered {status} ({exc})") from None
        raise StorageError(f"{name}: {exc}") from None
    except (BotoCoreError, ConnectionError, OSError, asyncio.TimeoutError) as exc:
        raise StorageUnavailableError(
            f"{name}: S3 could not be reached ({type(exc).__name__}: {exc})"
        ) from None


class S3RecordStore(DataknobsRecordStore):
    """Records as S3 objects; the head is written with a conditional PUT."""

    db: OneClientS3Database

    capabilities = Capabilities(
        compare_and_set="conditional PUT of the head, If-Match / If-None-Match "
        "(every client of the bucket)",
        quarantine=True,
    )

    def __init__(
        self, db: OneClientS3Database, *, name: str, quarantine_prefix: str | None = None
    ) -> None:
        super().__init__(db, name=name, filters=False, owns_db=True)
        self.bucket = db._pool_config.bucket
        self.prefix = f"{db._pool_config.prefix}/"
        self.quarantine_prefix = quarantine_prefix or f"{self.prefix}quarantine/"
        # head key -> (revision, token, ETag)
        self._etags: dict[str, tuple[int, str | None, str]] = {}

    def _object(self, key: str) -> str:
        return f"{self.prefix}{key}.json"

    def _body(self, record: Record) -> bytes:
        from dataknobs_data import Record as DataknobsRecord

        return json.dumps(self.db._record_to_s3_object(DataknobsRecord(dict(record)))).encode()

    async def _get(self, key: str) -> tuple[Record, str] | None:
        with _connection_errors(self.name):
            try:
                response = await self.db.client.get_object(
                    Bucket=self.bucket, Key=self._object(key)
                )
            except ClientError as exc:
                if _not_found(exc):
                    return None
                raise
            body = await response["Body"].read()
        fields = self._fields(key, body)
        etag = response["ETag"]
        if fields.get("kind") == "head" and type(fields.get("revision")) is int:
            token = fields.get("token")
            self._etags[key] = (fields["revision"], token if isinstance(token, str) else None, etag)
        return fields, etag

    def _fields(self, key: str, body: bytes) -> Record:
        """A record from an object's body (dataknobs-data's layout: ``{"fields": {name:
        {"value": ...}}}``).

        Raises:
            DamagedRecordError: the body is not such an object.
        """
        where = f"object {self._object(key)!r}"
        try:
            obj = decode_record(body, store=self.name, key=key)
        except DamagedRecordError as exc:
            raise damaged(self.name, key, f"{where}: {exc.problem}") from None
        fields = obj.get("fields")
        if not isinstance(fields, dict):
            what = "missing" if fields is None else json_type(fields)
            raise damaged(self.name, key, f"{where}: its 'fields' is {what}, not an object")
        out = {}
        for name, field in fields.items():
            if not isinstance(field, dict) or "value" not in field:
                raise damaged(
                    self.name, key, f"{where}: field {name!r} is {json_type(field)} without a value"
                )
            out[name] = field["value"]
        return out

    async def read(self, key: str) -> Record | None:
        got = await self._get(key)
        return None if got is None else got[0]

    async def write(self, key: str, record: Record, mode: PutMode = "overwrite") -> None:
        check_mode(mode)
        condition: dict[str, str] = {}
        if mode == "create":
            condition["IfNoneMatch"] = "*"
        elif isinstance(mode, IfRevision):
            condition["IfMatch"] = await self._etag(key, mode.revision, mode.token)
        with _connection_errors(self.name):
            try:
                response = await self.db.client.put_object(
                    Bucket=self.bucket,
                    Key=self._object(key),
                    Body=self._body(record),
                    ContentType="application/json",
                    **condition,
                )
            except ClientError as exc:
                if condition and _precondition_failed(exc):
                    self._etags.pop(key, None)
                    raise PreconditionFailed(
                        f"record {key!r} in {self.name} changed (conditional PUT refused)",
                        key=key,
                    ) from None
                raise
        if record.get("kind") == "head" and type(record.get("revision")) is int:
            self._etags[key] = (record["revision"], record.get("token"), response["ETag"])

    async def _etag(self, key: str, revision: int, token: str | None = None) -> str:
        cached = self._etags.get(key)
        if cached is not None and cached[0] == revision and token in (None, cached[1]):
            return cached[2]
        got = await self._get(key)
        check_expected(
            None if got is None else got[0], revision, store=self.name, key=key, token=token
        )
        assert got is not None
        return got[1]

    # A refused conditional PUT of the head leaves the new segments unreferenced:
    # the record store's default commit (create the segments, conditional head
    # PUT, delete the segments on refusal) is exactly right here.
    commit = RecordStore.commit

    async def delete(self, key: str) -> bool:
        self._etags.pop(key, None)
        with _connection_errors(self.name):
            try:
                await self.db.client.head_object(Bucket=self.bucket, Key=self._object(key))
            except ClientError as exc:
                if _not_found(exc) or exc.response.get("Error", {}).get("Code") == "404":
                    return False
                raise
            await self.db.client.delete_object(Bucket=self.bucket, Key=self._object(key))
        return True

    async def _list(self, prefix: str) -> list[str]:
        """The keys of the records whose key starts with ``prefix``."""
        keys = []
        with _connection_errors(self.name):
            paginator = self.db.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", ()):
                    name = item["Key"][len(self.prefix) :]
                    if name.endswith(".json") and "/" not in name:
                        keys.append(name[: -len(".json")])
        return keys

    async def scan_keys(self, prefix: str = "") -> AsyncIterator[str]:
        for key in await self._list(prefix):
            yield key

    async def scan_heads(
        self, where: Sequence[tuple[tuple[str, ...], str]] = ()
    ) -> AsyncIterator[HeadItem]:
        keys = [key for key in await self._list("") if "~" not in key]
        slots = asyncio.Semaphore(READS_AT_ONCE)

        async def get(key: str) -> Record | DamagedRecordError | None:
            async with slots:
                return await read_or_damage(self, key)  # None: deleted since the listing

        for start in range(0, len(keys), 1024):
            batch = keys[start : start + 1024]
            got = await asyncio.gather(*(get(k) for k in batch))
            for key, record in zip(batch, got, strict=True):
                if record is not None:
                    yield key, record

    async def quarantine(self, key: str) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = f"{self.quarantine_prefix}{key}.json.{stamp}"
        self._etags.pop(key, None)
        with _connection_errors(self.name):
            try:
                await self.db.client.copy_object(
                    Bucket=self.bucket,
                    Key=target,
                    CopySource={"Bucket": self.bucket, "Key": self._object(key)},
                )
            except ClientError as exc:
                if _not_found(exc):
                    raise StorageError(f"{self.name}: no record {key!r} to set aside") from None
                raise
            await self.db.client.delete_object(Bucket=self.bucket, Key=self._object(key))
        return f"s3://{self.bucket}/{target}"


async def open_s3(url: str) -> DataknobsConversationStorage:
    """``s3://bucket/prefix?endpoint_url=...&region=...`` (credentials from the environment)."""
    from ..adapter import DataknobsConversationStorage

    parts = urlsplit(url)
    bucket = parts.netloc
    if not bucket:
        raise StorageError(f"S3 URL {url!r} has no bucket: s3://bucket/prefix")
    prefix = unquote(parts.path).strip("/")
    params = query(url)
    region = params.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    base = f"{prefix}/" if prefix else ""
    config: dict[str, Any] = {"bucket": bucket, "prefix": f"{base}data", "region_name": region}
    if params.get("endpoint_url"):
        config["endpoint_url"] = params["endpoint_url"]
    for key in ("aws_access_key_id", "aws_secret_access_key"):
        value = os.environ.get(key.upper())
        if value:
            config[key] = value
    db = OneClientS3Database(config)
    await connected(db, url)
    name = f"s3://{bucket}/{prefix}"
    store = S3RecordStore(db, name=name, quarantine_prefix=f"{base}quarantine/")
    try:
        await db.client.head_bucket(Bucket=bucket)
    except Exception as exc:
        await store.close()
        raise StorageError(f"cannot reach bucket {bucket!r} at {name}: {exc}") from None
    return DataknobsConversationStorage(store)
