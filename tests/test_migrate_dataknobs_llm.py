"""Stores written by the real dataknobs-llm 0.5.5 are copied into convtree, node by node.

Every store here is written by dataknobs-llm's own API (``ConversationManager``
with its echo provider, over ``DataknobsConversationStorage`` on a dataknobs-data
backend): regenerated replies, a branch continued, tool calls, metadata. The
migrated conversations are compared, every node, with what dataknobs-llm itself
loads back. Skipped when dataknobs-llm is not installed (``pip install -e
'.[test,bench]'`` installs it), except on CI (``CI=true``), which must install it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import uuid
from datetime import timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

try:
    import dataknobs_llm.conversations  # noqa: F401
except ImportError as exc:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise  # CI installs the bench extra: dataknobs-llm missing there is a setup error
    pytest.skip(
        f"dataknobs-llm is not installed ({exc}): pip install -e '.[test,bench]'",
        allow_module_level=True,
    )

from dataknobs_data import AsyncDatabase, Query, Record
from dataknobs_data import async_database_factory as factory
from dataknobs_llm.conversations import (
    ConversationManager,
    DataknobsConversationStorage,
)
from dataknobs_llm.llm.base import LLMResponse, ToolCall
from dataknobs_llm.llm.providers.echo import EchoProvider
from dataknobs_llm.prompts import AsyncPromptBuilder
from dataknobs_llm.prompts.implementations import ConfigPromptLibrary

from convtree import ConversationState, StorageError, open_storage
from convtree.cli import main
from convtree.interop.dataknobs_llm import MigrationReport, migrate, open_source

from .conftest import _postgres_url

# ----------------------------------------------------------------- writing with the reference
# (dataknobs_llm.testing has helpers for responses, but on Python 3.12+ importing it probes
# the network for a localstack server; the responses are built directly instead.)


def text_response(content: str, usage: dict[str, int] | None = None) -> LLMResponse:
    return LLMResponse(content=content, model="echo-1", finish_reason="stop", usage=usage)


def tool_call_response(name: str, arguments: dict[str, Any], *, tool_id: str) -> LLMResponse:
    return LLMResponse(
        content="",
        model="echo-1",
        finish_reason="tool_calls",
        tool_calls=[ToolCall(name=name, parameters=arguments, id=tool_id)],
    )


async def write_conversations(db: Any, prefix: str = "c") -> list[str]:
    """Three conversations, written through dataknobs-llm's ConversationManager."""
    storage = DataknobsConversationStorage(db)
    llm = EchoProvider({"provider": "echo", "model": "echo-1"}, strict_tools=False)
    builder = AsyncPromptBuilder(library=ConfigPromptLibrary({}))
    ids = []

    # 1. A regenerated reply, a branch continued, then back to the first reply and on.
    cid = f"{prefix}-branches"
    m = await ConversationManager.create(
        llm=llm,
        prompt_builder=builder,
        storage=storage,
        conversation_id=cid,
        metadata={"user_id": "alice", "tags": ["x", "y"]},
    )
    await m.add_message(role="system", content="You are terse.")
    await m.add_message(role="user", content="What is a B-tree?")
    llm.set_responses([text_response("A tree.", usage={"prompt_tokens": 3})])
    await m.complete()
    first = m.current_node_id
    await m.branch_from(first)
    llm.set_responses([text_response("A balanced search tree, wide nodes.")])
    await m.complete(branch_name="regenerated", metadata={"rating": 5})
    await m.add_message(role="user", content="Für Datenbanken? 🌳")
    llm.set_responses([text_response("Ja: Indizes.")])
    await m.complete()
    await m.switch_to_node(first)
    await m.add_message(role="user", content="Shorter?", metadata={"edited": False})
    llm.set_responses([text_response("Tree.")])
    await m.complete()
    await m.add_metadata("topic", "trees")
    ids.append(cid)

    # 2. A tool call and its result.
    cid = f"{prefix}-tools"
    m = await ConversationManager.create(
        llm=llm, prompt_builder=builder, storage=storage, conversation_id=cid
    )
    await m.add_message(role="user", content="Weather in Oslo?")
    llm.set_responses([tool_call_response("get_weather", {"city": "Oslo"}, tool_id="tc-1")])
    await m.complete()
    await m.add_message(
        role="tool", content='{"temp": -3}', name="get_weather", tool_call_id="tc-1"
    )
    llm.set_responses([text_response("-3 °C.")])
    await m.complete()
    ids.append(cid)

    # 3. Branching at the first message: two user questions under the system prompt.
    cid = f"{prefix}-forks"
    m = await ConversationManager.create(
        llm=llm, prompt_builder=builder, storage=storage, conversation_id=cid
    )
    await m.add_message(role="system", content="sys")
    await m.add_message(role="user", content="one")
    await m.branch_from(m.current_node_id)
    await m.add_message(role="user", content="two")
    await m.branch_from(m.current_node_id)
    await m.add_message(role="user", content="three")
    ids.append(cid)
    return ids


