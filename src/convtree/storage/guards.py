"""Guards: how saves of one conversation are serialized, per backend.

dataknobs-data has no compare-and-set, so the adapter compares the head's
revision while holding a guard for that conversation, then writes. Each guard
says what it covers (:meth:`Guard.describe`):

=============  =====================================================  ==========================
guard          mechanism                                              covers
=============  =====================================================  ==========================
in-process     an asyncio lock per conversation                       this process (memory://)
file lock      ``flock`` on ``<locks>/<cid>.lock`` (+ in-process)     processes on this host
                                                                      (file://, sqlite://)
advisory lock  PostgreSQL ``pg_advisory_lock`` per conversation       every client of the server
S3 lease       a lock object written with ``If-None-Match: *``        every client of the bucket
               (a conditional PUT); an expired lease is taken over
               with ``If-Match`` on its ETag
=============  =====================================================  ==========================

File locks need a local file system (not NFS). An S3 lease expires after
``lease_seconds`` (30 s): a writer that stalls longer than that while saving
can race the next one; saves take milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar
from weakref import WeakKeyDictionary

__all__ = ["FileLockGuard", "Guard", "InProcessGuard", "PostgresAdvisoryGuard", "S3LeaseGuard"]


class Guard(ABC):
    """Mutual exclusion per conversation key, for the read-compare-write of a save."""

    @abstractmethod
    def hold(self, key: str) -> Any:
        """An async context manager holding the guard for ``key``."""

    @abstractmethod
    def describe(self) -> str:
        """What the guard is and which writers it covers."""

    async def close(self) -> None:  # noqa: B027 - most guards hold nothing
        """Release what the guard holds."""


class InProcessGuard(Guard):
    """An asyncio lock per key: covers the writers of one process (one event loop)."""

    _shared: ClassVar[WeakKeyDictionary[Any, InProcessGuard]] = WeakKeyDictionary()

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @classmethod
    def for_object(cls, owner: Any) -> InProcessGuard:
        """The guard shared by every storage over ``owner`` (a database object)."""
        try:
            guard = cls._shared.get(owner)
            if guard is None:
                guard = cls._shared[owner] = cls()
            return guard
        except TypeError:  # not weak-referenceable
            return cls()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def describe(self) -> str:
        return "in-process lock (writers in this process)"


class FileLockGuard(Guard):
    """``flock`` on one lock file per conversation: covers processes on this host."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._local = InProcessGuard()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        import fcntl

        async with self._local.hold(key):
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                # Poll without blocking: a thread blocked in flock() per waiting
                # writer would exhaust the executor the lock holder needs.
                delay = 0.001
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(delay * (1 + random.random()))
                        delay = min(delay * 2, 0.05)
                yield
            finally:
                os.close(fd)  # closing releases the lock

    def describe(self) -> str:
        return f"file lock in {self.directory} (processes on this host)"


class PostgresAdvisoryGuard(Guard):
    """A PostgreSQL session advisory lock per conversation, on its own small pool."""

    def __init__(self, connect: dict[str, Any], namespace: str) -> None:
        self._connect = connect
        self._namespace = namespace
        self._pool: Any = None
        self._local = InProcessGuard()

    async def _get_pool(self) -> Any:
        if self._pool is None:
            import asyncpg

            self._pool = await asyncpg.create_pool(min_size=1, max_size=4, **self._connect)
        return self._pool

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        async with self._local.hold(key):
            pool = await self._get_pool()
            async with pool.acquire() as conn:
                lock_key = f"{self._namespace}/{key}"
                await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock_key)
                try:
                    yield
                finally:
                    await conn.execute(
                        "SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock_key
                    )

    def describe(self) -> str:
        return "PostgreSQL advisory lock (every client of the server)"

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


class S3LeaseGuard(Guard):
    """A lease object per conversation, taken with conditional PUTs."""

    def __init__(
        self,
        client_kwargs: dict[str, Any],
        bucket: str,
        prefix: str,
        *,
        lease_seconds: float = 30.0,
    ) -> None:
        self._client_kwargs = client_kwargs
        self._bucket = bucket
        self._prefix = prefix
        self.lease_seconds = lease_seconds
        self._client: Any = None
        self._client_cm: Any = None
        self._local = InProcessGuard()

    async def _get_client(self) -> Any:
        if self._client is None:
            import aioboto3

            self._client_cm = aioboto3.Session().client("s3", **self._client_kwargs)
            self._client = await self._client_cm.__aenter__()
        return self._client

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        from botocore.exceptions import ClientError

        async with self._local.hold(key):
            s3 = await self._get_client()
            lock_key = f"{self._prefix}locks/{key}"
            delay = 0.005
            while True:
                body = json.dumps({"expires": time.time() + self.lease_seconds}).encode()
                try:
                    await s3.put_object(
                        Bucket=self._bucket, Key=lock_key, Body=body, IfNoneMatch="*"
                    )
                    break
                except ClientError as exc:
                    if not _precondition_failed(exc):
                        raise
                if await self._take_over_expired(s3, lock_key, body):
                    break
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.2)
            try:
                yield
            finally:
                await s3.delete_object(Bucket=self._bucket, Key=lock_key)

    async def _take_over_expired(self, s3: Any, lock_key: str, body: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            held = await s3.get_object(Bucket=self._bucket, Key=lock_key)
            expires = json.loads(await held["Body"].read()).get("expires", 0)
        except ClientError:
            return False  # released meanwhile: try again
        except ValueError:
            expires = 0  # unreadable lease: treat as expired
        if expires > time.time():
            return False
        try:
            await s3.put_object(Bucket=self._bucket, Key=lock_key, Body=body, IfMatch=held["ETag"])
            return True
        except ClientError as exc:
            if _precondition_failed(exc):
                return False
            raise

    def describe(self) -> str:
        return f"S3 lease by conditional PUT, {self.lease_seconds:g} s (every client of the bucket)"

    async def close(self) -> None:
        if self._client_cm is not None:
            cm, self._client_cm, self._client = self._client_cm, None, None
            await cm.__aexit__(None, None, None)


def _precondition_failed(exc: Any) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
        409,
        412,
    )
