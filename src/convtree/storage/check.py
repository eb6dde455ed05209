"""``storage.check()``: read every record, find damage and debris, repair on request.

What it finds (see docs/storage.md, "Damaged records"):

* **damaged conversations**: a head or segment record that cannot be read
  (truncated, garbled, wrong types, missing fields), a segment its head lists
  that is missing, or nodes that do not form a conversation. With ``repair``
  every record of such a conversation is **quarantined**: moved aside,
  unchanged, where no listing or load sees it (`quarantine()`
  says where), so that nothing is destroyed;
* **orphans**: segments no head lists (a save that died after writing its
  head, before deleting what it replaced; a save refused or killed before its
  head). With ``repair`` they are deleted;
* **leftovers**: what a crashed write left that is not a record (the file
  store's ``.tmp-*`` files). With ``repair`` they are deleted.

A save in progress on a store without transactions (files, S3) has written its
segment before its head, and its temporary file before renaming it: such
candidates count only if they are still there, still unreferenced, after
``grace`` seconds.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import DamagedRecordError, SchemaVersionError, StorageError
from .layout import Head, conversation_of, record_id_or_none, segment_revision

if TYPE_CHECKING:
    from .adapter import DataknobsConversationStorage

__all__ = ["CheckReport", "DamagedRecord", "check_store"]

_LOAD_ATTEMPTS = 20


@dataclass(frozen=True)
class DamagedRecord:
    """A conversation that cannot be read, and why.

    Attributes:
        conversation_id: The conversation.
        key: The storage key of the record that is damaged (or missing).
        problem: What is wrong with it.
    """

    conversation_id: str
    key: str
    problem: str

    @classmethod
    def from_error(cls, exc: DamagedRecordError) -> DamagedRecord:
        """The record a `DamagedRecordError` is about."""
        key = exc.key or "?"
        cid = exc.conversation_id if exc.conversation_id is not None else conversation_of(key)
        return cls(cid, key, exc.problem)

    def __str__(self) -> str:
        return f"conversation {self.conversation_id!r}: record {self.key!r}: {self.problem}"


@dataclass
class CheckReport:
    """What [`check()`][convtree.DataknobsConversationStorage.check] found and did.

    Attributes:
        store: The store's name.
        repair: Whether repairs were asked for.
        records: Records read (heads, segments, anything under a key).
        conversations: Heads among them.
        damaged: One entry per conversation that cannot be read.
        orphans: Keys of segments no head lists.
        leftovers: Names of what crashed writes left (the file store's temporary files).
        quarantined: For each record set aside, where it went.
        deleted: Orphans and leftovers deleted.
        failed: Repairs that could not be made, and why.
    """

    store: str
    repair: bool = False
    records: int = 0
    conversations: int = 0
    damaged: list[DamagedRecord] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    quarantined: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        """How many problems were found (damaged conversations, orphans, leftovers)."""
        return len(self.damaged) + len(self.orphans) + len(self.leftovers)

    @property
    def clean(self) -> bool:
        """Nothing is wrong with the store."""
        return self.problems == 0

    @property
    def repaired(self) -> bool:
        """Repairs were asked for and every problem found was fixed."""
        return self.repair and not self.failed

    @property
    def exit_code(self) -> int:
        """``convtree check``'s exit status: 0 clean (or fully repaired), 1 problems remain."""
        return 0 if self.clean or self.repaired else 1

    def lines(self) -> list[str]:
        """The report as text lines, for the terminal."""
        out = [f"checked {self.store}: {self.records} records, {self.conversations} conversations"]
        out.extend(f"damaged: {d}" for d in self.damaged)
        out.extend(f"orphan: segment {key!r} (no head lists it)" for key in self.orphans)
        out.extend(f"leftover: {name} (an unfinished write)" for name in self.leftovers)
        out.extend(f"quarantined: {key!r} -> {where}" for key, where in self.quarantined.items())
        out.extend(f"deleted: {name}" for name in self.deleted)
        out.extend(f"not repaired: {why}" for why in self.failed)
        found = (
            f"{len(self.damaged)} damaged conversation(s), {len(self.orphans)} orphan(s), "
            f"{len(self.leftovers)} leftover(s)"
        )
        if self.clean:
            out.append("no problems found")
        elif self.repaired:
            out.append(f"{found}: all repaired")
        elif self.repair:
            out.append(f"{found}: {len(self.failed)} could not be repaired")
        else:
            out.append(f"{found}; run again with --repair to fix them")
        return out


async def check_store(
    storage: DataknobsConversationStorage, *, repair: bool, grace: float
) -> CheckReport:
    """The engine of [`check()`][convtree.DataknobsConversationStorage.check]."""
    records = storage.records
    report = CheckReport(storage.name, repair=repair)
    keys = [key async for key in records.scan_keys()]
    report.records = len(keys)
    heads = sorted(key for key in keys if "~" not in key)
    report.conversations = len(heads)
    under: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        if "~" in key:
            under[key.split("~", 1)[0]].append(key)

    healthy: dict[str, Head] = {}
    damaged: dict[str, DamagedRecord] = {}
    for key in heads:
        try:
            head = await _read_whole(storage, key)
        except DamagedRecordError as exc:
            damaged[key] = DamagedRecord.from_error(exc)
            continue
        if head is not None:
            healthy[key] = head

    certain: list[str] = []
    uncertain: list[str] = []
    for head_key, segment_keys in sorted(under.items()):
        if head_key in damaged:
            continue  # set aside with its conversation
        head = healthy.get(head_key)
        listed = {k for k, _ in head.segments} if head is not None else set()
        for key in sorted(segment_keys):
            if key in listed:
                continue
            number = segment_revision(key)
            if head is not None and number is not None and number <= head.revision.number:
                certain.append(key)  # its save can no longer commit: the head moved past it
            else:
                uncertain.append(key)  # no head yet, or a newer revision: maybe a save in progress
    leftovers = await records.leftovers()

    atomic = records.capabilities.atomic_commit
    if (uncertain and not atomic) or leftovers:
        await asyncio.sleep(max(grace, 0.0))
        uncertain = await _still_orphans(storage, uncertain)
        still = set(await records.leftovers())
        leftovers = [name for name in leftovers if name in still]
    report.orphans = sorted(certain + uncertain)
    report.leftovers = sorted(leftovers)
    report.damaged = [damaged[key] for key in sorted(damaged)]

    if repair:
        for key in sorted(damaged):
            await _quarantine(storage, key, report)
        for key in report.orphans:
            try:
                await records.delete(key)
                report.deleted.append(f"orphan {key!r}")
            except StorageError as exc:
                report.failed.append(f"orphan {key!r}: {exc}")
        for name in report.leftovers:
            try:
                await records.remove_leftover(name)
                report.deleted.append(f"leftover {name}")
            except StorageError as exc:
                report.failed.append(f"leftover {name}: {exc}")
    return report


async def _read_whole(storage: DataknobsConversationStorage, key: str) -> Head | None:
    """Read a conversation's head and every segment; its head, or ``None`` if gone meanwhile.

    Raises:
        DamagedRecordError: a record of it cannot be read.
    """
    cid = conversation_of(key)
    for _ in range(_LOAD_ATTEMPTS):
        head = await storage._head(key, cid)  # a record that cannot be read says why here
        if head is None:
            return None
        if record_id_or_none(cid) != key:
            raise DamagedRecordError(
                f"record {key!r} in {storage.name} is not under a conversation key",
                conversation_id=cid,
                key=key,
                problem="its key is not the encoding of a conversation id",
            )
        try:
            if await storage._load(head) is not None:
                return head
        except SchemaVersionError:
            return head  # written by a newer convtree: readable there, not damaged
    return await storage._head(key, cid)  # pragma: no cover - very busy writers


async def _still_orphans(storage: DataknobsConversationStorage, keys: list[str]) -> list[str]:
    """Of ``keys``, those still stored and still listed by no head (after the grace period)."""
    out: list[str] = []
    by_head: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        by_head[key.split("~", 1)[0]].append(key)
    for head_key, candidates in by_head.items():
        present = {k async for k in storage.records.scan_keys(head_key + "~")}
        try:
            head = await storage._head(head_key, conversation_of(head_key))
        except DamagedRecordError:
            continue  # damaged since: the next check reports it
        listed = {k for k, _ in head.segments} if head is not None else set()
        out.extend(k for k in candidates if k in present and k not in listed)
    return out


async def _quarantine(storage: DataknobsConversationStorage, key: str, report: CheckReport) -> None:
    """Set every record of the damaged conversation under ``key`` aside (if still damaged)."""
    records = storage.records
    if not records.capabilities.quarantine:
        report.failed.append(
            f"conversation {conversation_of(key)!r}: {storage.name} cannot set records aside; "
            "delete it with delete_conversation"
        )
        return
    async with storage._locks(key):
        try:
            await _read_whole(storage, key)
        except DamagedRecordError:
            pass
        else:
            return  # replaced or deleted meanwhile: nothing to set aside
        victims = [key, *sorted([k async for k in records.scan_keys(key + "~")])]
        for victim in victims:
            try:
                report.quarantined[victim] = await records.quarantine(victim)
            except StorageError as exc:
                report.failed.append(f"quarantine of {victim!r}: {exc}")
