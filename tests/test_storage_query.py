"""Listings at scale: pushdown equals Python, keyset cursors, pages, search, plans, indexes.

What runs in SQL on SQLite and PostgreSQL must return exactly what the Python
filter returns on the stores that scan (memory, file, S3): every pushed operator,
every order, the search, the cursors. The plans are asserted by shape (which
index serves which query), never by time.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from convtree import ConversationState, FilterError, open_storage
from convtree.storage.filters import MetadataFilter
from convtree.storage.layout import record_id
from convtree.storage.query import HeadQuery
from tests.conftest import BACKENDS, fresh_store_url

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SQL = ["sqlite", "postgres"]


@pytest.fixture
def url_of(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    return lambda backend: fresh_store_url(backend, request, tmp_path)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


# ---------------------------------------------------------------- pushdown == Python

TRICKY = ["alice", "Alice", "", "1", "true", "a'b", 'a"b', "%", "_", "\\", "ünï", "a%b", "NEAR"]
VALUES: list[Any] = [*TRICKY, 1, 1.0, 0, True, False, None, ["alice"], ["%", "x"], {"k": "alice"}]


def _metadata(rng: random.Random, i: int) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key in ("user_id", "tier", "flag"):
        if rng.random() < 0.8:
            meta[key] = rng.choice(VALUES)
    if rng.random() < 0.7:
        meta["tags"] = rng.sample(TRICKY, rng.randint(0, 3)) + (
            [rng.choice([1, True, None, ["alice"]])] if rng.random() < 0.3 else []
        )
    if rng.random() < 0.5:
        meta["project"] = rng.choice([{"name": rng.choice(VALUES)}, "alice", [], None])
    return meta


def _filters() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key in ("user_id", "tier", "flag", "project.name", "project", "tags"):
        for value in [*TRICKY[:8], True, False, 1, None]:
            out.append({key: value})
            out.append({key: {"$ne": value}})
        out.append({key: {"$exists": True}})
        out.append({key: {"$exists": False}})
        out.append({key: {"$in": ["alice", "%", ""]}})
        out.append({key: {"$in": []}})
        out.append({key: {"$nin": ["alice", "_"]}})
        out.append({key: {"$in": ["alice", 1]}})  # mixed: checked in Python
        out.append({key: {"$contains": "alice"}})
        out.append({key: {"$contains": "%"}})
        out.append({key: {"$gte": "a"}})  # not pushed: ordered comparison
    out.append({"user_id": "alice", "tags": {"$contains": "_"}})
    out.append({"tier": {"$nin": []}, "flag": True})
    return out


@pytest.mark.parametrize("backend", ["memory", *SQL])
def test_every_pushed_operator_and_order_returns_exactly_the_python_rows(
    backend: str, url_of: Callable[[str], str]
) -> None:
    rng = random.Random(7)
    metas = [_metadata(rng, i) for i in range(90)]
    stamps = [T0 + timedelta(minutes=rng.randint(0, 30)) for _ in metas]  # many ties

    async def main() -> None:
        async with open_storage(url_of(backend)) as storage:
            for i, meta in enumerate(metas):
                state = ConversationState(f"c{i:03d}", metadata=meta)
                state.add_message("user", f"message {i}")
                state.created_at = stamps[-1 - i]
                state.updated_at = stamps[i]
                await storage.save_conversation(state)
            pushed = 0
            for flt in _filters():
                conditions = MetadataFilter(flt).conditions
                pushed += all(storage.records.pushable(c) for c in conditions)
                chosen = [i for i, m in enumerate(metas) if MetadataFilter(flt).matches(m, T0, T0)]
                for order in ("-updated_at", "updated_at", "created_at", "conversation_id"):
                    key = order.lstrip("-")

                    def place(i: int, key: str = key) -> tuple[str, str]:
                        cid = f"c{i:03d}"
                        if key == "conversation_id":
                            return (cid, cid)
                        stamp = stamps[i] if key == "updated_at" else stamps[-1 - i]
                        return (stamp.isoformat(), cid)

                    expected = [
                        f"c{i:03d}"
                        for i in sorted(chosen, key=place, reverse=order.startswith("-"))
                    ]
                    found = await storage.list_summaries(flt, order_by=order, limit=None)
                    assert [s.conversation_id for s in found] == expected, (flt, order)
                    page = await storage.list_summaries(flt, order_by=order, limit=5, offset=3)
                    assert [s.conversation_id for s in page] == expected[3:8], (flt, order)
                assert await storage.count_conversations(flt) == len(chosen), flt
            if backend != "memory":
                assert pushed > 100, "most of these filters run in SQL"

    run(main())


# ---------------------------------------------------------------- cursors and pages


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_keyset_walk_while_writers_insert_skips_and_repeats_nothing(
    backend: str, url_of: Callable[[str], str]
) -> None:
    async def main() -> None:
        async with open_storage(url_of(backend)) as storage:
            stable = []
            for i in range(23):
                state = ConversationState(f"s{i:02d}", metadata={"user_id": "u"})
                state.add_message("user", "hi")
                state.updated_at = T0 + timedelta(seconds=i // 3)  # ties of three
                await storage.save_conversation(state)
                stable.append(state.conversation_id)
            for order in ("-updated_at", "conversation_id"):
                seen: list[str] = []
                page = await storage.list_page(
                    {"user_id": "u"}, order_by=order, limit=4, total=True
                )
                assert page.total == await storage.count_conversations({"user_id": "u"})
                n = 0
                while True:
                    seen.extend(s.conversation_id for s in page)
                    # A writer inserts before and after the cursor between pages.
                    for when in (T0 - timedelta(days=1), T0 + timedelta(days=1)):
                        n += 1
                        new = ConversationState(f"w{order[1:3]}{n:03d}", metadata={"user_id": "u"})
                        new.add_message("user", "new")
                        new.updated_at = when
                        await storage.save_conversation(new)
                    if page.next_cursor is None:
                        break
                    page = await storage.list_page(
                        {"user_id": "u"}, order_by=order, limit=4, after=page.next_cursor
                    )
                walked = [c for c in seen if c.startswith("s")]
                assert len(walked) == len(set(walked)) == 23, walked
                expected = stable if order == "conversation_id" else stable[::-1]
                assert walked == expected

    run(main())


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_bad_cursors_and_pages_are_filter_errors(
    backend: str, url_of: Callable[[str], str]
) -> None:
    async def main() -> None:
        async with open_storage(url_of(backend)) as storage:
            for i in range(3):
                state = ConversationState(f"c{i}")
                state.add_message("user", "hi")
                await storage.save_conversation(state)
            page = await storage.list_page(limit=2)
            assert len(page) == 2
            assert page.next_cursor
            assert page.total is None
            last = await storage.list_page(limit=2, after=page.next_cursor)
            assert len(last) == 1
            assert last.next_cursor is None
            with pytest.raises(FilterError, match="ordered by '-updated_at'"):
                await storage.list_page(order_by="conversation_id", after=page.next_cursor)
            for bad in ("", "nonsense!", "eyJ4Ijox", 5, "W10", "WzEsIi11cGRhdGVkX2F0IiwxLDJd"):
                with pytest.raises(FilterError):
                    await storage.list_summaries(after=bad)  # type: ignore[arg-type]
            for limit in (0, -1, True, None):
                with pytest.raises(FilterError):
                    await storage.list_page(limit=limit)  # type: ignore[arg-type]

    run(main())


# ---------------------------------------------------------------- search


def _branchy(cid: str, words: list[str]) -> ConversationState:
    state = ConversationState(cid, metadata={"user_id": cid[:2]})
    state.add_message("system", "You are helpful.")
    question = state.add_message("user", f"Tell me about {words[0]}")
    state.add_message("assistant", f"About {words[1]}.")
    state.add_alternative("assistant", f"Regenerated: {words[2]}")
    state.switch_to(question.node_id)
    state.add_message("assistant", [{"type": "text", "text": f"Parts {words[3]}"}])
    return state


@pytest.mark.parametrize("backend", BACKENDS)
def test_search_matches_every_branch_and_stays_exact_under_changes(
    backend: str, url_of: Callable[[str], str]
) -> None:
    async def ids(storage: Any, term: str, **kw: Any) -> list[str]:
        rows = await storage.list_summaries(search=term, order_by="conversation_id", **kw)
        count = await storage.count_conversations(search=term, **kw)
        assert count == len(rows), term
        return [r.conversation_id for r in rows]

    async def main() -> None:
        async with open_storage(url_of(backend)) as storage:
            a = _branchy("a1", ["Ölkanne", "zebra", "STRASSE", "100% pure"])
            b = _branchy("b1", ["giraffe", "Zebra crossing", "x_y", 'say "hi" OR NEAR(a b)*'])
            c = _branchy("c1", ["quokka", "hidden", 'tail\\ \t\x01😀 "q"\u2028', "qj"])
            for state in (a, b, c):
                await storage.save_conversation(state)
            assert await ids(storage, "ZEBRA") == ["a1", "b1"]  # case-insensitive
            assert await ids(storage, "ölk") == ["a1"]  # Unicode folding
            assert await ids(storage, "straße") == ["a1"]  # full case folding
            assert await ids(storage, "regenerated") == ["a1", "b1", "c1"]  # hidden branches
            assert await ids(storage, "zebra", filter_metadata={"user_id": "b1"}) == ["b1"]
            # Literal text: LIKE wildcards, quotes and FTS5 syntax are just characters.
            assert await ids(storage, "100%") == ["a1"]
            assert await ids(storage, "%") == ["a1"]
            assert await ids(storage, "_") == ["b1"]
            assert await ids(storage, "x_y") == ["b1"]
            assert await ids(storage, "xay") == []
            assert await ids(storage, '"hi" or near(a b)*') == ["b1"]
            for syntax in ('"', "*", "OR", "NEAR", "zebra OR quokka", "zeb*", "a AND b", "'"):
                expected = [
                    s.conversation_id
                    for s in (a, b, c)
                    if any(
                        syntax.casefold() in n.message.text.casefold()
                        for n in s.nodes()
                        if n.message is not None
                    )
                ]
                assert await ids(storage, syntax) == expected, syntax
            assert await ids(storage, "QJ") == ["c1"]  # shorter than a trigram
            assert await ids(storage, 'L\\ \t\x01😀 "Q"\u2028') == ["c1"]  # escapes, as stored
            # Changes: an append, an edit in place, a prune, a delete, a full overwrite.
            a.add_message("user", "now about a wombat")
            await storage.save_conversation(a)
            assert await ids(storage, "wombat") == ["a1"]
            node = next(n for n in a.nodes() if n.message and "STRASSE" in n.message.text)
            node.message = node.message.model_copy(update={"content": "Edited: kangaroo"})
            await storage.save_conversation(a)
            assert await ids(storage, "strasse") == []
            assert await ids(storage, "kangaroo") == ["a1"]
            a.prune(node.node_id)
            await storage.save_conversation(a)
            assert await ids(storage, "kangaroo") == []
            assert await storage.delete_conversation("c1")
            assert await ids(storage, "quokka") == []
            fresh = _branchy("b1", ["emu", "emu", "emu", "emu"])
            await storage.save_conversation(fresh, overwrite=True)
            assert await ids(storage, "giraffe") == []
            assert await ids(storage, "emu") == ["b1"]
            # Many saves (segments merge): still exact.
            for i in range(40):
                fresh.add_message("user", f"turn {i} marker{i}")
                await storage.save_conversation(fresh)
            assert await ids(storage, "marker0") == ["b1"]
            assert await ids(storage, "marker39") == ["b1"]
            assert await ids(storage, "marker40") == []

    run(main())


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
@pytest.mark.parametrize(
    "search",
    ["", "a\x00b", "\ud800", "x" * 1001, 5, b"zebra"],
)
def test_bad_search_text_is_refused(
    backend: str, search: Any, url_of: Callable[[str], str]
) -> None:
    async def main() -> None:
        async with open_storage(url_of(backend)) as storage:
            with pytest.raises(FilterError, match="search"):
                await storage.list_summaries(search=search)
            with pytest.raises(FilterError, match="search"):
                await storage.count_conversations(search=search)

    run(main())


@pytest.mark.parametrize("backend", SQL)
def test_hostile_filter_values_stay_literal_in_sql(
    backend: str, url_of: Callable[[str], str]
) -> None:
    values = ["%", "_", "' OR 1=1 --", '"; DROP TABLE x; --', "\\", "a\x00b", "$1", "?"]

    async def main() -> None:
        async with open_storage(url_of(backend)) as storage:
            for i, value in enumerate(values):
                state = ConversationState(f"h{i}", metadata={"user_id": value, "tags": [value]})
                state.add_message("user", value)
                await storage.save_conversation(state)
            for i, value in enumerate(values):
                for flt in ({"user_id": value}, {"tags": {"$contains": value}}):
                    rows = await storage.list_summaries(flt)
                    assert [r.conversation_id for r in rows] == [f"h{i}"], flt
            assert await storage.count_conversations() == len(values)

    run(main())


# ---------------------------------------------------------------- plans and indexes


async def _fill(storage: Any, n: int) -> None:
    for i in range(n):
        state = ConversationState(
            f"p{i:05d}", metadata={"user_id": f"u{i % 50}", "tags": [f"t{i % 20}"]}
        )
        state.add_message("user", f"question {i}" + (" okapi" if i % 100 == 0 else ""))
        await storage.save_conversation(state)


async def _plan(
    storage: Any, query: HeadQuery, *, count: bool = False, seqscan: bool = True
) -> str:
    records = storage.records
    statement = records.dialect.count(query) if count else records.dialect.select(query)
    if (
        isinstance(records.dialect.__class__.__name__, str)
        and "SQLite" in type(records.dialect).__name__
    ):
        rows = await records._fetch("EXPLAIN QUERY PLAN " + statement.sql, statement.params)
        return "\n".join(str(r[-1]) for r in rows)
    async with records._pool().acquire() as conn, conn.transaction():
        if not seqscan:  # a small table: show the index can serve it (it does at scale)
            await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch("EXPLAIN " + statement.sql, *statement.params)
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("backend", SQL)
def test_each_listing_query_is_served_by_its_index(
    backend: str, url_of: Callable[[str], str]
) -> None:
    def conditions(flt: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(MetadataFilter(flt).conditions)

    async def main() -> None:
        url = url_of(backend)
        async with open_storage(url) as storage:
            await _fill(storage, 1500)
            if backend == "postgres":
                await storage.records._pool().execute(f"ANALYZE {storage.records.table}")
                await storage.records._pool().execute(f"ANALYZE {storage.records.table}_text")
            table = storage.records.db.table_name
            user = conditions({"user_id": "u7"})
            newest = await _plan(storage, HeadQuery(limit=51))
            by_user = await _plan(storage, HeadQuery(conditions=user, limit=51))
            keyset = await _plan(storage, HeadQuery(limit=51, after=("2026", "p00001")))
            count_user = await _plan(storage, HeadQuery(conditions=user), count=True)
            search = await _plan(storage, HeadQuery(search="okapi", limit=51), seqscan=False)
            tags = await _plan(
                storage, HeadQuery(conditions=conditions({"tags": {"$contains": "t3"}}), limit=51)
            )
            if backend == "sqlite":
                assert f"USING INDEX {table}_ct_updated" in newest
                assert "TEMP B-TREE" not in newest  # the index gives the order
                assert f"USING INDEX {table}_ct_user (<expr>=?)" in by_user
                assert f"SEARCH {table} USING INDEX {table}_ct_updated (<expr><?)" in keyset
                assert f"{table}_ct_user" in count_user
                assert f"{table}_fts VIRTUAL TABLE INDEX" in search
            else:
                assert f"Index Scan Backward using {table}_ct_updated" in newest
                assert "Sort" not in newest
                assert f"{table}_ct_user" in by_user  # 30 rows: a bitmap scan and a sort
                assert f"{table}_ct_updated" in keyset
                assert "ROW(" in keyset
                assert f"{table}_ct_user" in count_user
                assert f"{table}_text_trgm" in search
                assert f"{table}_ct_meta" in tags or f"{table}_ct_updated" in tags
            assert "Seq Scan" not in newest + by_user + keyset + count_user

    run(main())


@pytest.mark.parametrize("backend", SQL)
def test_a_store_written_before_the_indexes_gets_them_on_open(
    backend: str, url_of: Callable[[str], str]
) -> None:
    url = url_of(backend)

    async def drop_everything(storage: Any) -> None:
        """Make the store look as convtree 0.1 left it: no indexes, no search tables."""
        records = storage.records
        table = records.table
        name = table.rsplit(".", 1)[-1]
        statements = [
            f"DROP TABLE IF EXISTS {table}_fts" if backend == "sqlite" else "SELECT 1",
            f"DROP TABLE IF EXISTS {table}_text",
            f"DROP TABLE IF EXISTS {table}_convtree",
            *(
                f"DROP INDEX IF EXISTS {table.rsplit('.', 1)[0] + '.' if '.' in table else ''}"
                f"{name}_ct_{suffix}"
                for suffix in ("updated", "created", "user", "key", "meta")
            ),
        ]
        for sql in statements:
            if backend == "sqlite":
                await records._change(sql, [])
            else:
                await records._pool().execute(sql)

    async def main() -> None:
        async with open_storage(url) as storage:
            for i in range(30):
                await storage.save_conversation(_branchy(f"o{i:02d}", ["x", f"w{i}", "y", "z"]))
            await drop_everything(storage)
        async with open_storage(url) as storage:  # indexes and search texts rebuilt
            assert [r.conversation_id for r in await storage.list_summaries(search="w17")] == [
                "o17"
            ]
            assert await storage.count_conversations(search="regenerated") == 30
            assert await storage.build_search_index() == 0  # complete: nothing to do
            # An interrupted build (the flag not set, texts partly there) completes.
            if backend == "sqlite":
                await storage.records._change(f"DELETE FROM {storage.records.table}_convtree", [])
                await storage.records._change(
                    f"DELETE FROM {storage.records.table}_text WHERE conv > 'o15'", []
                )
            else:
                await storage.records._pool().execute(
                    f"DELETE FROM {storage.records.table}_convtree"
                )
                await storage.records._pool().execute(
                    f"DELETE FROM {storage.records.table}_text WHERE conv > 'o15'"
                )
        async with open_storage(url) as storage:
            assert await storage.count_conversations(search="regenerated") == 30
            assert len(await storage.list_summaries(limit=None)) == 30

    run(main())


def test_a_postgres_table_keeps_only_the_indexes_convtree_uses(
    url_of: Callable[[str], str],
) -> None:
    """dataknobs-data's GIN indexes of the whole ``data`` and ``metadata`` columns serve
    no query of convtree's: a new table is created without them, and a table that has
    them (created by dataknobs-data, or by an older convtree) loses them on open, its
    records kept. The table's storage setting (``TOAST_TARGET``) is set the same way."""
    from dataknobs_data.backends.postgres_mixins import PostgresTableManager

    url = url_of("postgres")
    generic = {"data", "metadata"}

    async def indexes(storage: Any) -> set[str]:
        rows = await storage.records._pool().fetch(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = $1::regclass",
            storage.records.table,
        )
        return {row[0].rsplit(".", 1)[-1] for row in rows}

    async def options(storage: Any) -> list[str]:
        found = await storage.records._pool().fetchval(
            "SELECT reloptions FROM pg_class WHERE oid = $1::regclass", storage.records.table
        )
        return list(found or [])

    async def main() -> None:
        async with open_storage(url) as storage:
            name = storage.records.db.table_name
            ours = {f"{name}_pkey"} | {f"{name}_ct_{s}" for s in ("updated", "created", "user")}
            ours |= {f"{name}_ct_key", f"{name}_ct_meta"}
            assert await indexes(storage) == ours
            assert await options(storage) == ["toast_tuple_target=128"]
            for i in range(3):
                await storage.save_conversation(_branchy(f"o{i}", ["x", f"w{i}", "y", "z"]))
            # What dataknobs-data's own connect runs on the table.
            schema = storage.records.db.schema_name
            await storage.records._pool().execute(
                PostgresTableManager.get_create_table_sql(schema, name)
            )
            assert await indexes(storage) == ours | {f"idx_{name}_{g}" for g in generic}
            await storage.records._pool().execute(
                f"ALTER TABLE {storage.records.table} RESET (toast_tuple_target)"
            )
            # A role that may read and write the tables, but not drop their indexes or
            # change the table, opens the store all the same: the table stays as it is.
            role = f"r{name}"
            await storage.records._pool().execute(
                f"CREATE ROLE {role} LOGIN; GRANT ALL ON {schema}.{name}, {schema}.{name}_text, "
                f"{schema}.{name}_convtree TO {role}"
            )
        async with open_storage(url.replace("//postgres:@", f"//{role}:@")) as storage:
            assert storage.records.db._connect_kwargs["user"] == role
            assert await storage.count_conversations(search="w1") == 1
            assert await indexes(storage) == ours | {f"idx_{name}_{g}" for g in generic}
            assert await options(storage) == []
        async with open_storage(url) as storage:
            assert await indexes(storage) == ours
            assert await options(storage) == ["toast_tuple_target=128"]
            # A target the owner chose is kept.
            await storage.records._pool().execute(
                f"ALTER TABLE {storage.records.table} SET (toast_tuple_target = 512)"
            )
        async with open_storage(url) as storage:
            assert await options(storage) == ["toast_tuple_target=512"]
            assert await storage.count_conversations(search="w1") == 1
            assert len(await storage.list_summaries(limit=None)) == 3

    run(main())


