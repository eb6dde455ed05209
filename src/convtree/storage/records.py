"""The record store: the few primitives a storage backend implements.

A backend stores *records*, small JSON-compatible dicts under string keys; it
never sees a conversation tree (:mod:`convtree.storage.layout` turns states into
records and back, :class:`~convtree.DataknobsConversationStorage` does the
rest: save, load, merge, list, count). Two kinds of records exist:

* a **head** per conversation (key: the encoded conversation id; it has an
  integer ``revision`` field and ``kind == "head"``);
* **segments** holding node records (keys ``<head key>~...``; ``kind == "segment"``).

A backend implements :meth:`RecordStore.read`, :meth:`RecordStore.write` (with
its three modes), :meth:`RecordStore.delete` and :meth:`RecordStore.scan_heads`.
What makes a save safe is the write of the head with ``IfRevision(n)``: it must
be **atomic** (the compare and the write are one step that no other writer can
interleave with), across every process that can open the store. Backends that
can write the segments and the head in one transaction override
:meth:`RecordStore.commit`.

Optional capabilities are declared in :attr:`RecordStore.capabilities`, never
discovered by catching ``NotImplementedError``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ..errors import PreconditionFailed

__all__ = [
    "Capabilities",
    "IfRevision",
    "PutMode",
    "Record",
    "RecordStore",
    "check_expected",
    "expected_revision",
    "mode_expecting",
    "refusal",
]

Record = dict[str, Any]
"""A stored record: a JSON-compatible dict (strings, numbers, bools, None, lists, dicts)."""


class IfRevision(NamedTuple):
    """Write mode: replace the record only if its ``revision`` field equals ``revision``."""

    revision: int


PutMode = Literal["create", "overwrite"] | IfRevision
"""How :meth:`RecordStore.write` treats a record that exists.

* ``"create"``: only if no record has this key, else :class:`~convtree.PreconditionFailed`;
* ``"overwrite"``: unconditionally;
* ``IfRevision(n)``: only if the stored record's ``revision`` field is ``n``, else
  :class:`~convtree.PreconditionFailed` (also when there is no record).
"""


@dataclass(frozen=True)
class Capabilities:
    """What a record store does natively, declared by the backend.

    Attributes:
        compare_and_set: How the conditional head write is made atomic, and
            across which writers (shown by ``storage.compare_and_set``).
        atomic_commit: :meth:`RecordStore.commit` writes the segments, the head
            and the deletions in one transaction: all or nothing.
        filters: :meth:`RecordStore.scan_heads` narrows heads by the string
            equalities it is given (``meta`` paths). Results are re-checked in
            Python either way; narrowing only saves reads.
        cross_process: The conditional write holds across processes (and
            hosts, for a server); ``False`` means one process only.
    """

    compare_and_set: str = "atomic conditional write"
    atomic_commit: bool = False
    filters: bool = False
    cross_process: bool = True


class RecordStore(ABC):
    """Records under string keys with conditional writes: what a backend implements.

    Keys are made of ``A-Z a-z 0-9 _ - % ~`` only (at most 200 characters), so
    they are safe as file names, object keys and SQL values as they are.
    Implementations must be safe to use from many coroutines of one event loop
    at once. Subclasses set :attr:`name` (shown in errors; never a password).
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
        """Delete the record under ``key``; ``True`` if it existed."""

    @abstractmethod
    def scan_heads(
        self, where: Sequence[tuple[tuple[str, ...], str]] = ()
    ) -> AsyncIterator[Record]:
        """Every head record (``kind == "head"``), in any order.

        ``where`` holds ``(path, text)`` string equalities on the head's ``meta``
        field; a store declaring ``capabilities.filters`` may skip heads that
        fail them, others ignore them.
        """

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
    ) -> None:
        """A save: write ``segments``, then ``head`` if the stored head is at ``expect``.

        ``expect`` is the revision the stored head must have (``None``: there
        must be no head). Segment keys are new and unique, so a refused commit
        leaves at most unreferenced segments, which it deletes. ``obsolete``
        records (segments the new head no longer lists) are deleted after the
        head is written.

        The default uses :meth:`write`; stores with transactions override it to
        do everything at once.

        Raises:
            PreconditionFailed: the head is not at ``expect``; the head was not written.
        """
        for segment_key, segment in segments.items():
            await self.write(segment_key, segment, "create")
        try:
            await self.write(key, head, mode_expecting(expect))
        except PreconditionFailed:
            for segment_key in segments:
                await self.delete(segment_key)
            raise
        for stale in obsolete:
            await self.delete(stale)

    async def close(self) -> None:  # noqa: B027 - most stores hold nothing
        """Release connections; the store cannot be used afterwards."""


def check_mode(mode: object) -> PutMode:
    """Validate a write mode (for backends): ``"create"``, ``"overwrite"`` or ``IfRevision``."""
    if mode in ("create", "overwrite") or (
        isinstance(mode, IfRevision) and type(mode.revision) is int
    ):
        return mode
    raise ValueError(f"unknown write mode {mode!r}: 'create', 'overwrite' or IfRevision(n)")


def expected_revision(mode: PutMode) -> int | None:
    """The ``expect`` of :meth:`RecordStore.commit` for a conditional mode (``"create"``: None)."""
    return mode.revision if isinstance(mode, IfRevision) else None


def mode_expecting(expect: int | None) -> PutMode:
    """The write mode of a commit's head: ``"create"`` for None, else ``IfRevision(expect)``."""
    return "create" if expect is None else IfRevision(expect)


def refusal(store: str, key: str, expect: int | None) -> PreconditionFailed:
    """The error of a conditional write that did not hold (``expect`` None: create-only)."""
    if expect is None:
        return PreconditionFailed(f"record {key!r} already exists in {store}", key=key)
    return PreconditionFailed(f"record {key!r} in {store} is not at revision {expect}", key=key)


def check_expected(current: Record | None, expect: int | None, *, store: str, key: str) -> None:
    """Raise :func:`refusal` unless ``current`` (the stored record) meets ``expect``.

    ``expect`` None: there must be no record; an int: the record's ``revision`` is it.
    """
    if expect is None:
        held = current is None
    else:
        held = current is not None and current.get("revision") == expect
    if not held:
        raise refusal(store, key, expect)
