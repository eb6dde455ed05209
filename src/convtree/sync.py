"""A blocking facade over the async storage, for scripts and notebooks.

::

    from convtree.sync import open_storage

    with open_storage("sqlite:///chats.db") as storage:
        storage.save_conversation(state)
        for summary in storage.list_summaries({"user_id": "alice"}):
            print(summary.conversation_id, summary.last_message)

The storage runs on an event loop in a private thread, so the facade also
works where a loop is already running (Jupyter).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from .state import ConversationState
from .storage.base import ConversationStorage, ConversationSummary
from .storage.registry import open_storage as _open_async

__all__ = ["SyncStorage", "open_storage"]

T = TypeVar("T")


class SyncStorage:
    """The methods of :class:`~convtree.ConversationStorage`, blocking."""

    def __init__(self, url: str | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="convtree-storage", daemon=True
        )
        self._thread.start()
        try:
            self._storage: ConversationStorage = self._run(_open_async(url)._open())
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __repr__(self) -> str:
        return f"SyncStorage({getattr(self._storage, 'name', self._storage)})"

    @property
    def compare_and_set(self) -> str:
        """What serializes saves of one conversation (see the async storage)."""
        return str(getattr(self._storage, "compare_and_set", "unknown"))

    def save_conversation(
        self, state: ConversationState, *, full: bool = False, overwrite: bool = False
    ) -> None:
        """Blocking :meth:`~convtree.ConversationStorage.save_conversation`."""
        self._run(self._storage.save_conversation(state, full=full, overwrite=overwrite))

    def load_conversation(self, conversation_id: str) -> ConversationState | None:
        """Blocking :meth:`~convtree.ConversationStorage.load_conversation`."""
        return self._run(self._storage.load_conversation(conversation_id))

    def delete_conversation(self, conversation_id: str) -> bool:
        """Blocking :meth:`~convtree.ConversationStorage.delete_conversation`."""
        return self._run(self._storage.delete_conversation(conversation_id))

    def exists(self, conversation_id: str) -> bool:
        """Blocking :meth:`~convtree.ConversationStorage.exists`."""
        return self._run(self._storage.exists(conversation_id))

    def list_conversations(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        limit: int | None = 100,
        offset: int = 0,
        **kwargs: Any,
    ) -> list[ConversationState]:
        """Blocking :meth:`~convtree.ConversationStorage.list_conversations`."""
        return self._run(self._storage.list_conversations(filter_metadata, limit, offset, **kwargs))

    def list_summaries(
        self, filter_metadata: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[ConversationSummary]:
        """Blocking :meth:`~convtree.ConversationStorage.list_summaries`."""
        return self._run(self._storage.list_summaries(filter_metadata, **kwargs))

    def count_conversations(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        *,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> int:
        """Blocking :meth:`~convtree.ConversationStorage.count_conversations`."""
        return self._run(
            self._storage.count_conversations(
                filter_metadata,
                created_after=created_after,
                created_before=created_before,
                updated_after=updated_after,
                updated_before=updated_before,
            )
        )

    def close(self) -> None:
        """Close the storage and stop its thread."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._storage.close())
        finally:
            self._stop()

    def __enter__(self) -> SyncStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_storage(url: str | None = None) -> SyncStorage:
    """Open a blocking storage from a URL (the same URLs as :func:`convtree.open_storage`)."""
    return SyncStorage(url)