def test_sqlite_search_tables_hold_one_row_per_message(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def main() -> None:
        async with open_storage(f"sqlite:///{path}") as storage:
            state = _branchy("a", ["1", "2", "3", "4"])
            await storage.save_conversation(state)
            state.prune(state.children(state.get_path()[2])[0].node_id)
            await storage.save_conversation(state)
            await storage.delete_conversation("a")

    run(main())
    with closing(sqlite3.connect(path)) as conn:  # `with conn` alone does not close it
        assert conn.execute("SELECT count(*) FROM conversations_text").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM conversations_fts WHERE conversations_fts MATCH '\"abc\"'"
        ).fetchone() == (0,)
    assert record_id("a") == "a"


# ---------------------------------------------------------------- the write path


def test_an_append_and_save_is_one_sqlite_transaction(tmp_path: Path) -> None:
    """No read before the write: the head (and the small segments a save merges) are
    what this storage wrote last; the write is conditional on the head's token."""

    async def main() -> None:
        async with open_storage(f"sqlite:///{tmp_path / 's.db'}") as storage:
            state = ConversationState("c")
            state.add_message("user", "hi")
            await storage.save_conversation(state)
            statements: list[str] = []
            conn = storage.records._conn()
            await conn.set_trace_callback(statements.append)
            hops: list[object] = []
            to_thread = conn._execute

            async def counted(fn: object, *args: object) -> object:
                hops.append(fn)
                return await to_thread(fn, *args)

            conn._execute = counted
            for i in range(20):
                state.add_message("user", f"turn {i}")
                statements.clear()
                hops.clear()
                await storage.save_conversation(state)
                assert len(hops) == 1  # one round trip to aiosqlite's thread
                verbs = [s.split()[0].upper() for s in statements]
                assert "SELECT" not in verbs, statements
                assert verbs[0] == "BEGIN", statements
                assert verbs[-1] == "COMMIT", statements
                assert verbs.count("BEGIN") == 1, statements
            del conn._execute
            await conn.set_trace_callback(None)
            loaded = await storage.load_conversation("c")
            assert loaded == state

    run(main())


