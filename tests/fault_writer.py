"""A writer process for tests/test_faults.py, meant to be killed with SIGKILL at any moment.

Usage: ``python tests/fault_writer.py URL TAG [SECONDS]``

Appends ``TAG-0``, ``TAG-1``, ... as user messages to conversation ``"busy"``
(load, add, save; reload and retry the same text on ConflictError) until
killed, or until SECONDS (default 120) have passed, or its parent is gone.
One line per event on stdout, flushed at once:

* ``ready``: the storage is open.
* ``ack TEXT``: ``save_conversation`` returned for TEXT, so TEXT must survive.
* ``err TYPE``: a convtree error (not ConflictError) from a load or save; the
  text is not acknowledged and the writer goes on with the next one.
* ``raw TYPE``: any other exception escaped a load or save (same handling).

The first traceback of each exception type goes to stderr. After a failure the
writer waits a little (up to 0.2 s after many in a row) before the next try.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import traceback

from convtree import ConvtreeError, open_storage
from convtree.testing import append_and_save

CONVERSATION = "busy"


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def report(kind: str, exc: Exception, seen: set[str]) -> str:
    name = f"{type(exc).__module__}.{type(exc).__name__}"
    if name not in seen:
        seen.add(name)
        traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.flush()
    return f"{kind} {type(exc).__name__ if kind == 'err' else name}"


async def write_forever(url: str, tag: str, seconds: float) -> None:
    parent = os.getppid()
    seen: set[str] = set()
    failures = 0
    deadline = time.monotonic() + seconds
    async with open_storage(url) as storage:
        emit("ready")
        i = 0
        while time.monotonic() < deadline and os.getppid() == parent:
            text = f"{tag}-{i}"
            i += 1
            try:
                await append_and_save(storage, CONVERSATION, text)
            except Exception as exc:
                emit(report("err" if isinstance(exc, ConvtreeError) else "raw", exc, seen))
                failures += 1
                await asyncio.sleep(min(0.01 * failures, 0.2))
                continue
            failures = 0
            emit(f"ack {text}")


def main(argv: list[str]) -> None:
    url, tag = argv[1], argv[2]
    seconds = float(argv[3]) if len(argv) > 3 else 120.0
    asyncio.run(write_forever(url, tag, seconds))


if __name__ == "__main__":
    main(sys.argv)
