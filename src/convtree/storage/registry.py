"""URL schemes to backends, and ``open_storage(url)``.

Built-in schemes map to a module of `backends`, imported
only when its scheme is opened. Other packages add schemes with
`register_backend()`, or without any code running first, through the
``convtree.backends`` entry point group; in their ``pyproject.toml``::

    [project.entry-points."convtree.backends"]
    redis = "convtree_redis:open_redis"

An opener is ``async def open_x(url: str) -> ConversationStorage | RecordStore``;
a `RecordStore` it returns is wrapped in a
[`DataknobsConversationStorage`][convtree.DataknobsConversationStorage], which brings save, load,
merge, list and count.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Awaitable, Callable, Generator
from importlib.metadata import entry_points
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from ..errors import StorageError
from .base import ConversationStorage
from .records import RecordStore
from .urls import default_store_url, mask_url

__all__ = ["ENTRY_POINT_GROUP", "Opener", "open_storage", "register_backend", "registered_schemes"]

ENTRY_POINT_GROUP = "convtree.backends"

Opener = Callable[[str], Awaitable[ConversationStorage | RecordStore]]
"""Opens a store from its URL."""

_BUILTIN = {
    "memory": "convtree.storage.backends.memory:open_memory",
    "dataknobs-memory": "convtree.storage.backends.dataknobs:open_dataknobs_memory",
    "file": "convtree.storage.backends.file:open_file",
    "sqlite": "convtree.storage.backends.sqlite:open_sqlite",
    "postgresql": "convtree.storage.backends.postgres:open_postgres",
    "postgres": "convtree.storage.backends.postgres:open_postgres",
    "s3": "convtree.storage.backends.s3:open_s3",
}
_registered: dict[str, Opener] = {}


def register_backend(scheme: str, opener: Opener, *, replace: bool = False) -> None:
    """Make ``open_storage("<scheme>://...")`` call ``opener``.

    Raises:
        StorageError: the scheme is taken (pass ``replace=True`` to take it anyway)
            or not a valid URL scheme.
    """
    if not isinstance(scheme, str) or not scheme or urlsplit(f"{scheme}://x").scheme != scheme:
        raise StorageError(f"{scheme!r} is not a URL scheme (lower-case letters, digits, +-.)")
    if not replace and (scheme in _BUILTIN or scheme in _registered):
        raise StorageError(f"storage URL scheme {scheme!r} is already registered")
    _registered[scheme] = opener


def registered_schemes() -> list[str]:
    """Every scheme ``open_storage`` knows now (built-in, registered, entry points)."""
    found = set(_BUILTIN) | set(_registered)
    found.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(found)


def _opener(scheme: str, url: str) -> Opener:
    opener = _registered.get(scheme)
    if opener is not None:
        return opener
    target = _BUILTIN.get(scheme)
    if target is None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == scheme:
                try:
                    loaded: Opener = ep.load()
                except Exception as exc:
                    raise StorageError(
                        f"the backend for {scheme}:// ({ep.value}, entry point group "
                        f"{ENTRY_POINT_GROUP!r}) cannot be loaded: {type(exc).__name__}: {exc}"
                    ) from None
                return loaded
        known = ", ".join(f"{s}://" for s in registered_schemes())
        raise StorageError(
            f"unknown storage URL scheme {scheme!r} in {mask_url(url)!r}; use one of {known}, "
            "or install a package that registers it"
        )
    module, _, function = target.partition(":")
    try:
        builtin: Opener = getattr(importlib.import_module(module), function)
    except ImportError as exc:
        raise _import_failure(scheme, url, exc) from None
    return builtin


def _import_failure(scheme: str, url: str, exc: ImportError) -> StorageError:
    """Why a built-in backend cannot be imported: a package that is not installed (the
    ``pip install`` that fixes it), or one that is installed but fails to import (a
    broken or incompatible install: its own error, not advice to install it)."""
    top = (exc.name or "").partition(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
    if top and _not_installed(top):
        extra = _EXTRAS.get(scheme)
        fix = f"pip install 'convtree[{extra}]'" if extra else f"pip install {top}"
        return StorageError(f"{mask_url(url)!r} needs {top}: {fix}")
    return StorageError(
        f"the backend for {scheme}:// cannot be loaded: {type(exc).__name__}: {exc} "
        "(an installed package is broken, or of a version convtree does not support)"
    )


def _not_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a module object without a spec
        return False


_EXTRAS = {"postgresql": "postgres", "postgres": "postgres", "s3": "s3"}


class open_storage:
    """Open a conversation storage from a URL.

    ``memory://[name]``, ``file:///dir``, ``sqlite:///file.db``,
    ``s3://bucket/prefix?endpoint_url=...&region=...``,
    ``postgresql://user:pass@host:port/db?table=...&schema=...``,
    ``dataknobs-memory://[name]``, or a scheme registered by another package.
    With no URL: ``$CONVTREE_STORE`` if set, else the embedded default,
    ``conversations.db`` in the platform's user data directory
    (``convtree.storage.urls.default_store_path()``; ``~/.local/share/convtree/`` on
    Linux unless ``$XDG_DATA_HOME`` is set).

    Use ``async with open_storage(url) as storage:`` (closed on exit), or
    ``storage = await open_storage(url)`` and ``await storage.close()``.

    Raises:
        StorageError: unknown scheme, a missing extra (the message says which
            ``pip install`` fixes it), or a server that cannot be reached (the
            URL is shown with the password masked).
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = default_store_url() if url is None else url
        self._storage: ConversationStorage | None = None

    def __await__(self) -> Generator[Any, None, ConversationStorage]:
        return self._open().__await__()

    async def __aenter__(self) -> ConversationStorage:
        self._storage = await self._open()
        return self._storage

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._storage is not None:
            await self._storage.close()

    def __repr__(self) -> str:
        return f"open_storage({mask_url(self.url)!r})"

    async def _open(self) -> ConversationStorage:
        if not isinstance(self.url, str):
            raise StorageError(f"a storage URL is a string, got {self.url!r}")
        scheme = urlsplit(self.url).scheme.lower()
        opened = await _opener(scheme, self.url)(self.url)
        if isinstance(opened, RecordStore):
            from .adapter import DataknobsConversationStorage

            return DataknobsConversationStorage(opened)
        if not isinstance(opened, ConversationStorage):
            raise StorageError(
                f"the opener of {scheme}:// returned {type(opened).__name__}, not a "
                "ConversationStorage or RecordStore"
            )
        return opened