def test_sqlite_stores_a_segments_payload_inline_and_reads_the_string_form(
    tmp_path: Path,
) -> None:
    """A segment row is ``{"kind":"segment","payload":{...}}``, valid JSON, read back by
    a slice; rows of the earlier form (the payload as a JSON string) load, merge and
    search as before, and both round-trip values JSON text alone keeps exact."""
    from convtree.storage.backends.sqlite import _INLINE

    path = tmp_path / "s.db"
    state = ConversationState("c", metadata={"user_id": "u"})
    state.add_message("user", 'quote " backslash \\ NUL \x00 \u00e9 \ud800 line\nbreak')
    node = state.add_message("assistant", "answer")
    node.metadata = {"big": 2**70, "neg0": -0.0, "order": {"b": 1, "a": 2}, "deep": [[[[1]]]]}
    odd = state.add_message("user", "odd numbers")  # not JSON to SQLite: its segment is a string

    def segments() -> list[tuple[str, str]]:
        with closing(sqlite3.connect(path)) as con:
            return list(con.execute("SELECT id, data FROM conversations WHERE instr(id, '~') > 0"))

    async def main() -> None:
        async with open_storage(f"sqlite:///{path}") as storage:
            await storage.save_conversation(state)
            rows = segments()
            assert rows
            assert all(data.startswith(_INLINE + "{") for _, data in rows), rows
            odd.metadata = {"nan": float("nan"), "inf": float("-inf")}
            await storage.save_conversation(state)
            stringy = [data for key, data in segments() if (key, data) not in rows]
            assert len(stringy) == 1
            assert stringy[0].startswith('{"kind": "segment", "payload": "{'), stringy
            rows = [(key, data) for key, data in segments() if data.startswith(_INLINE)]
            loaded = await storage.load_conversation("c")
            assert loaded is not None
            assert loaded.to_json() == state.to_json()
        # Rewrite every segment row in the earlier form: the payload as a JSON string.
        with closing(sqlite3.connect(path)) as con, con:
            for key, data in rows:
                old = json.dumps({"kind": "segment", "payload": data[len(_INLINE) : -1]})
                con.execute("UPDATE conversations SET data = ? WHERE id = ?", (old, key))
        async with open_storage(f"sqlite:///{path}") as storage:
            loaded = await storage.load_conversation("c")
            assert loaded is not None
            assert loaded.to_json() == state.to_json()
            path_nodes = await storage.load_path("c")
            assert [n.node_id for n in path_nodes or []] == [n.node_id for n in state.get_path()]
            for i in range(12):  # merges read the string-form segments
                loaded.add_message("user", f"more {i}")
                await storage.save_conversation(loaded)
            assert not {key for key, _ in rows} & {key for key, _ in segments()}  # merged
            again = await storage.load_conversation("c")
            assert again is not None
            assert again.to_json() == loaded.to_json()
            found = await storage.list_summaries(search="backslash")
            assert [s.conversation_id for s in found] == ["c"]

    run(main())