async def reference_states(db: Any, ids: list[str]) -> dict[str, Any]:
    """What dataknobs-llm itself loads back."""
    storage = DataknobsConversationStorage(db)
    out = {}
    for cid in ids:
        state = await storage.load_conversation(cid)
        assert state is not None
        out[cid] = state
    return out


def assert_same(reference: Any, state: ConversationState) -> None:
    """Every node of dataknobs-llm's state is in ``state``: message, times, names, links, order."""
    assert state.conversation_id == reference.conversation_id
    assert state.current_node_id == reference.current_node_id
    assert state.metadata == reference.metadata
    assert state.created_at == reference.created_at.replace(tzinfo=timezone.utc)
    assert state.updated_at == reference.updated_at.replace(tzinfo=timezone.utc)
    nodes = {node.node_id: node for node in state.nodes()}
    stack = [reference.message_tree]
    seen = 0
    while stack:
        tree = stack.pop()
        seen += 1
        ref = tree.data
        node = nodes[ref.node_id]
        assert node.message is not None
        assert node.message.to_dict() == ref.message.to_dict(), ref.node_id
        assert node.timestamp == ref.timestamp.replace(tzinfo=timezone.utc)
        assert node.branch_name == ref.branch_name
        assert node.prompt_name == ref.prompt_name
        assert node.metadata == ref.metadata
        parent = state.parent(node)
        if tree.parent is None:
            assert parent is None
        else:
            assert parent is not None
            assert parent.node_id == tree.parent.data.node_id
        kids = tree.children or []
        assert [c.node_id for c in state.children(node)] == [k.data.node_id for k in kids]
        stack.extend(kids)
    assert seen == len(state)
    assert [m.to_dict() for m in state.get_current_messages()] == [
        m.to_dict() for m in reference.get_current_messages()
    ]


def load_all(url: str) -> dict[str, ConversationState]:
    async def read() -> dict[str, ConversationState]:
        async with open_storage(url) as storage:
            out = {}
            for summary in await storage.list_summaries(limit=None):
                state = await storage.load_conversation(summary.conversation_id)
                assert state is not None
                out[summary.conversation_id] = state
            return out

    return asyncio.run(read())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------- the four backends


def test_memory_store_through_the_python_api(tmp_path: Path) -> None:
    dest = f"sqlite:///{tmp_path / 'convtree.db'}"

    async def run() -> tuple[MigrationReport, MigrationReport, dict[str, Any], list[Any]]:
        db = factory.create(backend="memory")
        await db.connect()
        ids = await write_conversations(db)
        before = [r.to_dict() for r in await db.search(Query())]
        seen: list[tuple[int, int | None]] = []
        first = await migrate(db, dest, progress=lambda done, total: seen.append((done, total)))
        again = await migrate(DataknobsConversationStorage(db), dest)  # its storage works too
        after = [r.to_dict() for r in await db.search(Query())]
        assert after == before  # the source is never changed
        assert seen == [(1, 3), (2, 3), (3, 3)]
        return first, again, await reference_states(db, ids), ids

    first, again, reference, ids = asyncio.run(run())
    assert sorted(first.copied) == sorted(ids)
    assert first.exit_code == 0
    assert sorted(again.unchanged) == sorted(ids)
    assert again.copied == again.failed == again.present == []
    migrated = load_all(dest)
    assert sorted(migrated) == sorted(ids)
    for cid in ids:
        assert_same(reference[cid], migrated[cid])
    assert len(migrated["c-branches"].leaves()) == 2
    assert len(migrated["c-forks"].children(migrated["c-forks"].root)) == 3


def test_file_store_by_url_unchanged_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "dataknobs.json"

    async def write() -> tuple[list[str], dict[str, Any]]:
        db = factory.create(backend="file", path=str(path))
        await db.connect()
        ids = await write_conversations(db)
        states = await reference_states(db, ids)
        await db.close()
        return ids, states

    ids, reference = asyncio.run(write())
    before = digest(path)
    names = sorted(p.name for p in tmp_path.iterdir())
    source = f"dataknobs-llm+file://{path}"
    dest = f"file://{tmp_path / 'convtree'}"
    report = asyncio.run(migrate(source, dest))
    assert sorted(report.copied) == sorted(ids)
    assert report.source == source
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "convtree") == names
    for cid, state in load_all(dest).items():
        assert_same(reference[cid], state)
    assert sorted(asyncio.run(migrate(source, dest)).unchanged) == sorted(ids)


