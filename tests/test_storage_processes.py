"""Writers in separate processes on the file and SQLite stores: nothing is lost."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from convtree import ConversationState, open_storage
from convtree.testing import append_and_save, run_with_storage

PROCESSES = 10
WRITERS_EACH = 5


def _write(url: str, first: int) -> None:
    async def main() -> None:
        async with open_storage(url) as storage:
            await asyncio.gather(
                *(
                    append_and_save(storage, "busy", f"writer {first + k}")
                    for k in range(WRITERS_EACH)
                )
            )

    asyncio.run(main())


@pytest.mark.parametrize("backend", ["file", "sqlite"])
def test_fifty_writers_in_ten_processes_lose_nothing(backend: str, tmp_path: object) -> None:
    url = f"file://{tmp_path}/store" if backend == "file" else f"sqlite:///{tmp_path}/store.db"

    async def create(storage: object) -> None:
        await storage.save_conversation(ConversationState("busy"))  # type: ignore[attr-defined]

    run_with_storage(url, create)  # type: ignore[arg-type]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write, args=(url, p * WRITERS_EACH)) for p in range(PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
        assert proc.exitcode == 0

    async def load(storage: object) -> ConversationState | None:
        return await storage.load_conversation("busy")  # type: ignore[attr-defined, no-any-return]

    stored = run_with_storage(url, load)  # type: ignore[arg-type]
    assert stored is not None
    texts = sorted(str(n.content) for n in stored.nodes() if n.has_message)
    assert texts == sorted(f"writer {i}" for i in range(PROCESSES * WRITERS_EACH))
