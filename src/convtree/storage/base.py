"""The storage interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import StorageError
from ..node import ConversationNode
from ..state import ConversationState

if TYPE_CHECKING:
    from .check import CheckReport, DamagedRecord

__all__ = ["ORDER_KEYS", "ConversationPage", "ConversationStorage", "ConversationSummary"]

ORDER_KEYS = ("updated_at", "created_at", "conversation_id")
"""Keys ``list_summaries`` sorts by; prefix ``-`` for descending."""


@dataclass(frozen=True)
class ConversationSummary:
    """What a list page shows about a conversation, read without loading its tree.

    Attributes:
        conversation_id: The conversation's id.
        metadata: Its metadata (a copy).
        created_at: When it was created.
        updated_at: When it last changed.
        node_count: Nodes in the tree, the root included.
        message_count: Messages on the active path (what the model would see).
        leaf_count: Branch ends: 1 for a conversation that never branched.
        first_user_message: Text of the first user message on the active path
            (at most 200 characters), or ``None``.
        last_message: Text of the message under the cursor (at most 200
            characters), or ``None`` for an empty conversation.
        last_role: Role of that message, or ``None``.
        revision: The stored revision (increases with every save).
    """

    conversation_id: str
    metadata: dict[str, Any] = field(repr=False)
    created_at: datetime
    updated_at: datetime
    node_count: int
    message_count: int
    leaf_count: int
    first_user_message: str | None
    last_message: str | None
    last_role: str | None
    revision: int


@dataclass(frozen=True)
class ConversationPage:
    """One page of a conversation list, for list UIs.

    Iterating a page iterates its rows. Pass `next_cursor` as ``after=`` to
    get the next page; it is ``None`` on the last page.

    Attributes:
        rows: The summaries on this page.
        next_cursor: Where the next page starts, or ``None`` when this is the last.
        total: How many conversations match in all (when asked with ``total=True``).
    """

    rows: list[ConversationSummary]
    next_cursor: str | None
    total: int | None = None

    def __iter__(self) -> Iterator[ConversationSummary]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


class ConversationStorage(ABC):
    """Where conversations are saved: the interface of every backend.

    The method names are dataknobs-llm's (``save_conversation``,
    ``load_conversation``, ``delete_conversation``, ``list_conversations``), so
    code written against it keeps working. Use as an async context manager::

        async with open_storage("sqlite:///chats.db") as storage:
            await storage.save_conversation(state)

    ``filter_metadata`` accepts equality, dotted keys and the operators of
    `filters`; the ``created_*``/``updated_*`` bounds are
    exclusive and timezone-aware. Every backend returns the same rows.
    """

    @abstractmethod
    async def save_conversation(
        self, state: ConversationState, *, full: bool = False, overwrite: bool = False
    ) -> None:
        """Save (insert or update) a conversation.

        Writes only what changed since ``state`` was loaded or last saved, unless
        ``full``. If another writer saved in between, appended messages merge
        (and ``state`` then also holds theirs); anything else raises
        [`ConflictError`][convtree.ConflictError]. A state that was not loaded from this
        store replaces a stored conversation of the same id only with
        ``overwrite=True``.
        """

    async def save_many(
        self, states: Iterable[ConversationState], *, overwrite: bool = False
    ) -> int:
        """Save many conversations (a bulk import); how many were saved.

        The default saves them one by one;
        [`DataknobsConversationStorage`][convtree.DataknobsConversationStorage] writes
        new ones in batches, one transaction each on SQL backends.
        """
        count = 0
        for state in states:
            await self.save_conversation(state, overwrite=overwrite)
            count += 1
        return count

    @abstractmethod
    async def load_conversation(self, conversation_id: str) -> ConversationState | None:
        """The stored conversation, or ``None`` when there is none with this id."""

    async def load_path(
        self, conversation_id: str, ref: str | None = None
    ) -> list[ConversationNode] | None:
        """The nodes from the root to the cursor (or to node ``ref``); ``None`` if absent.

        The default loads the whole conversation;
        [`DataknobsConversationStorage`][convtree.DataknobsConversationStorage] builds
        only the path.
        """
        state = await self.load_conversation(conversation_id)
        return None if state is None else state.get_path(ref)

    @abstractmethod
    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a conversation; ``True`` if it existed."""

    @abstractmethod
    async def exists(self, conversation_id: str) -> bool:
        """Whether a conversation with this id is stored."""

    @abstractmethod
    async def list_summaries(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        *,
        search: str | None = None,
        order_by: str = "-updated_at",
        limit: int | None = 100,
        offset: int = 0,
        after: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> list[ConversationSummary]:
        """Summaries of the matching conversations, sorted and paged, no trees loaded.

        ``search`` keeps conversations with a message, on any branch, whose text
        holds it (case-insensitively). ``after`` is a cursor from
        `list_page()` (keyset paging: page 1,000 costs what page 1
        does); ``offset`` skips rows. Ties sort by storage key. A conversation
        whose head record cannot be read is skipped, with a
        `DamagedRecordWarning` naming it.
        """

    @abstractmethod
    async def count_conversations(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        *,
        search: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> int:
        """How many conversations match (the filters and ``search`` of `list_summaries()`)."""

    async def list_page(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        *,
        search: str | None = None,
        order_by: str = "-updated_at",
        limit: int = 50,
        after: str | None = None,
        total: bool = False,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> ConversationPage:
        """One page of summaries and the cursor of the next: what a list UI shows.

        Example:
            ```python
            page = await storage.list_page({"user_id": "alice"}, limit=20, total=True)
            while page.next_cursor:
                page = await storage.list_page({"user_id": "alice"}, after=page.next_cursor)
            ```

        Args:
            filter_metadata: As for `list_summaries()`.
            search: As for `list_summaries()`.
            order_by: As for `list_summaries()`; a cursor belongs to one order.
            limit: Rows per page (>= 1).
            after: ``next_cursor`` of the previous page; ``None`` for the first.
            total: Also count every matching conversation (one more query).

        Raises:
            FilterError: a bad filter, limit or cursor.
        """
        from ..errors import FilterError
        from .layout import record_id
        from .query import encode_cursor, order_spec, sort_text

        if type(limit) is not int or limit < 1:
            raise FilterError(f"limit of a page must be an int >= 1, got {limit!r}")
        order, _ = order_spec(order_by)
        rows = await self.list_summaries(
            filter_metadata,
            search=search,
            order_by=order_by,
            limit=limit + 1,
            after=after,
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
        )
        cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            key = record_id(last.conversation_id)
            sort = sort_text(order, key, last.created_at, last.updated_at)
            cursor = encode_cursor(order_by, sort, key)
        count = None
        if total:
            count = await self.count_conversations(
                filter_metadata,
                search=search,
                created_after=created_after,
                created_before=created_before,
                updated_after=updated_after,
                updated_before=updated_before,
            )
        return ConversationPage(rows, cursor, count)

    async def list_conversations(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        limit: int | None = 100,
        offset: int = 0,
        *,
        order_by: str = "-updated_at",
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> list[ConversationState]:
        """The matching conversations, loaded whole (prefer `list_summaries()`)."""
        summaries = await self.list_summaries(
            filter_metadata,
            order_by=order_by,
            limit=limit,
            offset=offset,
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
        )
        states = []
        for summary in summaries:
            state = await self.load_conversation(summary.conversation_id)
            if state is not None:  # deleted meanwhile
                states.append(state)
        return states

    async def damaged_conversations(self) -> list[DamagedRecord]:
        """The conversations whose head record cannot be read: what listings skip.

        A storage that cannot tell raises `StorageError` (the default);
        [`DataknobsConversationStorage`][convtree.DataknobsConversationStorage] can.
        """
        raise StorageError(f"{type(self).__name__} cannot list damaged conversations")

    async def check(self, *, repair: bool = False, grace: float = 10.0) -> CheckReport:
        """Read every record; report (and with ``repair``, fix) damaged and orphan records.

        A storage that cannot raises `StorageError` (the default); see
        [`DataknobsConversationStorage.check`][convtree.DataknobsConversationStorage.check].
        """
        raise StorageError(f"{type(self).__name__} cannot check its records")

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the storage cannot be used afterwards."""

    async def __aenter__(self) -> ConversationStorage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
