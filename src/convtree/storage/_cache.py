"""What one storage remembers of the records it read and wrote, to skip reads.

A save needs the conversation's head (to plan) and, now and then, the small
segments it merges. Both are usually what this storage itself wrote last, so
they are kept here: a save is then one write (one SQL transaction; on S3 a
segment PUT and a conditional head PUT). This is safe because the head write
is conditional on the revision *and the token* of the cached head: if another
writer (or process) moved the conversation on, the write is refused and the
save reads the head again. Segment records are immutable (every key is new),
so a cached segment is never stale.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .layout import Head

__all__ = ["RecordCache"]


class RecordCache:
    """Recently used heads (by conversation key) and small segments (by key), LRU."""

    def __init__(
        self, *, heads: int = 4096, segment_bytes: int = 16 << 20, largest: int = 256 << 10
    ) -> None:
        self._heads: OrderedDict[str, Head] = OrderedDict()
        self._segments: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._max_heads = heads
        self._budget = segment_bytes
        self._largest = largest
        self._bytes = 0

    def head(self, key: str) -> Head | None:
        head = self._heads.get(key)
        if head is not None:
            self._heads.move_to_end(key)
        return head

    def keep_head(self, head: Head) -> None:
        if head.revision.token is None:  # no token: a cached copy could not be verified
            self._heads.pop(head.key, None)
            return
        self._heads[head.key] = head
        self._heads.move_to_end(head.key)
        while len(self._heads) > self._max_heads:
            self._heads.popitem(last=False)

    def forget(self, key: str) -> None:
        self._heads.pop(key, None)

    def segment(self, key: str) -> dict[str, Any] | None:
        got = self._segments.get(key)
        if got is None:
            return None
        self._segments.move_to_end(key)
        return got[0]

    def keep_segment(self, key: str, record: dict[str, Any]) -> None:
        payload = record.get("payload")
        size = len(payload) if isinstance(payload, str) else self._largest + 1
        if size > self._largest or key in self._segments:
            return
        self._segments[key] = (record, size)
        self._bytes += size
        while self._bytes > self._budget:
            _, (_, dropped) = self._segments.popitem(last=False)
            self._bytes -= dropped