def test_sqlite_indexes_a_saves_search_texts_in_one_flush(tmp_path: Path) -> None:
    """FTS5 flushes its pending terms to a new index segment at each statement
    savepoint, and every statement firing the index trigger opens one: texts
    written row by row (``executemany``) cost a segment write each, 4-5 times the
    work. A save, and each batch of save_many, writes its texts in one statement:
    the index's segment writes do not grow with the number of texts."""

    async def main() -> None:
        async with open_storage(f"sqlite:///{tmp_path / 's.db'}") as storage:
            statements: list[str] = []
            conn = storage.records._conn()
            await conn.set_trace_callback(statements.append)

            def segment_writes() -> int:
                found = sum("'conversations_fts_data'" in s for s in statements)
                statements.clear()
                return found

            many = [_branchy(f"m{i}", ["a", "b", "c", "d"]) for i in range(300)]
            assert await storage.save_many(many) == 300  # 1,200 texts
            assert 0 < segment_writes() <= 20
            big = ConversationState("big")
            for i in range(200):
                big.add_message("user", f"message {i}")
            await storage.save_conversation(big)
            assert 0 < segment_writes() <= 10
            big.prune(big.get_path()[100].node_id)  # message 99 (the root first)
            for i in range(100):
                big.add_message("user", f"after the prune {i}")
            await storage.save_conversation(big)
            assert 0 < segment_writes() <= 10
            await conn.set_trace_callback(None)
            assert await storage.count_conversations(search="message 98") == 1
            assert await storage.count_conversations(search="message 99") == 0
            assert await storage.count_conversations(search="after the prune 99") == 1
            assert await storage.count_conversations(search="regenerated") == 300

    run(main())


