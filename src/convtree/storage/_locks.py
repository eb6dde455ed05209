"""Per-key asyncio locks that disappear when nobody holds or waits for them."""

from __future__ import annotations

import asyncio

__all__ = ["KeyLocks"]


class KeyLocks:
    """An asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __call__(self, key: str) -> _Held:
        return _Held(self, key)


class _Held:
    def __init__(self, owner: KeyLocks, key: str) -> None:
        self._owner, self._key = owner, key

    async def __aenter__(self) -> None:
        locks = self._owner._locks
        lock, users = locks.get(self._key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        locks[self._key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._release_user()
            raise

    async def __aexit__(self, *exc: object) -> None:
        lock, _ = self._owner._locks[self._key]
        lock.release()
        self._release_user()

    def _release_user(self) -> None:
        locks = self._owner._locks
        lock, users = locks[self._key]
        if users == 1:
            del locks[self._key]
        else:
            locks[self._key] = (lock, users - 1)
