"""List queries: what a listing asks a record store, keyset cursors, pages, search text.

A listing (``list_summaries``, ``list_page``, ``count_conversations``) becomes
one `HeadQuery`. Record stores that declare ``capabilities.query`` (SQLite,
PostgreSQL) run it in SQL through the indexes convtree keeps: the conditions
they can express *exactly* (`RecordStore.pushable`), the date bounds, the
search, the order, the keyset cursor and the page. Whatever they cannot
express is checked in Python on the rows they return, in their order. Stores
without the capability are scanned and everything runs here, with the same
results: the order is the sort key's text, then the conversation's storage key.

Everything here is pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from ..errors import FilterError
from .base import ORDER_KEYS
from .filters import Condition

__all__ = [
    "HeadQuery",
    "SortedHead",
    "TextChanges",
    "decode_cursor",
    "encode_cursor",
    "fold_text",
    "message_search_text",
    "search_term",
    "sort_text",
    "utc_text",
]

_CURSOR_VERSION = 1
MAX_SEARCH_LENGTH = 1000
"""Longest search text, in characters."""


def utc_text(stamp: datetime) -> str:
    """How a head record stores a time: UTC ISO 8601 text, which sorts as the time does."""
    return stamp.astimezone(timezone.utc).isoformat()


@dataclass(frozen=True)
class HeadQuery:
    """One listing or count, as a record store receives it.

    Attributes:
        conditions: Metadata conditions (`filters.Condition`). A store runs
            those it declares `pushable`; the caller checks every condition
            again in Python only when some are not pushable.
        bounds: Date bounds ``(field, "after" | "before", time)``, exclusive.
        search: Case-folded search text (see `search_term`), or ``None``.
        order: ``"updated_at"``, ``"created_at"`` or ``"conversation_id"``.
        descending: Newest (or last) first.
        after: Keyset position ``(sort text, storage key)``: only heads strictly
            after it in this order.
        limit: At most this many heads (``None``: all).
        offset: Skip this many first.
    """

    conditions: tuple[Condition, ...] = ()
    bounds: tuple[tuple[str, str, datetime], ...] = ()
    search: str | None = None
    order: str = "updated_at"
    descending: bool = True
    after: tuple[str, str] | None = None
    limit: int | None = None
    offset: int = 0

    def narrowed(self, conditions: Sequence[Condition]) -> HeadQuery:
        """This query with only ``conditions`` (the pushable ones), unpaged."""
        return replace(self, conditions=tuple(conditions), limit=None, offset=0)


@dataclass(frozen=True)
class SortedHead:
    """A head a query returned: its storage key, its sort text and the record (or its error)."""

    key: str
    sort: str
    item: Any  # Record | DamagedRecordError


@dataclass(frozen=True)
class TextChanges:
    """What a save changes in a store's search index, in the save's transaction.

    Attributes:
        full: Replace every text of the conversation (a full save).
        texts: ``node id -> case-folded text`` for nodes added or changed.
        removed: Nodes pruned.
    """

    full: bool
    texts: Mapping[str, str]
    removed: Sequence[str]


def sort_text(order: str, key: str, created_at: datetime, updated_at: datetime) -> str:
    """A conversation's sort text in a listing by ``order``: its storage key, or a time."""
    if order == "conversation_id":
        return key
    return utc_text(updated_at if order == "updated_at" else created_at)


def encode_cursor(order_by: str, sort: str, key: str) -> str:
    """An opaque cursor: the position after the row with ``sort`` text and storage ``key``."""
    raw = json.dumps([_CURSOR_VERSION, order_by, sort, key], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: object, order_by: str) -> tuple[str, str]:
    """``(sort text, key)`` of a cursor made by `encode_cursor` for the same ``order_by``.

    Raises:
        FilterError: it is not such a cursor (damaged, or from another order).
    """
    if not isinstance(cursor, str) or not cursor or len(cursor) > 2000:
        raise FilterError(f"after must be a cursor string from a previous page, got {cursor!r:.60}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, order, sort, key = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError, TypeError):
        raise FilterError(f"after={cursor!r:.60} is not a cursor convtree made") from None
    if version != _CURSOR_VERSION or not (isinstance(sort, str) and isinstance(key, str)):
        raise FilterError(f"after={cursor!r:.60} is not a cursor convtree made")
    if order != order_by:
        raise FilterError(
            f"after= holds a cursor of a listing ordered by {order!r}, this one is "
            f"ordered by {order_by!r}"
        )
    return sort, key


def order_spec(order_by: object) -> tuple[str, bool]:
    """``(key, descending)`` of an ``order_by`` argument.

    Raises:
        FilterError: not one of `ORDER_KEYS`, optionally prefixed with ``-``.
    """
    if not isinstance(order_by, str):
        raise FilterError(f"order_by must be a string, got {order_by!r}")
    key = order_by.removeprefix("-")
    if key not in ORDER_KEYS:
        raise FilterError(
            f"cannot order by {order_by!r}; use one of {list(ORDER_KEYS)}, '-' first for descending"
        )
    return key, order_by.startswith("-")


def fold_text(text: str) -> str:
    """Text as the search index holds it: case-folded, NUL and lone surrogates replaced."""
    folded = text.casefold()
    if "\x00" in folded:
        folded = folded.replace("\x00", " ")
    try:
        folded.encode("utf-8")
    except UnicodeEncodeError:
        folded = folded.encode("utf-8", "replace").decode("utf-8")
    return folded


def search_term(search: object) -> str | None:
    """The case-folded search text of a ``search=`` argument (``None``: no search).

    Search text matches as a literal substring, case-insensitively (Unicode case
    folding): ``%``, ``_``, quotes and FTS syntax (``*``, ``OR``, ``NEAR``) are
    just characters.

    Raises:
        FilterError: not a string, empty, longer than `MAX_SEARCH_LENGTH`, or holding
            NUL or a lone surrogate (which no stored text can contain).
    """
    if search is None:
        return None
    if not isinstance(search, str):
        raise FilterError(f"search must be a string, got {type(search).__name__}")
    if not search:
        raise FilterError("search text is empty; pass search=None to list everything")
    if len(search) > MAX_SEARCH_LENGTH:
        raise FilterError(
            f"search text is {len(search)} characters long, at most {MAX_SEARCH_LENGTH}"
        )
    if "\x00" in search:
        raise FilterError("search text holds NUL (\\x00), which no stored text contains")
    try:
        search.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError("search text holds a lone surrogate, which is not text") from None
    return search.casefold()


def message_search_text(node_record: Mapping[str, Any]) -> str | None:
    """The searchable text of a stored node record: its message's text, folded.

    A message's text is its string content, or the ``text`` of its content parts
    of type ``text`` (what [`Message.text`][convtree.Message.text] gives).
    ``None`` for a message-less node.
    """
    message = node_record.get("message")
    if not isinstance(message, Mapping):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return fold_text(content)
    if isinstance(content, list):
        return fold_text(
            "".join(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, Mapping) and part.get("type", "text") == "text"
            )
        )
    return ""


def text_changes(
    nodes: Sequence[Mapping[str, Any]], removed: Sequence[str], *, full: bool
) -> TextChanges:
    """The search-index changes of a save that writes ``nodes`` and prunes ``removed``."""
    texts: dict[str, str] = {}
    for node in nodes:
        text = message_search_text(node)
        if text is not None:
            texts[str(node["node_id"])] = text
    return TextChanges(full, texts, tuple(removed))
