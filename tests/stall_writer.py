"""A writer that stops itself (SIGSTOP) in the middle of a save, holding the store's lock.

Usage: ``python tests/stall_writer.py URL``

Loads conversation ``"busy"``, appends a message and saves it; inside the save, at
the point where the backend holds what serializes writers, it prints ``stalled`` and
sends itself SIGSTOP, as a process frozen by a debugger, a full swap or a suspended
laptop would be:

* file: the commit's file lock is held (the first record file is being written);
* sqlite: ``BEGIN IMMEDIATE`` has taken the database's write lock;
* postgresql: a save is one statement there (nothing is held between round trips), so
  the stalled writer deletes the conversation instead: after the ``DELETE`` of the head
  row, inside that transaction, it holds the row's lock.

The test (tests/test_faults.py) then checks that other writers give up after the
configured timeout with a clear error, and kills this process with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from convtree import open_storage


def stall() -> None:
    sys.stdout.write("stalled\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGSTOP)


async def main(url: str) -> None:
    async with open_storage(url) as storage:
        records: Any = storage.records  # type: ignore[attr-defined]
        scheme = url.split(":", 1)[0]
        if scheme == "file":
            write = records.files._write_file

            def stalling_write(*args: Any) -> None:
                stall()
                write(*args)

            records.files._write_file = stalling_write
        elif scheme == "sqlite":
            # A save is one function in aiosqlite's thread; stall at its first
            # statement after BEGIN IMMEDIATE, when the write lock is held.
            conn = records.db.db
            begun: list[str] = []

            def trace(sql: str) -> None:
                if begun:
                    stall()
                elif sql == "BEGIN IMMEDIATE":
                    begun.append(sql)

            await conn._execute(lambda: conn._conn.set_trace_callback(trace))
        else:
            import asyncpg

            execute = asyncpg.Connection.execute

            async def stalling_pg_execute(self: Any, sql: str, *args: Any, **kw: Any) -> Any:
                result = await execute(self, sql, *args, **kw)
                if sql.startswith("DELETE"):
                    stall()
                return result

            asyncpg.Connection.execute = stalling_pg_execute  # type: ignore[method-assign]
            await storage.delete_conversation("busy")
            return
        state = await storage.load_conversation("busy")
        assert state is not None
        state.add_message("user", "from the stalled writer")
        await storage.save_conversation(state)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
