"""The record store: the few primitives a storage backend implements.

A backend stores *records*, small JSON-compatible dicts under string keys; it
never sees a conversation tree (`layout` turns states into
records and back, [`DataknobsConversationStorage`][convtree.DataknobsConversationStorage] does the
rest: save, load, merge, list, count). Two kinds of records exist:

* a **head** per conversation (key: the encoded conversation id, never a
  ``~``; it has an integer ``revision`` field and ``kind == "head"``);
* **segments** holding node records (keys ``<head key>~...``; ``kind == "segment"``).

A backend implements `read()`, `write()` (with
its three modes), `delete()` and `scan_keys()`.
What makes a save safe is the write of the head with ``IfRevision(n)``: it must
be **atomic** (the compare and the write are one step that no other writer can
interleave with), across every process that can open the store. Backends that
can write the segments and the head in one transaction override
`commit()`; backends that can read many heads at once, or
narrow them by metadata, override `scan_heads()`.

A record whose stored bytes cannot be read (truncated, garbled, not an object)
raises `DamagedRecordError` naming its key and what is wrong;
scans yield that error in its place instead of failing, so one damaged record
never takes a listing down.

Optional capabilities are declared in `capabilities`, never
discovered by catching ``NotImplementedError``.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple

from .._json import gc_paused
from ..errors import DamagedRecordError, PreconditionFailed, StorageError
from .filters import Condition
from .query import HeadQuery, SortedHead, TextChanges

__all__ = [
    "Capabilities",
    "CommitItem",
    "HeadItem",
    "IfRevision",
    "PutMode",
    "Record",
    "RecordStore",
    "check_expected",
    "damaged",
    "decode_record",
    "expected_revision",
    "head_item",
    "json_type",
    "mode_expecting",
    "quarantine_id",
    "read_or_damage",
    "refusal",
]

Record = dict[str, Any]
"""A stored record: a JSON-compatible dict (strings, numbers, bools, None, lists, dicts)."""

HeadItem = tuple[str, "Record | DamagedRecordError"]
"""What `scan_heads()` yields: a head's key, and the head or why it
cannot be read."""


class IfRevision(NamedTuple):
    """Write mode: replace the record only if its ``revision`` field equals ``revision``
    (and, when ``token`` is given, its ``token`` field equals ``token``: a head that was
    deleted and written again since has the same revision but another token)."""

    revision: int
    token: str | None = None


PutMode = Literal["create", "overwrite"] | IfRevision
"""How `write()` treats a record that exists.

* `` "create"``: only if no record has this key, else
[`PreconditionFailed`][convtree.PreconditionFailed] ;
* ``"overwrite"``: unconditionally;
* ``IfRevision(n)``: only if the stored record's ``revision`` field is ``n``, else
  [`PreconditionFailed`][convtree.PreconditionFailed] (also when there is no record).