def test_an_append_and_save_is_one_postgres_statement(url_of: Callable[[str], str]) -> None:
    """One round trip: the conditional head write and every other write of the save are
    one statement (its CTEs), and releasing the connection sends nothing."""
    url = url_of("postgres")

    async def main() -> None:
        async with open_storage(url) as storage, open_storage(url) as theirs:
            state = ConversationState("c")
            state.add_message("user", "hi")
            await storage.save_conversation(state)
            sent: list[str] = []
            connections = [h._con for h in storage.records._pool()._holders if h._con]
            for conn in connections:
                conn.add_query_logger(lambda q: sent.append(q.query))
            for i in range(20):
                state.add_message("user", f"turn {i}")
                sent.clear()
                await storage.save_conversation(state)
                assert len(sent) == 1, sent
                assert sent[0].startswith("WITH h AS (UPDATE"), sent
            other = await theirs.load_conversation("c")
            assert other is not None
            other.add_message("assistant", "theirs")
            await theirs.save_conversation(other)
            state.add_message("user", "refused, then rebased")
            await storage.save_conversation(state)  # refused (wrote nothing), then rebased
            loaded = await theirs.load_conversation("c")
            assert loaded is not None
            # Both appends are kept: theirs and mine answer "turn 19", as two branches.
            assert [m.content for m in loaded.get_current_messages()][-2:] == [
                "turn 19",
                "refused, then rebased",
            ]
            assert len(loaded.children(loaded.get_path()[-2])) == 2
            assert await theirs.count_conversations(search="refused, then") == 1
            assert await theirs.count_conversations(search="theirs") == 1
            assert await theirs.count_conversations(search="turn 19") == 1

    run(main())


