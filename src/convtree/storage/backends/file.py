"""``file:///dir``: a crash-safe, multi-process file database, and its record store.

dataknobs-data's own file backend keeps every record in one JSON file that it
rewrites on each write, without fsync and without locking; two processes lose
records, and a truncated file reads as an empty database (see
``notes/dataknobs-data-0.4.md``). This one keeps **one file per record**:

* a write goes to a temporary file in the same directory, is fsynced, renamed
  over the record's file (atomic on POSIX), and the directory is fsynced;
* a write touches only its own record's file, so processes writing different
  records never meet, and a reader sees the old or the new record, never half;
* a file that cannot be parsed raises :class:`~convtree.StorageError` naming
  it; it is never read as missing or empty.

Record ids become file names injectively: ``A-Z a-z 0-9 _ -`` stay, every other
character is percent-encoded (``.``, ``/`` and NUL included, so no id can
leave the directory), and a name that would be too long is shortened with a
hash suffix. Temporary files start with ``.tmp-`` and are ignored.

:class:`FileRecordStore` makes the conditional write of a head atomic across
processes: the compare (read the head file) and the write (rename over it)
happen while holding an ``flock`` on one of 64 lock files in ``<dir>/.locks/``
(chosen by a hash of the key, so the lock files stay few). A killed writer's
lock is released by the kernel; a writer stalled while holding one makes
others wait at most ``lock_timeout`` seconds (``?lock_timeout=`` in the URL,
default 30), then fail with a StorageError. Locks need a local file system:
``flock`` over NFS is not reliable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dataknobs_data import AsyncDatabase, Query, Record
from dataknobs_data.database_utils import process_search_results
from dataknobs_data.query_logic import ComplexQuery

from ...errors import StorageError
from ..records import Capabilities, check_expected
from ..records import Record as Fields
from ..urls import local_path, query
from .dataknobs import DataknobsRecordStore

if TYPE_CHECKING:
    from ..adapter import DataknobsConversationStorage

__all__ = ["FileDatabase", "FileRecordStore", "open_file"]

LOCK_STRIPES = 64

_MAX_NAME = 200


def _file_name(record_id: str) -> str:
    name = quote(record_id, safe="-_").replace(".", "%2E").replace("~", "%7E")
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        name = f"{name[: _MAX_NAME - 33]}~{digest}"
    return name + ".json"


class FileDatabase(AsyncDatabase):
    """One JSON file per record under ``path`` (created if missing).

    Config: ``path`` (the directory, required), ``fsync`` (default True; False
    skips the fsyncs, for tests of throw-away data only).
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        if "path" not in config:
            raise StorageError("the file store needs a directory: FileDatabase({'path': ...})")
        self.directory = Path(config.pop("path"))
        self._fsync = bool(config.pop("fsync", True))
        super().__init__(config)

    # dataknobs' base class calls this from __init__.
    def _initialize(self) -> None:
        pass

    async def connect(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the store directory {self.directory}: {exc}"
            ) from None

    async def close(self) -> None:
        pass

    def _path(self, record_id: str) -> Path:
        if not isinstance(record_id, str) or not record_id:
            raise StorageError(f"a record id is a non-empty string, got {record_id!r}")
        return self.directory / _file_name(record_id)

    # ------------------------------------------------------------------ files

    def _read_file(self, path: Path) -> Record | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            stored = json.loads(raw)
            record = Record(stored["data"], metadata=stored.get("metadata") or {})
            record.storage_id = stored["id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"record file {path} is corrupt or truncated ({exc}); it was left as it is"
            ) from None
        return record

    def _write_file(self, path: Path, record_id: str, record: Record) -> None:
        body = json.dumps(
            {"id": record_id, "data": dict(record.data), "metadata": dict(record.metadata)},
            ensure_ascii=True,
        ).encode("ascii")
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as handle:
                handle.write(body)
                handle.flush()
                if self._fsync:
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self._fsync:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _delete_file(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def _all(self) -> list[tuple[str, Record]]:
        out = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                record = self._read_file(Path(entry.path))
                if record is not None:
                    out.append((record.storage_id or "", record))
        return out

    # ------------------------------------------------------------ the interface

    async def create(self, record: Record) -> str:
        record_id = record.storage_id or str(uuid.uuid4())
        path = self._path(record_id)
        if path.exists():
            raise StorageError(f"record {record_id!r} already exists in {self.directory}")
        await asyncio.to_thread(self._write_file, path, record_id, record)
        return record_id

    async def read(self, id: str) -> Record | None:
        return await asyncio.to_thread(self._read_file, self._path(id))

    async def update(self, id: str, record: Record) -> bool:
        path = self._path(id)
        if not path.exists():
            return False
        await asyncio.to_thread(self._write_file, path, id, record)
        return True

    async def upsert(self, id_or_record: str | Record, record: Record | None = None) -> str:
        if isinstance(id_or_record, Record):
            record = id_or_record
            record_id = record.storage_id or str(uuid.uuid4())
        else:
            record_id = id_or_record
            if record is None:
                raise StorageError("upsert(id, record) needs a record")
        await asyncio.to_thread(self._write_file, self._path(record_id), record_id, record)
        return record_id

    async def delete(self, id: str) -> bool:
        return await asyncio.to_thread(self._delete_file, self._path(id))

    async def exists(self, id: str) -> bool:
        return self._path(id).exists()

    async def search(self, query: Query | ComplexQuery) -> list[Record]:
        if isinstance(query, ComplexQuery):
            return await self._search_with_complex_query(query)
        rows = await asyncio.to_thread(self._all)
        matched = []
        for record_id, record in rows:
            for flt in query.filters:
                value = record_id if flt.field == "id" else record.get_nested_value(flt.field)
                if not flt.matches(value):
                    break
            else:
                matched.append((record_id, record))
        return process_search_results(matched, query, deep_copy=False)

    async def _count_all(self) -> int:
        return len(await asyncio.to_thread(self._all))

    async def clear(self) -> int:
        rows = await asyncio.to_thread(self._all)
        for record_id, _ in rows:
            await self.delete(record_id)
        return len(rows)

    async def stream_read(self, query: Any = None, config: Any = None) -> Any:
        raise StorageError("the convtree file store does not stream; use search()")

    async def stream_write(self, records: Any, config: Any = None) -> Any:
        raise StorageError("the convtree file store does not stream; use upsert()")


class FileRecordStore(DataknobsRecordStore):
    """Records as files (a :class:`FileDatabase`); conditional writes under a file lock."""

    capabilities = Capabilities(
        compare_and_set="rename under a file lock (processes on this host)",
        filters=True,
    )

    def __init__(self, db: FileDatabase, *, lock_timeout: float = 30.0) -> None:
        super().__init__(db, name=f"file://{db.directory}", owns_db=True)
        self.files = db
        self.lock_timeout = lock_timeout
        self._lock_dir = db.directory / ".locks"

    async def commit(
        self,
        key: str,
        head: Fields,
        *,
        expect: int | None,
        segments: Mapping[str, Fields],
        obsolete: Sequence[str] = (),
    ) -> None:
        fd = await self._lock(key)
        try:
            await asyncio.to_thread(self._commit, key, head, expect, segments, obsolete)
        finally:
            os.close(fd)  # closing releases the lock

    def _commit(
        self,
        key: str,
        head: Fields,
        expect: int | None,
        segments: Mapping[str, Fields],
        obsolete: Sequence[str],
    ) -> None:
        files = self.files
        current = files._read_file(files._path(key))
        stored = None if current is None else {"revision": current.get_value("revision")}
        check_expected(stored, expect, store=self.name, key=key)
        for segment_key, segment in segments.items():
            files._write_file(files._path(segment_key), segment_key, Record(segment))
        files._write_file(files._path(key), key, Record(dict(head)))
        for stale in obsolete:
            files._delete_file(files._path(stale))

    async def _lock(self, key: str) -> int:
        import fcntl

        stripe = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % LOCK_STRIPES
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_dir / f"{stripe:02d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        # Poll without blocking: a thread blocked in flock() per waiting writer
        # would exhaust the executor the lock holder needs.
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise StorageError(
                        f"{self.name}: timed out after {self.lock_timeout:g} s waiting for the "
                        f"lock of record {key!r} (a writer stalled while saving?)"
                    ) from None
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.05)
            except BaseException:
                os.close(fd)
                raise


async def open_file(url: str) -> DataknobsConversationStorage:
    """``file:///dir`` (``?fsync=0`` skips fsync, for throw-away data; ``?lock_timeout=s``)."""
    from ..adapter import DataknobsConversationStorage

    directory = local_path(url, "file store")
    params = query(url)
    try:
        lock_timeout = float(params.get("lock_timeout", "30"))
    except ValueError:
        raise StorageError(f"lock_timeout in {url!r} must be a number of seconds") from None
    db = FileDatabase({"path": str(directory), "fsync": params.get("fsync") != "0"})
    await db.connect()
    return DataknobsConversationStorage(FileRecordStore(db, lock_timeout=lock_timeout))
