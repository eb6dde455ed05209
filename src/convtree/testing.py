"""The storage conformance suite: what every backend must do, importable by backend authors.

Subclass `StorageConformance` in a pytest module and provide a
``store_url`` fixture that returns the URL of a fresh, empty store::

    from convtree.testing import StorageConformance

    class TestMyBackend(StorageConformance):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"mybackend://{tmp_path}"

convtree runs it unchanged over memory, file, SQLite, S3 and PostgreSQL.
Needs pytest.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest

from .errors import ConflictError, FilterError, StorageError
from .state import ConversationState
from .storage import ConversationStorage, open_storage

__all__ = ["StorageConformance", "append_and_save", "exotic_conversation", "run_with_storage"]

T = TypeVar("T")


def run_with_storage(url: str, body: Callable[[ConversationStorage], Awaitable[T]]) -> T:
    """Open ``url``, run ``body(storage)`` on a fresh event loop, close, return its result."""

    async def main() -> T:
        async with open_storage(url) as storage:
            return await body(storage)

    return asyncio.run(main())


async def append_and_save(storage: ConversationStorage, conversation_id: str, text: str) -> None:
    """What one concurrent writer does: load, add a user message, save; reload on conflict."""
    while True:
        state = await storage.load_conversation(conversation_id)
        assert state is not None
        state.add_message("user", text)
        try:
            await storage.save_conversation(state)
            return
        except ConflictError:  # pragma: no cover - appends merge
            continue


def exotic_conversation(conversation_id: str = "exotic") -> ConversationState:
    """A multi-branch conversation with tool calls and values that stores often mangle."""
    state = ConversationState(
        conversation_id,
        metadata={
            "user_id": "alice",
            "nan": math.nan,
            "inf": -math.inf,
            "neg0": -0.0,
            "big": 2**70,
            "z-last": 1,
            "a-first": 2,
            "text": "nul\x00 \u00e9\u6f22 \U0001f600",
        },
    )
    state.add_message("system", "You are terse.")
    state.add_message("user", "weather in Paris?\x00", metadata={"ratio": -0.0})
    state.add_message(
        "assistant",
        None,
        tool_calls=[
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
        ],
    )
    state.add_message("tool", '{"temp": 21}', tool_call_id="call_1", name="w")
    state.add_message("assistant", "21 \u00b0C", branch_name="short")
    state.add_alternative("assistant", [{"type": "text", "text": "It is 21 \u00b0C."}])
    state.add_message("user", "thanks", parent_id=state.root.node_id)
    return state


class StorageConformance:
    """Tests every storage backend must pass. Needs a ``store_url`` fixture."""

    def test_round_trip_is_exact(self, store_url: str) -> None:
        state = exotic_conversation()

        async def body(storage: ConversationStorage) -> ConversationState | None:
            await storage.save_conversation(state)
            return await storage.load_conversation("exotic")

        loaded = run_with_storage(store_url, body)
        assert loaded is not None
        assert loaded.to_json() == state.to_json()  # key order, NaN, -0.0, NUL, big ints

    def test_appends_save_incrementally_and_load_back(self, store_url: str) -> None:
        state = ConversationState("chat")

        async def body(storage: ConversationStorage) -> list[Any]:
            revisions = []
            for i in range(40):
                state.add_message("user" if i % 2 else "assistant", f"message {i}")
                await storage.save_conversation(state)
                revisions.append(state.saved_revision.number if state.saved_revision else None)
            loaded = await storage.load_conversation("chat")
            return [revisions, loaded]

        revisions, loaded = run_with_storage(store_url, body)
        assert revisions == list(range(1, 41))
        assert loaded.to_json() == state.to_json()

    def test_load_missing_delete_and_exists(self, store_url: str) -> None:
        async def body(storage: ConversationStorage) -> list[Any]:
            state = ConversationState("here")
            state.add_message("user", "x")
            await storage.save_conversation(state)
            return [
                await storage.load_conversation("nope"),
                await storage.exists("here"),
                await storage.exists("nope"),
                await storage.delete_conversation("here"),
                await storage.delete_conversation("here"),
                await storage.exists("here"),
                await storage.load_conversation("here"),
            ]

        assert run_with_storage(store_url, body) == [None, True, False, True, False, False, None]

    def test_ids_cannot_escape_the_store(self, store_url: str) -> None:
        ids = ["../x", "/etc/passwd", "a/b", "nul\x00id", "..", ".", "~1", "a%2Fb", "\u00e9"]

        async def body(storage: ConversationStorage) -> list[str]:
            for cid in ids:
                state = ConversationState(cid)
                state.add_message("user", cid)
                await storage.save_conversation(state)
            out = []
            for cid in ids:
                loaded = await storage.load_conversation(cid)
                assert loaded is not None
                out.append(str(loaded.get_current_messages()[0].content))
            with pytest.raises(StorageError, match="too long"):
                await storage.save_conversation(ConversationState("x" * 1000))
            return out

        assert run_with_storage(store_url, body) == ids

    def test_appends_from_two_stale_copies_merge(self, store_url: str) -> None:
        async def body(storage: ConversationStorage) -> list[Any]:
            state = ConversationState("shared")
            state.add_message("user", "hello")
            await storage.save_conversation(state)
            a = await storage.load_conversation("shared")
            b = await storage.load_conversation("shared")
            assert a is not None
            assert b is not None
            a.add_message("assistant", "from a")
            b.add_message("assistant", "from b")
            b.add_message("user", "more from b")
            await storage.save_conversation(a)
            await storage.save_conversation(b)  # stale: merges
            stored = await storage.load_conversation("shared")
            return [stored, b]

        stored, b = run_with_storage(store_url, body)
        texts = sorted(str(n.content) for n in stored.nodes() if n.has_message)
        assert texts == ["from a", "from b", "hello", "more from b"]
        assert b == stored  # the saving state now holds the other writer's message too
        assert stored.current_node.content == "more from b"

    def test_a_stale_prune_raises_conflict_and_writes_nothing(self, store_url: str) -> None:
        async def body(storage: ConversationStorage) -> list[Any]:
            state = ConversationState("c")
            first = state.add_message("user", "one")
            await storage.save_conversation(state)
            a = await storage.load_conversation("c")
            b = await storage.load_conversation("c")
            assert a is not None
            assert b is not None
            a.add_message("assistant", "reply", parent_id=first.node_id)
            await storage.save_conversation(a)
            b.prune(first.node_id)
            with pytest.raises(ConflictError, match="load it again"):
                await storage.save_conversation(b)
            fresh = ConversationState("c")
            with pytest.raises(ConflictError, match="overwrite=True"):
                await storage.save_conversation(fresh)
            return [await storage.load_conversation("c"), a]

        stored, a = run_with_storage(store_url, body)
        assert stored == a

    def test_overwrite_and_full_saves(self, store_url: str) -> None:
        async def body(storage: ConversationStorage) -> list[Any]:
            state = ConversationState("o")
            state.add_message("user", "old")
            await storage.save_conversation(state)
            other = ConversationState("o")
            other.add_message("user", "new")
            await storage.save_conversation(other, overwrite=True)
            other.get_node(other.current_node_id).metadata["rating"] = 5
            other.mark_changed(other.current_node_id)
            await storage.save_conversation(other)
            loaded = await storage.load_conversation("o")
            assert loaded is not None
            loaded.metadata["k"] = "v"
            await storage.save_conversation(loaded, full=True)
            return [await storage.load_conversation("o"), loaded]

        stored, loaded = run_with_storage(store_url, body)
        assert stored == loaded
        assert stored.current_node.metadata == {"rating": 5}
        assert stored.metadata == {"k": "v"}

    def test_filters_summaries_and_paging(self, store_url: str) -> None:
        base = datetime(2025, 1, 1, tzinfo=timezone.utc)

        async def body(storage: ConversationStorage) -> dict[str, Any]:
            for i in range(12):
                state = ConversationState(
                    f"c{i:02d}",
                    metadata={
                        "user_id": ["alice", "bob", "carol"][i % 3],
                        "score": i,
                        "tags": ["even"] if i % 2 == 0 else ["odd", "x"],
                        "project": {"name": "p1" if i < 6 else "p2"},
                        **({"archived": True} if i % 4 == 0 else {}),
                    },
                )
                state.created_at = base + timedelta(days=i)
                state.add_message("system", "sys", timestamp=base + timedelta(days=i))
                state.add_message("user", f"question {i}", timestamp=base + timedelta(days=i))
                state.add_message("assistant", f"answer {i}", timestamp=base + timedelta(days=i))
                state.updated_at = base + timedelta(days=i, hours=1)
                await storage.save_conversation(state)

            async def ids(flt: Any = None, **kw: Any) -> list[str]:
                rows = await storage.list_summaries(flt, order_by="conversation_id", **kw)
                assert (
                    await storage.count_conversations(
                        flt, **{k: v for k, v in kw.items() if k.endswith(("after", "before"))}
                    )
                    == len(rows)
                    or "limit" in kw
                    or "offset" in kw
                )
                return [r.conversation_id for r in rows]

            out: dict[str, Any] = {
                "eq": await ids({"user_id": "alice"}),
                "nested": await ids({"project.name": "p2", "user_id": "bob"}),
                "ne": await ids({"user_id": {"$ne": "alice"}}),
                "in": await ids({"user_id": {"$in": ["bob", "carol"]}, "score": {"$lt": 5}}),
                "nin": await ids({"user_id": {"$nin": ["bob", "carol"]}}),
                "range": await ids({"score": {"$gt": 3, "$lte": 6}}),
                "exists": await ids({"archived": {"$exists": True}}),
                "missing": await ids({"archived": {"$exists": False}, "score": {"$gte": 9}}),
                "contains": await ids({"tags": {"$contains": "x"}, "score": {"$lt": 4}}),
                "type-strict": await ids({"score": "3"}),
                "created": await ids(created_after=base + timedelta(days=9)),
                "updated": await ids(updated_before=base + timedelta(days=2)),
                "page": await ids(limit=3, offset=2),
                "count": await storage.count_conversations({"tags": {"$contains": "even"}}),
            }
            newest = await storage.list_summaries(limit=1)
            out["newest"] = newest[0]
            out["all"] = len(await storage.list_conversations(limit=None))
            for bad in ({"a..b": 1}, {"k": {"$regex": "x"}}, {"k": {"$in": "x"}}, {"": 1}):
                with pytest.raises(FilterError):
                    await storage.list_summaries(bad)
            for limit, offset in ((True, 0), ("1", 0), (-1, 0), (1, False), (1, 1.5)):
                with pytest.raises(FilterError):
                    await storage.list_summaries(limit=limit, offset=offset)  # type: ignore[arg-type]
            with pytest.raises(FilterError):
                await storage.list_summaries(order_by="score")
            return out

        out = run_with_storage(store_url, body)
        assert out["eq"] == ["c00", "c03", "c06", "c09"]
        assert out["nested"] == ["c07", "c10"]
        assert out["ne"] == [f"c{i:02d}" for i in range(12) if i % 3]
        assert out["in"] == ["c01", "c02", "c04"]
        assert out["nin"] == out["eq"]
        assert out["range"] == ["c04", "c05", "c06"]
        assert out["exists"] == ["c00", "c04", "c08"]
        assert out["missing"] == ["c09", "c10", "c11"]
        assert out["contains"] == ["c01", "c03"]
        assert out["type-strict"] == []
        assert out["created"] == ["c10", "c11"]
        assert out["updated"] == ["c00", "c01"]
        assert out["page"] == ["c02", "c03", "c04"]
        assert out["count"] == 6
        assert out["all"] == 12
        newest = out["newest"]
        assert newest.conversation_id == "c11"
        assert (newest.node_count, newest.message_count, newest.leaf_count) == (4, 3, 1)
        assert newest.first_user_message == "question 11"
        assert (newest.last_role, newest.last_message) == ("assistant", "answer 11")
        assert newest.metadata["project"] == {"name": "p2"}

    def test_concurrent_writers_lose_nothing(self, store_url: str) -> None:
        writers = 50

        async def body(storage: ConversationStorage) -> ConversationState | None:
            state = ConversationState("busy")
            await storage.save_conversation(state)

            # Ten storages (as ten processes would open), five writers on each.
            storages = [await open_storage(store_url) for _ in range(10)]

            try:
                await asyncio.gather(
                    *(
                        append_and_save(storages[i % len(storages)], "busy", f"writer {i}")
                        for i in range(writers)
                    )
                )
            finally:
                for mine in storages:
                    await mine.close()
            return await storage.load_conversation("busy")

        stored = run_with_storage(store_url, body)
        assert stored is not None
        texts = sorted(str(n.content) for n in stored.nodes() if n.has_message)
        assert texts == sorted(f"writer {i}" for i in range(writers))
