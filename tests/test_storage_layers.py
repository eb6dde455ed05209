"""The storage's layering: what each layer may see, how backends plug in, and the
thread-free memory store."""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

import convtree
from convtree import (
    ConflictError,
    ConversationState,
    StorageError,
    StorageUnavailableError,
    open_storage,
)
from convtree.storage.backends.memory import MemoryRecordStore
from convtree.storage.records import IfRevision
from convtree.testing import StorageConformance, run_with_storage

SRC = Path(convtree.__file__).parent
DOCS = Path(__file__).resolve().parent.parent / "docs"


# ---------------------------------------------------------------- layering


def _private_names_of_state() -> set[str]:
    tree = ast.parse((SRC / "state.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            names.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith("_"):
            names.add(node.name)
        elif isinstance(node, ast.Name) and node.id.startswith("_"):
            names.add(node.id)
    return {n for n in names if not (n.startswith("__") and n.endswith("__"))}


def test_storage_uses_no_private_name_of_the_state() -> None:
    private = _private_names_of_state()
    assert {"_journal", "_index", "_attach", "_cursor", "_metadata"} <= private
    offenders = []
    for path in sorted((SRC / "storage").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            used = None
            if isinstance(node, ast.Attribute) and node.attr in private:
                used = node.attr
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("state"):
                used = next((a.name for a in node.names if a.name.startswith("_")), None)
            if used is not None:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {used}")
    assert offenders == []


def test_backends_import_nothing_of_the_tree() -> None:
    """Backends move records: they never import the state, the node or the format."""
    for path in sorted((SRC / "storage" / "backends").glob("*.py")):
        text = path.read_text()
        assert not re.search(r"from \.\.\.(state|node|format|changes) import", text), path


def test_import_convtree_and_memory_store_without_dataknobs_data() -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        import convtree
        from convtree import ConversationState, open_storage

        async def main():
            async with open_storage("memory://x") as storage:
                state = ConversationState("c")
                state.add_message("user", "hi")
                await storage.save_conversation(state)
                assert (await storage.load_conversation("c")) == state
                assert await storage.count_conversations() == 1

        asyncio.run(main())
        heavy = ("dataknobs_data", "aiosqlite", "asyncpg", "aioboto3", "botocore")
        print(sorted(m for m in heavy if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------ entry points


def test_a_backend_registered_by_entry_point_is_opened(tmp_path: Path) -> None:
    package = tmp_path / "convtree_epdemo.py"
    package.write_text(
        textwrap.dedent(
            """
            from convtree.storage.backends.memory import MemoryRecordStore

            async def open_epdemo(url):
                return MemoryRecordStore(url)
            """
        )
    )
    dist = tmp_path / "convtree_epdemo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: convtree-epdemo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[convtree.backends]\nepdemo = convtree_epdemo:open_epdemo\n"
    )
    code = textwrap.dedent(
        """
        import asyncio, sys
        from convtree import ConversationState, open_storage
        from convtree.storage.registry import registered_schemes

        async def main():
            async with open_storage("epdemo://one") as storage:
                await storage.save_conversation(ConversationState("c"))
                print(type(storage.records).__name__, storage.name, await storage.exists("c"))

        assert "epdemo" in registered_schemes()
        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    )
    assert out.stdout.split() == ["MemoryRecordStore", "epdemo://one", "True"]


def test_an_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(StorageError, match=r"unknown storage URL scheme 'mongodb'.*sqlite://"):
        asyncio.run(open_storage("mongodb://x")._open())


def test_register_backend_refuses_a_taken_scheme() -> None:
    async def opener(url: str) -> MemoryRecordStore:
        return MemoryRecordStore(url)

    with pytest.raises(StorageError, match="already registered"):
        convtree.storage.register_backend("sqlite", opener)
    with pytest.raises(StorageError, match="not a URL scheme"):
        convtree.storage.register_backend("no spaces", opener)


# ----------------------------------------------------- the guide's backend


def _guide_example() -> str:
    text = (DOCS / "backends.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return blocks[0]  # the complete backend


@pytest.fixture(scope="module")
def guide_backend() -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "guide_example"}
    exec(compile(_guide_example(), "docs/backends.md", "exec"), namespace)
    return namespace


class TestTheGuidesBackend(StorageConformance):
    """The example of docs/backends.md, as printed there, passes the conformance suite."""

    @pytest.fixture
    def store_url(self, guide_backend: dict[str, object]) -> str:
        return f"dict://{uuid.uuid4().hex}"


# ------------------------------------------------ memory without threads


@pytest.fixture
def no_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("threads cannot start here (as in Pyodide)")

    monkeypatch.setattr(threading.Thread, "start", refuse)


class TestMemoryWithoutThreads(StorageConformance):
    """memory:// with ``threading.Thread.start`` raising, as in WebAssembly."""

    @pytest.fixture
    def store_url(self, no_threads: None) -> str:
        with pytest.raises(RuntimeError, match="threads cannot start"):
            threading.Thread(target=print).start()
        return f"memory://nothreads-{uuid.uuid4().hex}"


# ------------------------------------------------------ write primitives


def test_record_store_write_modes() -> None:
    from convtree import PreconditionFailed

    async def body() -> None:
        store = MemoryRecordStore()
        await store.write("k", {"kind": "head", "revision": 1}, "create")
        with pytest.raises(PreconditionFailed):
            await store.write("k", {"kind": "head", "revision": 9}, "create")
        with pytest.raises(PreconditionFailed):
            await store.write("k", {"kind": "head", "revision": 2}, IfRevision(5))
        await store.write("k", {"kind": "head", "revision": 2}, IfRevision(1))
        with pytest.raises(PreconditionFailed):
            await store.write("absent", {"revision": 1}, IfRevision(0))
        await store.write("k", {"kind": "head", "revision": 7}, "overwrite")
        assert await store.read("k") == {"kind": "head", "revision": 7}
        with pytest.raises(ValueError, match="unknown write mode"):
            await store.write("k", {}, "upsert")  # type: ignore[arg-type]
        assert [r async for r in store.scan_heads()] == [("k", {"kind": "head", "revision": 7})]
        assert [k async for k in store.scan_keys()] == ["k"]
        assert await store.delete("k")
        assert not await store.delete("k")

    asyncio.run(body())


class _FlakyCommits(MemoryRecordStore):
    """A connection that breaks before a commit, or after it (the outcome looks unknown)."""

    def __init__(self) -> None:
        super().__init__("memory://flaky")
        self.break_after_commit = 0
        self.break_before_commit = 0

    async def commit(self, key, head, *, expect, segments, obsolete=(), texts=None, token=None):  # type: ignore[no-untyped-def]
        if self.break_before_commit:
            self.break_before_commit -= 1
            raise StorageUnavailableError("connection refused")
        await super().commit(
            key, head, expect=expect, segments=segments, obsolete=obsolete, texts=texts, token=token
        )
        if self.break_after_commit:
            self.break_after_commit -= 1
            raise StorageUnavailableError("connection reset after the commit")


def test_a_save_whose_outcome_was_unknown_is_not_applied_twice() -> None:
    from convtree import DataknobsConversationStorage

    async def body() -> ConversationState | None:
        records = _FlakyCommits()
        storage = DataknobsConversationStorage(records)
        state = ConversationState("c", metadata={"n": 1})
        state.add_message("user", "one")
        await storage.save_conversation(state)
        state.add_message("assistant", "two")
        state.metadata = {"n": 2}
        records.break_after_commit = 2  # the save and its first retry look broken
        await storage.save_conversation(state)  # retried: recognized as already stored
        assert state.saved_revision is not None
        records.break_after_commit = 9  # written once, then recognized: no second commit
        state.add_message("user", "three")
        await storage.save_conversation(state)
        records.break_after_commit = 0
        records.break_before_commit = 9
        state.add_message("assistant", "four")
        with pytest.raises(StorageUnavailableError, match="saving this state again is safe"):
            await storage.save_conversation(state)
        records.break_before_commit = 0
        await storage.save_conversation(state)  # the user's retry
        return await storage.load_conversation("c")

    stored = asyncio.run(body())
    assert stored is not None
    texts = [str(n.content) for n in stored.nodes() if n.has_message]
    assert texts == ["one", "two", "three", "four"]
    assert stored.metadata == {"n": 2}


def test_a_new_conversation_whose_first_save_broke_off_after_committing_is_recognized() -> None:
    """The retry of a first save whose commit went through must not call its own
    conversation "already stored by someone else" (ConflictError)."""
    from convtree import DataknobsConversationStorage

    async def body() -> ConversationState | None:
        records = _FlakyCommits()
        storage = DataknobsConversationStorage(records)
        state = ConversationState("new", metadata={"nan": float("nan")})
        state.add_message("user", "one")
        records.break_after_commit = 1
        await storage.save_conversation(state)
        assert state.saved_revision is not None
        state.add_message("assistant", "two")
        await storage.save_conversation(state)
        other = ConversationState("new")  # someone else's state of that id is still refused
        records.break_after_commit = 1
        with pytest.raises(ConflictError, match="overwrite=True"):
            await storage.save_conversation(other)
        return await storage.load_conversation("new")

    stored = asyncio.run(body())
    assert stored is not None
    assert [str(n.content) for n in stored.nodes() if n.has_message] == ["one", "two"]


def test_saving_an_unchanged_state_writes_nothing() -> None:
    async def body(storage: convtree.ConversationStorage) -> list[int]:
        state = ConversationState("c")
        state.add_message("user", "x")
        await storage.save_conversation(state)
        await storage.save_conversation(state)
        loaded = await storage.load_conversation("c")
        assert loaded is not None
        await storage.save_conversation(loaded)
        return [state.saved_revision.number, loaded.saved_revision.number]  # type: ignore[union-attr]

    assert run_with_storage("memory://", body) == [1, 1]


def test_stale_metadata_changes_merge_when_equal_and_conflict_when_not() -> None:
    async def body(storage: convtree.ConversationStorage) -> None:
        state = ConversationState("c", metadata={"tag": "a"})
        await storage.save_conversation(state)
        a = await storage.load_conversation("c")
        b = await storage.load_conversation("c")
        c = await storage.load_conversation("c")
        assert a is not None
        assert b is not None
        assert c is not None
        a.metadata = {"tag": "b"}
        b.metadata = {"tag": "b"}
        c.metadata = {"tag": "c"}
        await storage.save_conversation(a)
        await storage.save_conversation(b)  # the same change: nothing to merge
        with pytest.raises(ConflictError, match="both changed the conversation metadata"):
            await storage.save_conversation(c)

    run_with_storage("memory://", body)


@pytest.mark.parametrize("table", ["Foo", "abc\n", "select;", "a" * 64])
def test_sql_identifiers_that_would_fold_or_break_are_refused(table: str, tmp_path: Path) -> None:
    from urllib.parse import quote

    with pytest.raises(StorageError, match="lower-case SQL identifier"):
        asyncio.run(open_storage(f"sqlite:///{tmp_path}/x.db?table={quote(table)}")._open())


class TestBareDataknobsDatabase(StorageConformance):
    """A dataknobs-data database with no conditional write (its in-process-lock commit)."""

    @pytest.fixture
    def store_url(self) -> str:
        return f"dataknobs-memory://{uuid.uuid4().hex}"


def _merges(sizes: list[int], saves: list[int]) -> tuple[int, float, list[int]]:
    """Save segments of ``saves`` sizes in turn: the most segments held at once, the
    node writes per node, and the last segment list (sizes, oldest first)."""
    from convtree.storage.layout import MERGE_FANOUT, _tier, merged_tail

    most, written = 0, 0
    for size in saves:
        taken = merged_tail(sizes, size)
        nodes = size - 1 + sum(s - 1 for s in sizes[len(sizes) - taken :])  # size: nodes + 1
        del sizes[len(sizes) - taken :]
        sizes.append(nodes + 1)
        written += nodes
        tiers = [_tier(s) for s in sizes]
        assert tiers == sorted(tiers, reverse=True), tiers  # never larger towards the new
        assert all(tiers.count(t) < MERGE_FANOUT for t in set(tiers)), tiers
        most = max(most, len(sizes))
    return most, written / sum(s - 1 for s in saves), sizes


def test_segments_merge_by_size_tier() -> None:
    """A save's new segment absorbs the tail segments of smaller tiers, and a run of its
    own tier once the run and it make 8: at most 7 segments per tier, and each node
    written about log8(n) times (the binary counter merged before wrote it 8.7 times
    over 10,000 appends)."""
    most, per_node, sizes = _merges([], [2] * 10_000)  # one message per save
    assert most <= 29, most
    assert per_node < 4.5, per_node
    assert sum(s - 1 for s in sizes) == 10_000  # nothing lost, nothing doubled
    # Saves of mixed sizes (a bulk import every 37 saves) keep the same bounds.
    most, per_node, sizes = _merges([], [500 if i % 37 == 0 else 3 for i in range(10_000)])
    assert most <= 7 * 4, most
    assert per_node < 3.5, per_node
    # A segment list another merge policy left (the binary counter's) is taken as it is.
    old = [8193, 4097, 2049, 1025, 513, 257, 129, 65, 33, 17, 9, 5, 3]
    most, _, sizes = _merges(list(old), [2] * 100)
    assert sizes[:3] == old[:3]
    assert most <= 7 * 5
