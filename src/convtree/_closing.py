"""A base for objects that are their own context manager and close on exit."""

from __future__ import annotations

from types import TracebackType

from typing_extensions import Self


class Closing:
    """``with obj:`` gives ``obj`` and calls ``obj.close()`` on the way out (as
    `contextlib.closing` does, for a class of its own)."""

    def close(self) -> None:
        """Release what the object holds (nothing here)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
