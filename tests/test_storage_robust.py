"""Storage findings of issue 11: nothing deleted lingers, nothing accumulates, bad names
and bad keys are refused up front, a failed open releases what it started."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from convtree import ConversationState, FilterError, StorageError, open_storage
from convtree.storage.backends.file import LOCK_STRIPES

from .storage_media import Medium, admin_connect_args
from .test_storage_damage import PERSISTENT, store_url

SECRET = "hunter2"


# ------------------------------------------------------------ nothing deleted lingers


@pytest.mark.parametrize("backend", PERSISTENT)
def test_nothing_of_a_deleted_conversation_lingers(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Save, update several times, leave what crashed saves leave, delete: the secret text
    is nowhere in the stored bytes afterwards."""
    url = store_url(backend, request, tmp_path)

    async def main() -> bytes:
        async with open_storage(url) as storage:
            medium = await Medium.open(storage, url)
            try:
                state = ConversationState("secret", metadata={"password": SECRET})
                first = state.add_message("user", f"my password is {SECRET}")
                await storage.save_conversation(state)
                for i in range(6):  # segments merge, older ones are deleted
                    state.add_message("assistant", f"noted: {SECRET} ({i})")
                    await storage.save_conversation(state)
                state.edit_message(first, f"my password is still {SECRET}")
                await storage.save_conversation(state, full=True)
                # What a save that died after writing its head leaves: the segments it
                # replaced, written here directly (no head lists them).
                for n in (2, 9):
                    payload = {"nodes": [{"node_id": "x", "text": SECRET}], "edges": []}
                    orphan = {"kind": "segment", "payload": json.dumps(payload)}
                    await storage.records.write(f"secret~{n}-deadbeef", orphan, "create")
                keep = ConversationState("other")
                keep.add_message("user", "unrelated")
                await storage.save_conversation(keep)
                assert SECRET.encode() in await medium.dump()
                assert await storage.delete_conversation("secret")
                if backend == "file":
                    # A crashed write's temporary file is no record: check --repair removes it.
                    (tmp_path / "store" / ".tmp-crashed").write_text(f"{SECRET} in a tmp file")
                    report = await storage.check(repair=True, grace=0)
                    assert report.leftovers == [".tmp-crashed"], report.lines()
                assert await storage.load_conversation("other") == keep
                return await medium.dump()
            finally:
                await medium.close()

    stored = asyncio.run(main())
    assert SECRET.encode() not in stored
    assert b"unrelated" in stored  # the dump does see the data
    if backend == "sqlite":  # deleted rows are zeroed in the file itself (secure_delete)
        for path in tmp_path.glob("store.db*"):
            assert SECRET.encode() not in path.read_bytes(), path


# ------------------------------------------------------------ nothing accumulates


@pytest.mark.parametrize("backend", ["file", "sqlite"])
def test_a_thousand_conversations_saved_and_deleted_leave_a_bounded_number_of_files(
    backend: str, tmp_path: Path
) -> None:
    url = f"file://{tmp_path}/store?fsync=0" if backend == "file" else f"sqlite:///{tmp_path}/s.db"

    async def main() -> None:
        async with open_storage(url) as storage:
            for i in range(1000):
                state = ConversationState(f"c{i}")
                state.add_message("user", "hi")
                await storage.save_conversation(state)
            for i in range(1000):
                assert await storage.delete_conversation(f"c{i}")
            assert await storage.count_conversations() == 0

    started = time.monotonic()
    asyncio.run(main())
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    if backend == "file":
        locks = [f for f in files if f.startswith("store/.locks/")]
        assert files == locks, files[:10]
        assert 0 < len(locks) <= LOCK_STRIPES
    else:
        assert set(files) <= {"s.db", "s.db-wal", "s.db-shm"}, files
    took = time.monotonic() - started
    print(f"[{backend}] 1,000 saved and deleted: {len(files)} files left ({took:.1f} s)")


