"""``memory://``: records in a dict, thread-free and dependency-free.

Runs where threads cannot start (Pyodide / WebAssembly) and imports neither
dataknobs-data nor any driver. Every operation completes in one step of the
event loop, so the compare and the write of a conditional write cannot be
interleaved with another writer's. ``memory://name`` is one store shared by
every storage opened with that name in this process (until the process ends);
``memory://`` is a fresh store.
"""

from __future__ import annotations

import copy
import secrets
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from ...errors import StorageError
from ..adapter import DataknobsConversationStorage
from ..query import TextChanges
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
    expected_revision,
    json_type,
)

__all__ = ["MemoryRecordStore", "open_memory"]

_NAMED: dict[str, MemoryRecordStore] = {}


class MemoryRecordStore(RecordStore):
    """Records in a dict of this process; each read and write copies the record."""

    capabilities = Capabilities(
        compare_and_set="compare and set in one step (writers in this process)",
        atomic_commit=True,
        filters=True,
        cross_process=False,
        quarantine=True,
    )

    def __init__(self, name: str = "memory://") -> None:
        self.name = name
        self._records: dict[str, Record] = {}
        self.quarantined: dict[str, Any] = {}
        """Records set aside by `quarantine()`, by ``<key>@<UTC time>``."""
        # Only held around synchronous dict work, never across an await: it
        # matters only when several event loops (threads) share a named store.
        self._mutex = threading.Lock()

    async def read(self, key: str) -> Record | None:
        record = self._records.get(key)
        if record is None:
            return None
        if not isinstance(record, dict):
            raise damaged(self.name, key, f"it is {json_type(record)}, not a JSON object")
        return copy.deepcopy(record)

    async def write(self, key: str, record: Record, mode: PutMode = "overwrite") -> None:
        check_mode(mode)
        with self._mutex:
            if mode != "overwrite":
                self._check(
                    key,
                    expected_revision(mode),
                    mode.token if isinstance(mode, IfRevision) else None,
                )
            self._records[key] = copy.deepcopy(record)

    async def delete(self, key: str) -> bool:
        with self._mutex:
            return self._records.pop(key, None) is not None

    async def scan_keys(self, prefix: str = "") -> AsyncIterator[str]:
        for key in list(self._records):
            if key.startswith(prefix):
                yield key

    async def scan_heads(
        self, where: Sequence[tuple[tuple[str, ...], str]] = ()
    ) -> AsyncIterator[HeadItem]:
        # A shallow copy: heads carry their document as JSON text, and the
        # storage only reads them; deep copies made listing 4x slower.
        for key, record in list(self._records.items()):
            if "~" in key:
                continue
            if not isinstance(record, dict):
                yield key, damaged(self.name, key, f"it is {json_type(record)}, not a JSON object")
            elif not isinstance(record.get("meta"), dict) or all(
                _meta_value(record["meta"], path) == value for path, value in where
            ):
                yield key, dict(record)

    async def quarantine(self, key: str) -> str:
        with self._mutex:
            if key not in self._records:
                raise StorageError(f"{self.name}: no record {key!r} to set aside")
            aside = f"{key}@{datetime.now(timezone.utc).isoformat()}"
            self.quarantined[aside] = self._records.pop(key)
        return f"{self.name} quarantined[{aside!r}]"

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
        with self._mutex:
            self._check(key, expect, token)
            for segment_key, segment in segments.items():
                self._records[segment_key] = copy.deepcopy(segment)
            self._records[key] = copy.deepcopy(head)
            for stale in obsolete:
                self._records.pop(stale, None)

    def _check(self, key: str, expect: int | None, token: str | None = None) -> None:
        check_expected(self._records.get(key), expect, store=self.name, key=key, token=token)


def _meta_value(meta: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(meta, dict) or part not in meta:
            return None
        meta = meta[part]
    return meta if isinstance(meta, str) else None


async def open_memory(url: str) -> DataknobsConversationStorage:
    """Open ``memory://`` (a fresh store) or ``memory://name`` (shared in this process)."""
    name = urlsplit(url).netloc
    if not name:
        return DataknobsConversationStorage(MemoryRecordStore(f"memory://@{secrets.token_hex(6)}"))
    store = _NAMED.get(name)
    if store is None:
        store = _NAMED[name] = MemoryRecordStore(f"memory://{name}")
    return DataknobsConversationStorage(store)