def test_postgres_plans_a_kind_of_save_once(url_of: Callable[[str], str]) -> None:
    """An append's statement holds only the writes an append makes (no delete steered
    by a parameter), so the server reuses one generic plan for it once PostgreSQL's plan
    cache has made five custom ones. One statement for every kind of save was planned
    again at every save on a store with many texts (its generic plan, which must allow
    deleting every text of the conversation, looked too costly): 0.16 ms of the save."""
    url = url_of("postgres")

    async def main() -> None:
        async with open_storage(url) as storage:
            state = ConversationState("plans")
            for i in range(3000):
                state.add_message("user", f"message {i}")
            await storage.save_conversation(state)
            pool = storage.records._pool()
            await pool.execute(f"ANALYZE {storage.records.dialect.text_table}")
            for i in range(40):
                state.add_message("user", f"turn {i}")
                await storage.save_conversation(state)
            plans: dict[str, list[int]] = {}
            for holder in pool._holders:
                if holder._con is None:
                    continue
                for sql, generic, custom in await holder._con.fetch(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                ):
                    if sql.startswith("WITH h AS (UPDATE"):
                        counts = plans.setdefault(sql, [0, 0])
                        counts[0] += generic
                        counts[1] += custom
            # The plain appends' statement (merges, every 8th save, have their own).
            generic, custom = max(plans.values(), key=sum)
            assert generic + custom >= 30, plans
            assert generic > custom, plans

    run(main())