def test_the_file_store_needs_no_fcntl() -> None:
    """fcntl does not exist on Windows: convtree's stores must not import it (filelock picks
    the platform's lock: flock on POSIX, LockFileEx on Windows)."""
    source = Path(__file__).resolve().parent.parent / "src" / "convtree" / "storage"
    for path in sorted(source.rglob("*.py")):
        assert "fcntl" not in path.read_text(), path
    code = (
        "import sys; sys.modules['fcntl'] = None  # as on Windows\n"
        "import asyncio, tempfile, warnings\n"
        "warnings.simplefilter('ignore')  # filelock: 'only soft file lock is available'\n"
        "from convtree import ConversationState, open_storage\n"
        "async def main():\n"
        "    with tempfile.TemporaryDirectory() as d:\n"
        "        async with open_storage('file://' + d) as s:\n"
        "            c = ConversationState('c'); c.add_message('user', 'x')\n"
        "            await s.save_conversation(c)\n"
        "            print((await s.load_conversation('c')) == c)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr


# ------------------------------------------------------------ filter keys


@pytest.mark.parametrize("backend", PERSISTENT)
def test_a_filter_key_with_a_newline_is_refused_on_every_backend(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = store_url(backend, request, tmp_path)

    async def main() -> None:
        async with open_storage(url) as storage:
            state = ConversationState("c", metadata={"user_id": "u", "a": {"b": "v"}})
            await storage.save_conversation(state)
            for key in ["user_id\n", "user_id\r\n", "\tuser_id", "a.b\n", "user\x00id", "a\x85"]:
                for spec in ("u", {"$ne": "x"}, {"$exists": False}):
                    with pytest.raises(FilterError, match="control character"):
                        await storage.list_summaries({key: spec})
                    with pytest.raises(FilterError, match="control character"):
                        await storage.count_conversations({key: spec})
            assert [r.conversation_id for r in await storage.list_summaries({"user_id": "u"})] == [
                "c"
            ]
            assert await storage.count_conversations({"a.b": "v"}) == 1

    asyncio.run(main())


# ------------------------------------------------------------ SQL names


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("schema", "MySchema", "lower-case SQL identifier"),
        ("table", "MyTable", "lower-case SQL identifier"),
        ("schema", "select", "SQL keyword"),
        ("table", "user", "SQL keyword"),
        ("schema", "abc\n", "lower-case SQL identifier"),
    ],
)
def test_postgres_names_that_would_break_are_refused_before_anything_is_created(
    postgres_server: str, param: str, value: str, message: str
) -> None:
    import uuid
    from urllib.parse import quote

    import asyncpg

    table = f"t{uuid.uuid4().hex[:12]}"
    joiner = "&" if "?" in postgres_server else "?"
    url = f"{postgres_server}{joiner}table={table}"
    url = url.replace(f"table={table}", f"{param}={quote(value)}") if param == "table" else url
    if param == "schema":
        url += f"&schema={quote(value)}"

    async def main() -> list[Any]:
        with pytest.raises(StorageError, match=message):
            await open_storage(url)._open()
        conn = await asyncpg.connect(**admin_connect_args(url))
        try:
            return list(
                await conn.fetch(
                    "SELECT nspname FROM pg_namespace WHERE lower(nspname) = lower($1) "
                    "UNION SELECT relname FROM pg_class WHERE lower(relname) = lower($1)",
                    value,
                )
            )
        finally:
            await conn.close()

    assert asyncio.run(main()) == []


# ------------------------------------------------------------ a failed SQLite open


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convtree.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,  # the process must exit: an aiosqlite thread left running would hang it
        check=False,
    )


def test_a_failed_sqlite_open_exits_with_the_error(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_bytes(b"these are my notes, not a database\n" * 200)
    folder = tmp_path / "folder.db"
    folder.mkdir()
    cases = {
        f"sqlite:///{tmp_path}/x.db?table=select": "SQL keyword",
        f"sqlite:///{not_a_db}": "not a database",
        f"sqlite:///{folder}": "unable to open",
    }
    for url, expected in cases.items():
        done = _run_cli("demo", "--store", url)
        assert done.returncode == 1, (url, done.stdout, done.stderr)
        # The error is the first thing said. (Before the failed open joined the
        # threads it started, aiosqlite's worker could print "Event loop is
        # closed" after it on 3.10; it does not matter whether that lands.)
        assert "convtree: error:" in done.stderr.splitlines()[0], done.stderr
        assert expected in done.stderr, done.stderr
    assert not_a_db.read_bytes().startswith(b"these are my notes")  # left as it was


def test_a_failed_sqlite_open_leaves_no_thread(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_bytes(b"not a database\n" * 500)
    before = set(threading.enumerate())
    for _ in range(3):
        with pytest.raises(StorageError, match="not a database"):
            asyncio.run(open_storage(f"sqlite:///{not_a_db}")._open())
    time.sleep(0.2)
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert left == []


LEFT_OPEN = {
    "async": """
import asyncio, sys
from convtree import ConversationState, open_storage

async def main():
    storage = await open_storage(sys.argv[1])
    state = ConversationState("kept")
    state.add_message("user", "saved, the storage never closed")
    await storage.save_conversation(state)
    keep.append(storage)  # still referenced at exit

keep = []
asyncio.run(main())
""",
    "sync": """
import sys
from convtree import ConversationState
from convtree.sync import open_storage

storage = open_storage(sys.argv[1])
state = ConversationState("kept")
state.add_message("user", "saved, the storage never closed")
storage.save_conversation(state)
""",
}


@pytest.mark.parametrize("api", sorted(LEFT_OPEN))
def test_a_program_that_never_closes_its_sqlite_storage_exits(api: str, tmp_path: Path) -> None:
    """aiosqlite's worker is not a daemon thread; a storage still open at exit is closed by
    convtree's exit hook instead of keeping the interpreter waiting for it forever."""
    url = f"sqlite:///{tmp_path}/left.db"
    script = tmp_path / "left_open.py"
    script.write_text(LEFT_OPEN[api])
    done = subprocess.run(
        [sys.executable, str(script), url], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""

    async def read() -> str | None:
        async with open_storage(url) as storage:
            state = await storage.load_conversation("kept")
            return None if state is None else state.current_node.text

    assert asyncio.run(read()) == "saved, the storage never closed"