def test_a_broken_file_store_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "dataknobs.json"
    path.write_text('{"c1": {"fields": {', "utf-8")  # dataknobs-data reads this as empty
    with pytest.raises(StorageError, match="is not valid JSON"):
        asyncio.run(migrate(f"dataknobs-llm+file://{path}", "memory://x"))
    with pytest.raises(StorageError, match="no dataknobs-data file at"):
        asyncio.run(migrate(f"dataknobs-llm+file://{tmp_path / 'nope.json'}", "memory://x"))


def _sqlite_rows(path: Path, table: str = "records") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT id, data, metadata FROM {table} ORDER BY id").fetchall()
    finally:
        conn.close()


def test_sqlite_store_with_a_broken_record_dry_run_replace_and_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dataknobs.db"

    async def write() -> tuple[list[str], dict[str, Any]]:
        db = factory.create(backend="sqlite", path=str(path))
        await db.connect()
        ids = await write_conversations(db)
        states = await reference_states(db, ids)
        # A record no conversation can be made of (another app's, or damaged).
        await db.upsert("zz-broken", Record({"conversation_id": "zz-broken", "nodes": "oops"}))
        await db.close()
        return ids, states

    ids, reference = asyncio.run(write())
    rows = _sqlite_rows(path)
    source = f"dataknobs-llm+sqlite:///{path}"
    dest = f"sqlite:///{tmp_path / 'convtree.db'}"

    assert main(["migrate", "--from", source, "--to", dest, "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"dry run: 4 conversation(s) in {source}, into {dest}: 3 would be copied")
    assert "failed: 'zz-broken': cannot be loaded: " in out
    assert load_all(dest) == {}

    assert main(["migrate", "--from", source, "--to", dest]) == 1
    assert "3 copied, 0 replaced, 0 unchanged, 0 already present" in capsys.readouterr().out
    migrated = load_all(dest)
    assert sorted(migrated) == sorted(ids)
    for cid in ids:
        assert_same(reference[cid], migrated[cid])
    assert _sqlite_rows(path) == rows  # read only

    # A conversation changed in convtree since: kept, unless --replace.
    async def change() -> None:
        async with open_storage(dest) as storage:
            state = await storage.load_conversation("c-tools")
            assert state is not None
            state.add_message("user", "added in convtree")
            await storage.save_conversation(state)

    asyncio.run(change())
    assert main(["migrate", "--from", source, "--to", dest]) == 1
    out = capsys.readouterr().out
    assert "0 copied, 0 replaced, 2 unchanged, 1 already present and different (kept)" in out
    assert "kept: 'c-tools' is already stored and differs (--replace replaces it)" in out
    assert main(["migrate", "--from", source, "--to", dest, "--replace", "--progress"]) == 1
    captured = capsys.readouterr()
    assert "0 copied, 1 replaced, 2 unchanged" in captured.out
    assert "4/4" in captured.err  # the progress bar, asked for on a non-terminal
    assert_same(reference["c-tools"], load_all(dest)["c-tools"])
    assert _sqlite_rows(path) == rows


def test_sqlite_source_is_read_in_pages_and_never_created(tmp_path: Path) -> None:
    path = tmp_path / "many.db"

    async def write() -> None:
        db = factory.create(backend="sqlite", path=str(path), table="chats")
        await db.connect()
        storage = DataknobsConversationStorage(db)
        for i in range(250):
            await storage.save_conversation(one_message_state(f"k{i:03d}"))
        await db.close()

    asyncio.run(write())
    dest = f"memory://many-{tmp_path.name}"
    report = asyncio.run(migrate(f"dataknobs-llm+sqlite:///{path}?table=chats", dest))
    assert len(report.copied) == 250
    assert report.failed == []
    assert len(set(report.copied)) == 250

    with pytest.raises(StorageError, match="no table 'records' in the SQLite database"):
        asyncio.run(migrate(f"dataknobs-llm+sqlite:///{path}", "memory://x"))
    assert [r[0] for r in _table_names(path)] == ["chats"]  # nothing created
    missing = tmp_path / "missing.db"
    with pytest.raises(StorageError, match="no SQLite database at"):
        asyncio.run(migrate(f"dataknobs-llm+sqlite:///{missing}", "memory://x"))
    assert not missing.exists()


def one_message_state(cid: str) -> Any:
    """A one-message dataknobs-llm conversation (built with its own classes)."""
    from dataknobs_llm.conversations.storage import ConversationNode
    from dataknobs_llm.conversations.storage import ConversationState as RefState
    from dataknobs_llm.llm.base import LLMMessage
    from dataknobs_structures import Tree

    root = ConversationNode(message=LLMMessage(role="user", content=f"hello {cid}"), node_id="")
    return RefState(conversation_id=cid, message_tree=Tree(root), metadata={"n": cid})


def _table_names(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
    finally:
        conn.close()


def _pg_connect_kwargs(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    params = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    kwargs: dict[str, Any] = {
        "user": unquote(parts.username or "postgres"),
        "database": unquote(parts.path.lstrip("/")) or "postgres",
        "host": unquote(params.get("host", "")) or parts.hostname or "localhost",
    }
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    if parts.port:
        kwargs["port"] = parts.port
    return kwargs


@pytest.fixture
def postgres_db(postgres_server: str) -> tuple[str, dict[str, Any]]:
    """A fresh table name on the test server, and asyncpg's connection keywords for it."""
    return f"dk{uuid.uuid4().hex[:12]}", _pg_connect_kwargs(postgres_server)


def test_postgres_store(
    postgres_server: str, postgres_db: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    from convtree.storage.backends.postgres import OwnPoolPostgresDatabase

    table, connect = postgres_db

    async def snapshot() -> list[tuple[str, str]]:
        import asyncpg

        conn = await asyncpg.connect(**connect)
        try:
            rows = await conn.fetch(f"SELECT id, data::text AS d FROM {table} ORDER BY id")
            return [(r["id"], r["d"]) for r in rows]
        finally:
            await conn.close()

    async def write() -> tuple[list[str], dict[str, Any]]:
        # dataknobs-data's own PostgreSQL backend (on a pool of its own: dataknobs-data
        # cannot reach a server on a Unix socket by itself) under dataknobs-llm's storage.
        db: AsyncDatabase = OwnPoolPostgresDatabase({"table": table, "schema": "public"}, connect)
        await db.connect()
        try:
            ids = await write_conversations(db, prefix="pg")
            return ids, await reference_states(db, ids)
        finally:
            await db.close()

    ids, reference = asyncio.run(write())
    before = asyncio.run(snapshot())
    source = "dataknobs-llm+" + _postgres_url(postgres_server, table)
    dest = f"sqlite:///{tmp_path / 'convtree.db'}"
    report = asyncio.run(migrate(source, dest))
    assert sorted(report.copied) == sorted(ids), report.lines()
    migrated = load_all(dest)
    for cid in ids:
        assert_same(reference[cid], migrated[cid])
    assert asyncio.run(snapshot()) == before
    assert sorted(asyncio.run(migrate(source, dest)).unchanged) == sorted(ids)

    async def read_only() -> None:
        async with open_source(source) as db:
            await db.upsert("x", Record({"conversation_id": "x"}))

    import asyncpg

    with pytest.raises(asyncpg.exceptions.ReadOnlySQLTransactionError):
        asyncio.run(read_only())
    missing = "dataknobs-llm+" + _postgres_url(postgres_server, "no_such_table")
    with pytest.raises(StorageError, match=r"no table public\.no_such_table"):
        asyncio.run(migrate(missing, dest))


# ----------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///x.db", "is not a dataknobs-llm store URL"),
        ("dataknobs-llm+memory://", "exists only inside the process"),
        ("dataknobs-llm+s3://bucket/x", "unknown dataknobs-llm backend 's3'"),
        ("dataknobs-llm+sqlite:///./x.db?table=Bad-Name", "must be a lower-case SQL identifier"),
    ],
)
def test_source_urls_that_are_refused(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        asyncio.run(migrate(url, "memory://x"))


def test_migrated_documents_are_what_convtree_reads_from_the_reference_json(
    tmp_path: Path,
) -> None:
    """The record fields are the reference's own to_dict(): the same as loading that JSON."""

    async def run() -> tuple[dict[str, Any], dict[str, ConversationState]]:
        db = factory.create(backend="memory")
        await db.connect()
        ids = await write_conversations(db)
        refs = await reference_states(db, ids)
        await migrate(db, f"memory://same-{tmp_path.name}")
        async with open_storage(f"memory://same-{tmp_path.name}") as storage:
            return refs, {cid: await storage.load_conversation(cid) for cid in ids}  # type: ignore[misc]

    refs, migrated = asyncio.run(run())
    for cid, ref in refs.items():
        direct = ConversationState.from_dict(json.loads(json.dumps(ref.to_dict())))
        assert migrated[cid] == direct


def test_an_open_destination_and_a_source_object_of_the_wrong_kind(tmp_path: Path) -> None:
    async def run() -> MigrationReport:
        db = factory.create(backend="memory")
        await db.connect()
        await write_conversations(db)
        async with open_storage(f"memory://open-{tmp_path.name}") as storage:
            report = await migrate(db, storage, dry_run=True)
            assert await storage.count_conversations() == 0  # a dry run writes nothing
            with pytest.raises(TypeError, match="not dict"):
                await migrate({"nodes": []}, storage)
            return report

    report = asyncio.run(run())
    assert len(report.copied) == 3
    assert report.dest == f"memory://open-{tmp_path.name}"
    assert report.lines()[0].startswith("dry run: 3 conversation(s) in a dataknobs-data ")
