"""Storage benchmarks: append-and-save at 100 vs 10,000 nodes, load, filtered listing.

Run:  python benchmarks/bench_storage.py [--backends memory,file,sqlite] [--postgres URL]
Prints a Markdown table (medians of repeated saves). Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from convtree import ConversationState, open_storage


async def append_and_save(url: str, size: int, saves: int = 30) -> float:
    async with open_storage(url) as storage:
        state = ConversationState(f"chain{size}")
        for i in range(size - 1):
            state.add_message("user" if i % 2 else "assistant", "x" * 190 + str(i))
        await storage.save_conversation(state)
        times = []
        for i in range(saves):
            state.add_message("user", f"new {i}")
            start = time.perf_counter()
            await storage.save_conversation(state)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        await storage.load_conversation(state.conversation_id)
        load = time.perf_counter() - start
        return statistics.median(times) * 1000, load * 1000  # type: ignore[return-value]


async def listing(url: str, count: int) -> float:
    async with open_storage(url) as storage:
        for i in range(count):
            state = ConversationState(f"c{i}", metadata={"user_id": f"u{i % (count // 50)}"})
            state.add_message("user", "hello")
            await storage.save_conversation(state)
        start = time.perf_counter()
        rows = await storage.list_summaries({"user_id": "u7"}, limit=50)
        assert len(rows) == 50
        return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="memory,file,sqlite")
    parser.add_argument("--postgres", default=None, help="a postgresql:// URL to include")
    parser.add_argument("--conversations", type=int, default=10_000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    urls = {
        "memory": "memory://bench",
        "file": f"file://{tmp}/files",
        "sqlite": f"sqlite://{tmp}/bench.db",
    }
    chosen = {b: urls[b] for b in args.backends.split(",") if b in urls}
    if args.postgres:
        chosen["postgres"] = args.postgres
    print("| backend | save at 100 (ms) | save at 10k (ms) | ratio | load 10k (ms) "
          f"| list 50 of {args.conversations} by user_id (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, url in chosen.items():
        small, _ = asyncio.run(append_and_save(url, 100))  # type: ignore[misc]
        big, load = asyncio.run(append_and_save(url, 10_000))  # type: ignore[misc]
        lst = asyncio.run(listing(url.replace("bench", "list"), args.conversations))
        print(f"| {name} | {small:.2f} | {big:.2f} | {big / small:.2f} | {load:.0f} | {lst:.0f} |")


if __name__ == "__main__":
    main()