"""


@dataclass(frozen=True)
class Capabilities:
    """What a record store does natively, declared by the backend.

    Attributes:
        compare_and_set: How the conditional head write is made atomic, and
            across which writers (shown by ``storage.compare_and_set``).
        atomic_commit: `commit()` writes the segments, the head
            and the deletions in one transaction: all or nothing.
        filters: `scan_heads()` narrows heads by the string
            equalities it is given (``meta`` paths). Results are re-checked in
            Python either way; narrowing only saves reads.
        cross_process: The conditional write holds across processes (and
            hosts, for a server); ``False`` means one process only.
        quarantine: `quarantine()` sets a record's stored
            bytes aside (``convtree check --repair`` needs it to repair damage).
        query: `query_heads()` and `count_heads()` run
            listings in the store (filter, search, order, keyset, page, count),
            and `commit()` keeps its search index.
        search: How ``search=`` runs, for the docs and ``repr`` (e.g. "FTS5
            trigram index", or "scan": every candidate conversation is read).
    """

    compare_and_set: str = "atomic conditional write"
    atomic_commit: bool = False
    filters: bool = False
    cross_process: bool = True
    quarantine: bool = False
    query: bool = False
    search: str = "scan: reads every candidate conversation"


@dataclass(frozen=True)
class CommitItem:
    """One new conversation of a batch: its head, its segments, its search texts."""

    key: str
    head: Record
    segments: Mapping[str, Record]
    texts: TextChanges | None
    revision: Any  # the SavedRevision the records make


class RecordStore(ABC):
    """Records under string keys with conditional writes: what a backend implements.

    Keys are made of ``A-Z a-z 0-9 _ - % ~`` only (at most 200 characters), so
    they are safe as file names, object keys and SQL values as they are.
    Implementations must be safe to use from many coroutines of one event loop
    at once. Subclasses set `name` (shown in errors; never a password).
    """

    name: str = "records"
    capabilities: Capabilities = Capabilities()

    @abstractmethod
    async def read(self, key: str) -> Record | None:
        """The record stored under ``key``, or ``None``.

        Raises:
            StorageError: the record exists but cannot be read (name it).
        """

    @abstractmethod
    async def write(self, key: str, record: Record, mode: PutMode = "overwrite") -> None:
        """Store ``record`` under ``key`` according to ``mode``.

        Raises:
            PreconditionFailed: the condition of ``mode`` does not hold; nothing
                was written.
        """

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Delete the record under ``key``; ``True`` if it existed.

        A record that cannot be read is deleted all the same.
        """

    @abstractmethod
    def scan_keys(self, prefix: str = "") -> AsyncIterator[str]:
        """The key of every record whose key starts with ``prefix``, in any order.

        Readable or not: a damaged record's key is listed too. Deleting a
        conversation scans ``"<head key>~"`` so that no segment of it lingers.
        """

    async def scan_heads(
        self, where: Sequence[tuple[tuple[str, ...], str]] = ()
    ) -> AsyncIterator[HeadItem]:
        """Every head (the records whose key has no ``~``), in any order, with its key.

        A head that cannot be read is yielded as the
        `DamagedRecordError` its `read()` raises, never
        raised: the scan goes on. ``where`` holds ``(path, text)`` string
        equalities on the head's ``meta`` field; a store declaring
        ``capabilities.filters`` may skip heads that fail them (never a head it
        cannot read, or whose ``meta`` is not an object), others ignore them.

        The default reads the keys `scan_keys()` lists, 32 at a time.
        """
        keys = [key async for key in self.scan_keys() if "~" not in key]
        for start in range(0, len(keys), 32):
            batch = keys[start : start + 32]
            for key, got in zip(
                batch, await asyncio.gather(*(read_or_damage(self, k) for k in batch)), strict=True
            ):
                if got is not None:  # None: deleted since the listing
                    yield key, got

    def pushable(self, condition: Condition) -> bool:
        """Whether `query_heads()` runs ``condition`` exactly as
        [`Condition`][convtree.storage.filters.Condition]'s ``matches`` decides it.

        Only for stores declaring ``capabilities.query`` (the default: none).
        """
        return False

    async def query_heads(self, query: HeadQuery) -> list[SortedHead]:
        """The heads a listing selects, in its order, paged (``capabilities.query``).

        Runs the query's date bounds, search, order (sort text, then key),
        ``after``, ``offset`` and ``limit``, and those of its conditions that
        `pushable()` accepts (the others are the caller's). A head whose record
        cannot be read comes as its `DamagedRecordError`; one without a sort
        value is not listed.
        """
        raise StorageError(f"{self.name} cannot run queries; list by scanning")

    async def count_heads(self, query: HeadQuery) -> int:
        """How many heads `query_heads()` would return unpaged (``capabilities.query``)."""
        raise StorageError(f"{self.name} cannot run queries; count by scanning")

    async def get_setting(self, name: str) -> str | None:
        """A value of the store's own settings (``capabilities.query`` stores)."""
        raise StorageError(f"{self.name} keeps no settings")

    async def put_setting(self, name: str, value: str) -> None:
        """Set a value of the store's own settings (``capabilities.query`` stores)."""
        raise StorageError(f"{self.name} keeps no settings")

    async def replace_texts(self, key: str, revision: int, texts: TextChanges) -> bool:
        """Set a conversation's search texts if its head is still at ``revision``
        (``capabilities.query`` stores); ``False`` if it moved on."""
        raise StorageError(f"{self.name} keeps no search index")

    async def read_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Several records at once (the default reads them concurrently)."""
        return list(await asyncio.gather(*(self.read(key) for key in keys)))

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
        """A save: write ``segments``, then ``head`` if the stored head is at ``expect``
        (and carries ``token``, when given).

        ``expect`` is the revision the stored head must have (``None``: there
        must be no head). Segment keys are new and unique, so a refused commit
        leaves at most unreferenced segments, which it deletes. ``obsolete``
        records (segments the new head no longer lists) are deleted after the
        head is written. ``texts`` are the save's search-index changes, which
        stores declaring ``capabilities.query`` apply in the same transaction
        (others ignore them: they search by reading).

        The default uses `write()`; stores with transactions override it to
        do everything at once.

        Raises:
            PreconditionFailed: the head is not at ``expect``; the head was not written.
        """
        for segment_key, segment in segments.items():
            await self.write(segment_key, segment, "create")
        try:
            await self.write(key, head, mode_expecting(expect, token))
        except PreconditionFailed:
            for segment_key in segments:
                await self.delete(segment_key)
            raise
        for stale in obsolete:
            await self.delete(stale)

    async def commit_new(self, items: Sequence[CommitItem]) -> list[bool]:
        """Create several conversations that are not stored yet (``save_many``);
        which were written.

        Stores with transactions write them all at once, or nothing (raising
        `PreconditionFailed` if one exists meanwhile). The default commits them
        one by one and answers ``False`` for those that existed.
        """
        written = []
        for item in items:
            try:
                await self.commit(
                    item.key, item.head, expect=None, segments=item.segments, texts=item.texts
                )
            except PreconditionFailed:
                written.append(False)
            else:
                written.append(True)
        return written

    async def quarantine(self, key: str) -> str:
        """Move the record's stored bytes out of the store's key space, unchanged.

        For stores declaring ``capabilities.quarantine``; ``convtree check
        --repair`` uses it for records that cannot be read, so that nothing is
        destroyed. Afterwards `read()` answers ``None`` and no scan lists it.

        Returns:
            Where the record went (a path, a key, a row id), for the report.

        Raises:
            StorageError: the store cannot set records aside.
        """
        raise StorageError(
            f"{self.name} cannot set a damaged record aside ({key!r}); delete its "
            "conversation (delete_conversation) to remove it"
        )

    async def leftovers(self) -> list[str]:
        """What crashed writes left behind that is not a record (none by default).

        The file store's temporary files (``.tmp-*``) are an example. A write in
        progress may also have one: ``convtree check`` removes only what is
        still there after a grace period.
        """
        return []

    async def remove_leftover(self, name: str) -> bool:
        """Remove one of `leftovers()`; ``True`` if it existed."""
        return False

    async def close(self) -> None:  # noqa: B027 - most stores hold nothing
        """Release connections; the store cannot be used afterwards."""


async def read_or_damage(store: RecordStore, key: str) -> Record | DamagedRecordError | None:
    """``store.read(key)``, with a record that cannot be read returned as its error."""
    try:
        return await store.read(key)
    except DamagedRecordError as exc:
        return exc


def head_item(raw: bytes | str | Any, *, store: str, key: str) -> HeadItem:
    """What `scan_heads` yields for stored text: ``(key, record)``, or ``(key, error)``."""
    try:
        return key, decode_record(raw, store=store, key=key)
    except DamagedRecordError as exc:
        return key, exc


def quarantine_id(key: str) -> str:
    """The id a record is set aside under in a table (no listing or key scan sees it)."""
    return f"quarantine/{key}/{datetime.now(timezone.utc).isoformat()}"


def check_mode(mode: object) -> PutMode:
    """Validate a write mode (for backends): ``"create"``, ``"overwrite"`` or ``IfRevision``."""
    if mode in ("create", "overwrite") or (
        isinstance(mode, IfRevision) and type(mode.revision) is int
    ):
        return mode
    raise ValueError(f"unknown write mode {mode!r}: 'create', 'overwrite' or IfRevision(n)")


def expected_revision(mode: PutMode) -> int | None:
    """The ``expect`` of `commit()` for a conditional mode (``"create"``: None)."""
    return mode.revision if isinstance(mode, IfRevision) else None


def mode_expecting(expect: int | None, token: str | None = None) -> PutMode:
    """The write mode of a commit's head: ``"create"`` for None, else ``IfRevision``."""
    return "create" if expect is None else IfRevision(expect, token)


def refusal(store: str, key: str, expect: int | None) -> PreconditionFailed:
    """The error of a conditional write that did not hold (``expect`` None: create-only)."""
    if expect is None:
        return PreconditionFailed(f"record {key!r} already exists in {store}", key=key)
    return PreconditionFailed(f"record {key!r} in {store} is not at revision {expect}", key=key)


def check_expected(
    current: Record | None,
    expect: int | None,
    *,
    store: str,
    key: str,
    token: str | None = None,
) -> None:
    """Raise `refusal()` unless ``current`` (the stored record) meets ``expect``.

    ``expect`` None: there must be no record; an int: the record's ``revision`` is it
    (and its ``token`` is ``token``, when given).
    """
    if expect is None:
        held = current is None
    else:
        held = (
            current is not None
            and current.get("revision") == expect
            and (token is None or current.get("token") == token)
        )
    if not held:
        raise refusal(store, key, expect)


def damaged(store: str, key: str, problem: str) -> DamagedRecordError:
    """The error for a record of ``store`` under ``key`` that cannot be read: ``problem``."""
    return DamagedRecordError(
        f"record {key!r} in {store} is damaged: {problem}", key=key, problem=problem
    )


def json_type(value: object) -> str:
    """How JSON would call ``value``'s type, for messages ("an array", "a string")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def decode_json(raw: bytes | bytearray | memoryview | str) -> Any:
    """Parse stored JSON text or bytes.

    Raises:
        ValueError: the text is not JSON; the message says how (empty,
            not UTF-8 at which byte, truncated, where the syntax breaks).
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        if not data:
            raise ValueError("empty (0 bytes)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start} "
                f"of {len(data)})"
            ) from None
    else:
        text = raw
    if not text.strip():
        raise ValueError(f"empty ({len(text)} characters of white space)")
    try:
        if len(text) < 65536:
            return json.loads(text)
        with gc_paused():  # a large record: tens of thousands of objects at once
            return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated"):
            raise ValueError(
                f"truncated JSON ({exc.msg}: character {exc.pos} of {len(text)})"
            ) from None
        raise ValueError(f"not JSON ({exc.msg}: character {exc.pos})") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def decode_record(raw: bytes | str | Any, *, store: str, key: str) -> Record:
    """A record from its stored JSON (bytes, text, or already parsed).

    Raises:
        DamagedRecordError: it is not JSON, or not a JSON object.
    """
    if isinstance(raw, (bytes, bytearray, memoryview, str)):
        try:
            raw = decode_json(raw)
        except ValueError as exc:
            raise damaged(store, key, str(exc)) from None
    if not isinstance(raw, dict):
        raise damaged(store, key, f"it is {json_type(raw)}, not a JSON object")
    return raw
