"""``file:///dir``: a crash-safe, multi-process file database, and its record store.

dataknobs-data's own file backend keeps every record in one JSON file that it
rewrites on each write, without fsync and without locking; two processes lose
records, and a truncated file reads as an empty database (see
``notes/dataknobs-data-0.4.md``). This one keeps **one file per record**:

* a write goes to a temporary file in the same directory, is fsynced, renamed
  over the record's file (atomic on POSIX), and the directory is fsynced;
* a write touches only its own record's file, so processes writing different
  records never meet, and a reader sees the old or the new record, never half;
* a file that cannot be parsed raises `DamagedRecordError`
  naming it and what is wrong; it is never read as missing or empty.

Record ids become file names injectively: ``A-Z a-z 0-9 _ -`` stay, every other
character is percent-encoded (``.``, ``/`` and NUL included, so no id can
leave the directory), and a name that would be too long is shortened with a
hash suffix. Temporary files start with ``.tmp-`` and are ignored (a crash
can leave one: ``convtree check --repair`` removes them). Damaged files go to
``<dir>/quarantine/`` when ``convtree check --repair`` sets them aside.

`FileRecordStore` makes the conditional write of a head atomic across
processes: the compare (read the head file) and the write (rename over it)
happen while holding a lock (`filelock`: ``flock`` on POSIX,
``LockFileEx`` on Windows) on one of 64 lock files in ``<dir>/.locks/``
(chosen by a hash of the key, so the lock files stay few however many
conversations come and go). A killed writer's lock is released by the
operating system; a writer stalled while holding one makes others wait at
most ``lock_timeout`` seconds (``?lock_timeout=`` in the URL, default 30),
then fail with a StorageError. Locks need a local file system: over NFS or
SMB, locks between hosts are as reliable as the server makes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import filelock
from dataknobs_data import AsyncDatabase, Query, Record
from dataknobs_data.database_utils import process_search_results
from dataknobs_data.query_logic import ComplexQuery

from ...errors import DamagedRecordError, StorageError
from ..query import TextChanges
from ..records import Capabilities, HeadItem, check_expected, damaged, decode_record, json_type
from ..records import Record as Fields
from ..urls import local_path, path_url, query
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


def _stand_in_key(name: str) -> str:
    """A key for a record file that cannot be read and whose name does not say its key
    (shortened with a hash, or not made by this store).

    What the name keeps of the key decides: with a ``~`` it is a segment of the head
    before it (deleted with that conversation); without, a record of unknown kind, which
    ``check`` reports as damaged (never as an orphan to delete).
    """
    stem = name[: -len(".json")] if name.endswith(".json") else name
    kept, _, digest = stem.rpartition("~")
    decoded = unquote(kept or stem)
    if "~" in decoded:
        return f"{decoded}~{digest}"
    return f"{decoded}\u2026{digest[:8]}"


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

    @property
    def name(self) -> str:
        """The store's name in errors."""
        return path_url("file", self.directory)

    def _read_fields(self, path: Path, record_id: str | None) -> tuple[str, Fields] | None:
        """The record id and fields in ``path``; ``None`` if there is no such file.

        ``record_id`` (when known) must be the id the file holds.

        Raises:
            DamagedRecordError: the file is not a record as this store writes them.
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot read record file {path}: {exc}") from None
        key = record_id or path.name
        try:
            stored = decode_record(raw, store=self.name, key=key)
        except DamagedRecordError as exc:
            raise damaged(self.name, key, f"file {path.name}: {exc.problem}") from None
        data, stored_id = stored.get("data"), stored.get("id")
        if not isinstance(data, dict):
            what = "missing" if data is None else json_type(data)
            raise damaged(self.name, key, f"file {path.name}: its 'data' is {what}, not an object")
        if not isinstance(stored_id, str) or (record_id is not None and stored_id != record_id):
            raise damaged(
                self.name, key, f"file {path.name} holds record {stored_id!r}, not {key!r}"
            )
        return stored_id, data

    def _read_file(self, path: Path, record_id: str | None = None) -> Record | None:
        found = self._read_fields(path, record_id)
        if found is None:
            return None
        stored_id, data = found
        record = Record(data)
        record.storage_id = stored_id
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
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(
                    f"{self.name}: cannot write record {record_id!r} ({path.name}): {exc}"
                ) from None
            raise
        if self._fsync and os.name != "nt":  # Windows cannot open a directory to fsync it
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
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot delete {path}: {exc}") from None
        return True

    def _entries(self, prefix: str = "") -> Iterator[tuple[str | None, Path]]:
        """Every record file whose key may start with ``prefix``: its record id when the
        name says it, and its path.

        The id is ``None`` for a name that was shortened with a hash (a long
        id) or that this store did not make: only the file's content knows it.
        """
        encoded = _file_name(prefix)[: -len(".json")] if prefix else ""
        cut = min(len(encoded), _MAX_NAME - 33)  # what a shortened name keeps of it
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.endswith(".json"):
                continue
            if not name.startswith(encoded) and not ("~" in name and name[:cut] == encoded[:cut]):
                continue
            if not entry.is_file():
                continue
            record_id = unquote(name[: -len(".json")])
            yield (record_id if _file_name(record_id) == name else None), Path(entry.path)

    def _all(self) -> list[tuple[str, Record]]:
        out = []
        for record_id, path in self._entries():
            record = self._read_file(path, record_id)
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
        return await asyncio.to_thread(self._read_file, self._path(id), id)

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
    """Records as files (a `FileDatabase`); conditional writes under a file lock."""

    capabilities = Capabilities(
        compare_and_set="rename under a file lock (processes on this host)",
        quarantine=True,
    )

    def __init__(self, db: FileDatabase, *, lock_timeout: float = 30.0) -> None:
        super().__init__(db, name=db.name, owns_db=True)
        self.files = db
        self.lock_timeout = lock_timeout
        self._lock_dir = db.directory / ".locks"
        self.quarantine_dir = db.directory / "quarantine"
        # Files whose name does not say their key (shortened, or not made by this
        # store) and whose content cannot be read: the key a scan gave them.
        self._odd: dict[str, Path] = {}

    def _file(self, key: str) -> Path:
        return self._odd.get(key) or self.files._path(key)

    async def read(self, key: str) -> Fields | None:
        found = await asyncio.to_thread(self.files._read_fields, self._file(key), key)
        return None if found is None else found[1]

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self.files._delete_file, self._file(key))

    def _keyed(
        self, prefix: str = ""
    ) -> list[tuple[str, Path, tuple[str, Fields] | DamagedRecordError | None]]:
        """Every record file (whose key may start with ``prefix``) with its key, and its
        content when reading was needed for that."""
        out: list[tuple[str, Path, tuple[str, Fields] | DamagedRecordError | None]] = []
        unknown: list[tuple[Path, DamagedRecordError]] = []
        for record_id, path in self.files._entries(prefix):
            if record_id is not None:
                out.append((record_id, path, None))
                continue
            try:
                found = self.files._read_fields(path, None)
            except DamagedRecordError as exc:
                unknown.append((path, exc))
                continue
            if found is not None:
                out.append((found[0], path, found))
        if unknown:
            # A damaged file whose name was shortened: its key is the head key of a
            # readable segment whose file name for that head key is this name.
            heads = {key.split("~", 1)[0] for key, _, _ in out if "~" in key}
            by_name = {_file_name(head): head for head in heads}
            for path, error in unknown:
                key = by_name.get(path.name) or _stand_in_key(path.name)
                if key not in by_name.values():
                    self._odd[key] = path
                out.append((key, path, damaged(self.name, key, error.problem)))
        return out

    async def scan_keys(self, prefix: str = "") -> AsyncIterator[str]:
        for key, _, _ in await asyncio.to_thread(self._keyed, prefix):
            if key.startswith(prefix):
                yield key

    async def scan_heads(
        self, where: Sequence[tuple[tuple[str, ...], str]] = ()
    ) -> AsyncIterator[HeadItem]:
        def heads() -> list[HeadItem]:
            out: list[HeadItem] = []
            for key, path, content in self._keyed():
                if "~" in key:
                    continue
                if isinstance(content, DamagedRecordError):
                    out.append((key, content))
                    continue
                try:
                    found = content or self.files._read_fields(path, key)
                except DamagedRecordError as exc:
                    out.append((key, exc))
                    continue
                if found is not None:
                    out.append((key, found[1]))
            return out

        for item in await asyncio.to_thread(heads):
            yield item

    async def quarantine(self, key: str) -> str:
        source = self._file(key)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.quarantine_dir / f"{source.name}.{stamp}"

        def move() -> None:
            self.quarantine_dir.mkdir(exist_ok=True)
            os.replace(source, target)

        try:
            await asyncio.to_thread(move)
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot move {source} to {target}: {exc}") from None
        self._odd.pop(key, None)
        return str(target)

    async def leftovers(self) -> list[str]:
        def names() -> list[str]:
            return sorted(
                entry.name
                for entry in os.scandir(self.files.directory)
                if entry.name.startswith(".tmp-") and entry.is_file()
            )

        return await asyncio.to_thread(names)

    async def remove_leftover(self, name: str) -> bool:
        if not name.startswith(".tmp-") or Path(name).name != name:
            raise StorageError(f"{self.name}: {name!r} is not a temporary file of this store")
        return await asyncio.to_thread(self.files._delete_file, self.files.directory / name)

    async def commit(
        self,
        key: str,
        head: Fields,
        *,
        expect: int | None,
        segments: Mapping[str, Fields],
        obsolete: Sequence[str] = (),
        texts: TextChanges | None = None,
        token: str | None = None,
    ) -> None:
        lock = await self._lock(key)
        try:
            await asyncio.to_thread(self._commit, key, head, expect, segments, obsolete, token)
        finally:
            lock.release()

    def _commit(
        self,
        key: str,
        head: Fields,
        expect: int | None,
        segments: Mapping[str, Fields],
        obsolete: Sequence[str],
        token: str | None = None,
    ) -> None:
        files = self.files
        current = files._read_fields(files._path(key), key)
        stored = (
            None
            if current is None
            else {"revision": current[1].get("revision"), "token": current[1].get("token")}
        )
        check_expected(stored, expect, store=self.name, key=key, token=token)
        for segment_key, segment in segments.items():
            files._write_file(files._path(segment_key), segment_key, Record(segment))
        files._write_file(files._path(key), key, Record(dict(head)))
        for stale in obsolete:
            files._delete_file(files._path(stale))

    def lock_path(self, key: str) -> Path:
        """The lock file that serializes commits of ``key`` (one of `LOCK_STRIPES`)."""
        stripe = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % LOCK_STRIPES
        return self._lock_dir / f"{stripe:02d}.lock"

    async def _lock(self, key: str) -> filelock.BaseFileLock:
        path = self.lock_path(key)
        try:
            self._lock_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.name}: cannot create {self._lock_dir}: {exc}") from None
        lock = filelock.FileLock(str(path), thread_local=False)
        # Poll without blocking: a thread blocked in the lock call per waiting
        # writer would exhaust the executor the lock holder needs.
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while True:
            try:
                lock.acquire(timeout=0)
                return lock
            except filelock.Timeout:
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"{self.name}: timed out after {self.lock_timeout:g} s waiting for the "
                        f"lock of record {key!r} ({path}; a writer stalled while saving?)"
                    ) from None
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.05)
            except OSError as exc:
                raise StorageError(f"{self.name}: cannot lock {path}: {exc}") from None


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