def test_sqlite_commits_are_durable_unless_the_url_says_normal(tmp_path: Path) -> None:
    from convtree import StorageError

    async def setting(url: str) -> int:
        async with open_storage(url) as storage:
            rows = await storage.records._fetch("PRAGMA synchronous", [])
            return int(rows[0][0])

    async def main() -> None:
        assert await setting(f"sqlite:///{tmp_path / 'a.db'}") == 2  # FULL
        assert await setting(f"sqlite:///{tmp_path / 'b.db'}?synchronous=normal") == 1
        assert await setting(f"sqlite:///{tmp_path / 'c.db'}?synchronous=FULL") == 2
        with pytest.raises(StorageError, match=r"synchronous .* must be full or normal"):
            await setting(f"sqlite:///{tmp_path / 'd.db'}?synchronous=off")
        assert not (tmp_path / "d.db").exists()

    run(main())


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres", "s3", "file"])
def test_a_conversation_deleted_and_saved_again_elsewhere_is_a_conflict(
    backend: str, url_of: Callable[[str], str]
) -> None:
    """Another writer deletes the conversation and saves a new one under its id, to the
    same revision number: this storage's next save must not write on top of it."""
    from convtree import ConflictError

    url = url_of(backend)

    async def main() -> None:
        async with open_storage(url) as mine, open_storage(url) as theirs:
            if backend == "memory":
                theirs = mine  # one process: the same store, a second state
            state = ConversationState("c")
            state.add_message("user", "mine")
            await mine.save_conversation(state)
            await theirs.delete_conversation("c")
            other = ConversationState("c")
            other.add_message("user", "theirs")
            await theirs.save_conversation(other)  # revision 1 again
            state.add_message("assistant", "appended")
            with pytest.raises(ConflictError, match="deleted"):
                await mine.save_conversation(state)
            stored = await theirs.load_conversation("c")
            assert stored is not None
            assert [m.content for m in stored.get_current_messages()] == ["theirs"]

    run(main())


