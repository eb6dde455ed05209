"""A blocking facade over the async storage, for scripts and notebooks.

::

    from convtree.sync import open_storage

    with open_storage("sqlite:///chats.db") as storage:
        storage.save_conversation(state)
        for summary in storage.list_summaries({"user_id": "alice"}):
            print(summary.conversation_id, summary.last_message)

The storage runs on an event loop in a private thread, so the facade also
works where a loop is already running (Jupyter). Each blocking method is made
from the async method of [`ConversationStorage`][convtree.ConversationStorage] by one typed
wrapper, so it has exactly the async method's parameters (a type checker
flags ``list_summaries(orderby=...)``) and cannot drift from it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._closing import Closing
from .errors import StorageError
from .storage.base import ConversationStorage
from .storage.registry import open_storage as _open_async

__all__ = ["SyncStorage", "open_storage"]

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[ConversationStorage, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncStorage, P], T]:
    """A method of `SyncStorage` that runs ``method`` of its storage and waits.

    It has the async method's parameters for type checkers and at run time
    (``inspect.signature``, ``help``), and its documentation. The storage's own
    method is looked up by name on each call, so a backend's override runs.
    """
    name = method.__name__

    def call(self: SyncStorage, /, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = self._run(name, *args, **kwargs)
        return result

    call.__name__ = name
    call.__qualname__ = f"SyncStorage.{name}"
    call.__doc__ = f"Blocking [`{name}()`][convtree.ConversationStorage.{name}]: {method.__doc__}"
    call.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    return call


class SyncStorage(Closing):
    """The methods of [`ConversationStorage`][convtree.ConversationStorage], blocking.

    ``save_conversation``, ``load_conversation``, ``delete_conversation``,
    ``exists``, ``list_summaries``, ``list_page``, ``count_conversations`` and
    ``list_conversations`` take the async methods' parameters and return their
    results. After `close()` every method raises
    [`StorageError`][convtree.StorageError].
    """

    def __init__(self, url: str | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="convtree-storage", daemon=True
        )
        self._thread.start()
        try:
            self._storage: ConversationStorage = self._wait(_open_async(url)._open())
        except BaseException:
            self._stop()
            raise
        self._name = str(getattr(self._storage, "name", self._storage))

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _run(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run the storage's method ``name`` on the private loop; the result."""
        if self._loop.is_closed():
            # Checked before the coroutine exists: nothing is left un-awaited.
            raise StorageError(f"{self._name} is closed: open the storage again to use it")
        return self._wait(getattr(self._storage, name)(*args, **kwargs))

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __repr__(self) -> str:
        state = " (closed)" if self._loop.is_closed() else ""
        return f"SyncStorage({self._name}){state}"

    @property
    def compare_and_set(self) -> str:
        """What serializes saves of one conversation (see the async storage)."""
        return str(getattr(self._storage, "compare_and_set", "unknown"))

    save_conversation = _blocking(ConversationStorage.save_conversation)
    save_many = _blocking(ConversationStorage.save_many)
    load_conversation = _blocking(ConversationStorage.load_conversation)
    load_path = _blocking(ConversationStorage.load_path)
    delete_conversation = _blocking(ConversationStorage.delete_conversation)
    exists = _blocking(ConversationStorage.exists)
    list_summaries = _blocking(ConversationStorage.list_summaries)
    count_conversations = _blocking(ConversationStorage.count_conversations)
    list_page = _blocking(ConversationStorage.list_page)
    list_conversations = _blocking(ConversationStorage.list_conversations)
    damaged_conversations = _blocking(ConversationStorage.damaged_conversations)
    check = _blocking(ConversationStorage.check)

    def close(self) -> None:
        """Close the storage and stop its thread; closing again does nothing."""
        if self._loop.is_closed():
            return
        try:
            self._wait(self._storage.close())
        finally:
            self._stop()


def open_storage(url: str | None = None) -> SyncStorage:
    """Open a blocking storage from a URL (the same URLs as
    [`open_storage()`][convtree.open_storage] )."""
    return SyncStorage(url)