# ---------------------------------------------------------------- path loads


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_path_is_the_loaded_conversations_path(
    backend: str, url_of: Callable[[str], str]
) -> None:
    from convtree import NodeNotFoundError

    async def main() -> None:
        async with open_storage(url_of(backend)) as storage:
            state = _branchy("p", ["a", "b", "c", "d"])
            node = state.get_path()[2]
            node.branch_name, node.prompt_name = "main", "greet"
            node.metadata["model"] = "m"
            await storage.save_conversation(state)
            for i in range(30):  # several segments, merged along the way
                state.add_message("user" if i % 2 else "assistant", f"turn {i}")
                await storage.save_conversation(state)
            state.add_alternative("assistant", "regenerated at the end")
            await storage.save_conversation(state)
            loaded = await storage.load_conversation("p")
            assert loaded is not None
            for ref in (None, state.get_path()[3].node_id, state.root.node_id):
                path = await storage.load_path("p", ref)
                assert path is not None
                expected = loaded.get_path(ref)
                assert [n.node_id for n in path] == [n.node_id for n in expected]
                assert [n.message for n in path] == [n.message for n in expected]
                assert [n.metadata for n in path] == [n.metadata for n in expected]
                assert [(n.timestamp, n.branch_name, n.prompt_name, n.extra) for n in path] == [
                    (n.timestamp, n.branch_name, n.prompt_name, n.extra) for n in expected
                ]
            assert await storage.load_path("absent") is None
            with pytest.raises(NodeNotFoundError, match="nope"):
                await storage.load_path("p", "nope")

    run(main())


# ---------------------------------------------------------------- bulk saves


@pytest.mark.parametrize("backend", BACKENDS)
def test_save_many_saves_new_and_stored_conversations(
    backend: str, url_of: Callable[[str], str]
) -> None:
    from convtree import ConflictError

    async def main() -> None:
        async with open_storage(url_of(backend)) as storage:
            old = _branchy("old", ["a", "b", "c", "d"])
            await storage.save_conversation(old)
            old.add_message("user", "appended in the batch")
            states = [old] + [_branchy(f"n{i:03d}", ["x", f"w{i}", "y", "z"]) for i in range(300)]
            assert await storage.save_many(states) == 301
            assert await storage.count_conversations() == 301
            for state in (old, states[1], states[-1]):
                assert await storage.load_conversation(state.conversation_id) == state
                assert state.saved_revision is not None
            assert [r.conversation_id for r in await storage.list_summaries(search="w299")] == [
                "n299"
            ]
            states[5].add_message("user", "then saved alone")  # saved states save on
            await storage.save_conversation(states[5])
            stranger = _branchy("n007", ["other", "other", "other", "other"])
            with pytest.raises(ConflictError):
                await storage.save_many([stranger])
            assert await storage.save_many([stranger], overwrite=True) == 1
            assert await storage.load_conversation("n007") == stranger

    run(main())


def test_postgres_reads_a_conversations_segments_in_one_statement_exactly(
    url_of: Callable[[str], str],
) -> None:
    """``read_many`` takes each segment's payload text out of its JSONB on the server:
    one statement for every segment, the same text a read of the whole record gives
    (escapes, NUL, lone surrogates, NaN, big ints), and other rows come back whole."""
    url = url_of("postgres")

    async def main() -> None:
        async with open_storage(url) as storage:
            state = ConversationState("c", metadata={"user_id": "u"})
            for text in ['q"uote \\ back', "nul \x00 here", "lone \ud800", "é\n\t"]:
                node = state.add_message("user", text)
            node.metadata = {"nan": float("nan"), "big": 10**30, "neg0": -0.0}
            await storage.save_conversation(state)
            state.add_message("assistant", "a second segment")
            await storage.save_conversation(state)
            records = storage.records
            head = await records.read(record_id("c"))
            keys = [entry["id"] for entry in json.loads(head["head"])["storage"]["segments"]]
            assert len(keys) >= 2
            sent: list[str] = []
            for holder in records._pool()._holders:
                if holder._con:
                    holder._con.add_query_logger(lambda q: sent.append(q.query))
            got = await records.read_many([*keys, record_id("c"), "c~missing"])
            assert len(sent) == 1, sent
            for key, record in zip(keys, got, strict=False):
                whole = await records.read(key)
                assert record == {"kind": "segment", "payload": whole["payload"]}
            assert got[len(keys)] == head
            assert got[-1] is None
            loaded = await storage.load_conversation("c")
            assert loaded is not None
            assert json.dumps(loaded.to_dict()) == json.dumps(state.to_dict())  # NaN: as text

    run(main())
