"""The SQL of listings, counts and search, for SQLite and PostgreSQL.

One `Dialect` per database turns a `HeadQuery` into
SQL over the head rows of dataknobs-data's table (``id``, ``data``), using only
expressions that convtree indexes (`Dialect.indexes`) and that mean
exactly what the Python filter means. What the SQL cannot say exactly is not
pushed (`Dialect.pushable` answers ``False``) and the caller checks it.

Head rows are the rows whose id has no ``~`` (segments) and no ``/``
(quarantined rows). Every expression below is written once here, because an
index serves a query only if the query repeats its expression exactly.

Sort values are the head record's UTC ISO 8601 text (``created_at``,
``updated_at``), which sorts as the times do; ties and ``conversation_id``
order use the storage key, compared bytewise (``COLLATE "C"`` on PostgreSQL,
SQLite's default ``BINARY``): the same order as Python's ``str`` comparison.

Search: every message of every branch has a row ``(conv, node, body)`` in a
side table (``<table>_text``), kept in the save's transaction; ``body`` is the
message text case-folded by Python (`fold_text`), so matching is an exact,
case-sensitive substring test on both databases: FTS5 with the trigram
tokenizer on SQLite, ``LIKE`` served by a ``pg_trgm`` GIN index on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..filters import Condition
from ..query import HeadQuery, TextChanges, utc_text
from ..records import CommitItem

__all__ = ["Dialect", "PostgresDialect", "SQLiteDialect", "Statement", "created_name"]


@dataclass(frozen=True)
class Statement:
    """SQL text and its parameters."""

    sql: str
    params: list[Any]


def created_name(ddl: str) -> str:
    """The name of what ``CREATE ... IF NOT EXISTS <name>`` creates (no schema)."""
    words = ddl.split("IF NOT EXISTS ", 1)[1].split()
    return words[0].rsplit(".", 1)[-1]


def batch_rows(
    items: Sequence[CommitItem], encode: Callable[[Any], str] = json.dumps
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """The rows of a batch of new conversations (``commit_new``): ``(id, data)`` for
    every segment then every head (``data`` by ``encode``), and ``(conv, node, body)``
    for every search text."""
    records = [(k, encode(r)) for item in items for k, r in item.segments.items()]
    records += [(item.key, encode(item.head)) for item in items]
    texts = [
        (item.key, node, body)
        for item in items
        if item.texts is not None
        for node, body in item.texts.texts.items()
    ]
    return records, texts


def _array(values: Sequence[Any]) -> str:
    """A JSON array of texts for SQLite's ``json_each`` (UTF-8 as is; texts hold no NUL
    and no lone surrogate: `fold_text` replaced them)."""
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


def _identifier_path(condition: Condition) -> bool:
    from ..filters import _IDENT

    return all(_IDENT.fullmatch(part) for part in condition.path)


def _plain_text(value: object) -> bool:
    """A string any backend stores and compares exactly (no NUL, no lone surrogate)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Dialect:
    """What differs between SQLite and PostgreSQL; the query shape is shared."""

    table: str
    text_table: str

    def __init__(self, table: str) -> None:
        self.table = table
        self.text_table = f"{table}_text"

    # -- per dialect -------------------------------------------------------------------
    head: str  # the WHERE terms that select head rows
    key: str  # the id, for ordering
    data: str  # the data column as text or bytes, for decoding

    def param(self, params: list[Any], value: Any) -> str:
        """Add a parameter; its placeholder."""
        raise NotImplementedError

    def stamp(self, field: str) -> str:
        """The sort expression of ``created_at`` / ``updated_at``."""
        raise NotImplementedError

    def condition(self, condition: Condition, params: list[Any]) -> str:
        """The SQL of a pushable condition."""
        raise NotImplementedError

    def search(self, term: str, params: list[Any]) -> str:
        """The SQL selecting heads with a message holding ``term`` (already folded)."""
        raise NotImplementedError

    def pushable(self, condition: Condition) -> bool:
        """Whether `condition()` means exactly what ``condition.matches`` means."""
        if not _identifier_path(condition):
            return False
        op, value = condition.op, condition.value
        if op == "$exists":
            return True
        if op in ("$eq", "$ne"):
            return _plain_text(value) or isinstance(value, bool)
        if op in ("$in", "$nin"):
            return all(_plain_text(v) for v in value)
        if op == "$contains":
            return _plain_text(value)
        return False

    # -- shared ------------------------------------------------------------------------
    def sort(self, order: str) -> str:
        return self.key if order == "conversation_id" else self.stamp(order)

    def where(self, query: HeadQuery, params: list[Any], *, keyset: bool) -> list[str]:
        sort = self.sort(query.order)
        terms = [self.head]
        if query.order != "conversation_id":
            terms.append(f"{sort} IS NOT NULL")
        for condition in query.conditions:
            terms.append(self.condition(condition, params))
        for field, side, bound in query.bounds:
            op = ">" if side == "after" else "<"
            terms.append(f"{self.stamp(field)} {op} {self.param(params, utc_text(bound))}")
        if query.search is not None:
            terms.append(self.search(query.search, params))
        if keyset and query.after is not None:
            op = "<" if query.descending else ">"
            value, key = query.after
            if query.order == "conversation_id":
                terms.append(f"{self.key} {op} {self.param(params, key)}")
            else:
                terms.append(self.keyset(sort, op, value, key, params))
        return terms

    def keyset(self, sort: str, op: str, value: str, key: str, params: list[Any]) -> str:
        """Rows after ``(value, key)`` in ``(sort, key)`` order (``op``: ``<`` or ``>``)."""
        return f"({sort}, {self.key}) {op} ({self.param(params, value)}, {self.param(params, key)})"

    def select(self, query: HeadQuery) -> Statement:
        """The page of heads: ``id``, sort text, data; in order."""
        params: list[Any] = []
        sort = self.sort(query.order)
        terms = self.where(query, params, keyset=True)
        direction = "DESC" if query.descending else "ASC"
        order = (
            f"{self.key} {direction}"
            if query.order == "conversation_id"
            else f"{sort} {direction}, {self.key} {direction}"
        )
        sql = (
            f"SELECT id, {sort}, {self.data} FROM {self.table} WHERE "
            + " AND ".join(terms)
            + f" ORDER BY {order}"
        )
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        if query.offset:
            if query.limit is None:
                sql += " LIMIT -1" if isinstance(self, SQLiteDialect) else " LIMIT ALL"
            sql += f" OFFSET {int(query.offset)}"
        return Statement(sql, params)

    def count(self, query: HeadQuery) -> Statement:
        params: list[Any] = []
        terms = self.where(query, params, keyset=False)
        return Statement(f"SELECT count(*) FROM {self.table} WHERE " + " AND ".join(terms), params)

    def indexes(self) -> list[str]:
        """The DDL of the indexes (and search tables) convtree keeps, idempotent."""
        raise NotImplementedError

    def text_sql(self) -> tuple[str, str, str]:
        """Search-table statements: delete a conversation's texts (conv), delete one
        node's (conv, node), upsert one node's (conv, node, body)."""
        t = self.text_table
        p: list[Any] = []
        one, two, three = self.param(p, 0), self.param(p, 0), self.param(p, 0)
        return (
            f"DELETE FROM {t} WHERE conv = {one}",
            f"DELETE FROM {t} WHERE conv = {one} AND node = {two}",
            f"INSERT INTO {t} (conv, node, body) VALUES ({one}, {two}, {three}) "
            "ON CONFLICT (conv, node) DO UPDATE SET body = EXCLUDED.body",
        )

    def text_writes(self, key: str, texts: TextChanges) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """One save's search-table changes: each statement with its rows (``executemany``)."""
        everything, one, upsert = self.text_sql()
        out: list[tuple[str, list[tuple[Any, ...]]]] = []
        if texts.full:
            out.append((everything, [(key,)]))
        if texts.removed:
            out.append((one, [(key, node) for node in texts.removed]))
        if texts.texts:
            out.append((upsert, [(key, node, body) for node, body in texts.texts.items()]))
        return out

    def state_sql(self) -> tuple[str, str]:
        """Read and write a row of the store's ``<table>_convtree`` table (name[, value])."""
        t = f"{self.table}_convtree"
        p: list[Any] = []
        one, two = self.param(p, 0), self.param(p, 0)
        return (
            f"SELECT value FROM {t} WHERE name = {one}",
            f"INSERT INTO {t} (name, value) VALUES ({one}, {two}) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        )


class SQLiteDialect(Dialect):
    """SQLite: ``data`` is JSON text, which may be damaged: every JSON function is guarded
    by ``json_valid`` (a damaged row must not fail a query, nor an index build)."""

    head = "instr(id, '~') = 0 AND instr(id, '/') = 0"
    key = "id"
    data = "CAST(data AS BLOB)"

    def param(self, params: list[Any], value: Any) -> str:
        params.append(value)
        return "?"

    def stamp(self, field: str) -> str:
        return f"(CASE WHEN json_valid(data) THEN json_extract(data, '$.{field}') END)"

    def keyset(self, sort: str, op: str, value: str, key: str, params: list[Any]) -> str:
        # SQLite walks an expression index by range only for a plain comparison of the
        # expression; the row value (sort, id) < (?, ?) would scan from the start.
        v, v2, k = (self.param(params, x) for x in (value, value, key))
        return f"{sort} {op}= {v} AND ({sort} {op} {v2} OR id {op} {k})"

    def _text(self, path: str) -> str:
        return (
            f"(CASE WHEN json_valid(data) AND json_type(data, '{path}') = 'text' "
            f"THEN json_extract(data, '{path}') END)"
        )

    def _type(self, path: str) -> str:
        return f"(CASE WHEN json_valid(data) THEN json_type(data, '{path}') END)"

    def condition(self, condition: Condition, params: list[Any]) -> str:
        path = "$.meta." + ".".join(condition.path)  # identifiers only: safe to inline
        op, value = condition.op, condition.value
        if op == "$exists":
            return f"({self._type(path)} IS {'NOT ' if value else ''}NULL)"
        if op in ("$eq", "$ne"):
            if isinstance(value, bool):
                test = f"{self._type(path)} = '{'true' if value else 'false'}'"
            else:
                test = f"{self._text(path)} = {self.param(params, value)}"
            return test if op == "$eq" else f"NOT COALESCE({test}, 0)"
        if op in ("$in", "$nin"):
            if not value:
                return "0" if op == "$in" else "1"
            marks = ", ".join(self.param(params, v) for v in value)
            test = f"{self._text(path)} IN ({marks})"
            return test if op == "$in" else f"NOT COALESCE({test}, 0)"
        assert op == "$contains"
        return (
            f"(CASE WHEN json_valid(data) AND json_type(data, '{path}') = 'array' THEN "
            f"EXISTS (SELECT 1 FROM json_each(data, '{path}') AS e "
            f"WHERE e.type = 'text' AND e.value = {self.param(params, value)}) ELSE 0 END)"
        )

    def search(self, term: str, params: list[Any]) -> str:
        if len(term) >= 3:
            phrase = '"' + term.replace('"', '""') + '"'
            return (
                f"id IN (SELECT x.conv FROM {self.text_table} AS x WHERE x.id IN "
                f"(SELECT rowid FROM {self.table}_fts WHERE {self.table}_fts MATCH "
                f"{self.param(params, phrase)}) AND instr(x.body, {self.param(params, term)}) > 0)"
            )
        # Shorter than a trigram: the index cannot help; scan the texts.
        return (
            f"id IN (SELECT conv FROM {self.text_table} "
            f"WHERE instr(body, {self.param(params, term)}) > 0)"
        )

    # FTS5 flushes what it has pending at every statement savepoint, and a statement
    # that fires a trigger opens one: written row by row (``executemany``), each text
    # became its own index segment, 4-5 times the work. So a save's texts go in one
    # statement, their rows a JSON array unpacked by ``json_each``.
    def text_writes(self, key: str, texts: TextChanges) -> list[tuple[str, list[tuple[Any, ...]]]]:
        t = self.text_table
        out: list[tuple[str, list[tuple[Any, ...]]]] = []
        if texts.full:
            out.append((self.text_sql()[0], [(key,)]))
        if texts.removed:
            out.append(
                (
                    f"DELETE FROM {t} WHERE conv = ? AND node IN (SELECT value FROM json_each(?))",
                    [(key, _array(texts.removed))],
                )
            )
        if texts.texts:
            rows = [[key, node, body] for node, body in texts.texts.items()]
            out.append(self.insert_texts(rows))
        return out

    def insert_texts(self, rows: Sequence[Sequence[str]]) -> tuple[str, list[tuple[Any, ...]]]:
        """One statement upserting search texts ``(conv, node, body)``, with its parameters."""
        return (
            f"INSERT INTO {self.text_table} (conv, node, body) SELECT json_extract(value, '$[0]'), "
            "json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(?) "
            "WHERE 1 ON CONFLICT (conv, node) DO UPDATE SET body = excluded.body",
            [(_array(rows),)],
        )

    def indexes(self) -> list[str]:
        t, head = self.table, self.head
        user = self._text("$.meta.user_id")
        return [
            f"CREATE INDEX IF NOT EXISTS {t}_ct_updated ON {t} "
            f"({self.stamp('updated_at')}, id) WHERE {head}",
            f"CREATE INDEX IF NOT EXISTS {t}_ct_created ON {t} "
            f"({self.stamp('created_at')}, id) WHERE {head}",
            f"CREATE INDEX IF NOT EXISTS {t}_ct_user ON {t} "
            f"({user}, {self.stamp('updated_at')}, id) WHERE {head}",
            f"CREATE TABLE IF NOT EXISTS {t}_text (id INTEGER PRIMARY KEY, conv TEXT NOT NULL, "
            "node TEXT NOT NULL, body TEXT NOT NULL, UNIQUE (conv, node))",
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {t}_fts USING fts5(body, content='{t}_text', "
            "content_rowid='id', tokenize='trigram case_sensitive 1')",
            f"CREATE TRIGGER IF NOT EXISTS {t}_text_ai AFTER INSERT ON {t}_text BEGIN "
            f"INSERT INTO {t}_fts (rowid, body) VALUES (new.id, new.body); END",
            f"CREATE TRIGGER IF NOT EXISTS {t}_text_ad AFTER DELETE ON {t}_text BEGIN "
            f"INSERT INTO {t}_fts ({t}_fts, rowid, body) VALUES ('delete', old.id, old.body); END",
            f"CREATE TRIGGER IF NOT EXISTS {t}_text_au AFTER UPDATE ON {t}_text BEGIN "
            f"INSERT INTO {t}_fts ({t}_fts, rowid, body) VALUES ('delete', old.id, old.body); "
            f"INSERT INTO {t}_fts (rowid, body) VALUES (new.id, new.body); END",
            f"CREATE TABLE IF NOT EXISTS {t}_convtree (name TEXT PRIMARY KEY, value TEXT)",
        ]


class PostgresDialect(Dialect):
    """PostgreSQL: ``data`` is JSONB (always valid JSON); text compares with ``COLLATE "C"``."""

    head = "strpos(id, '~') = 0 AND strpos(id, '/') = 0"
    key = 'id COLLATE "C"'
    data = "data::text"

    def __init__(self, table: str, *, trigram: bool = True) -> None:
        super().__init__(table)
        self.trigram = trigram

    def param(self, params: list[Any], value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    def stamp(self, field: str) -> str:
        return f"((data ->> '{field}') COLLATE \"C\")"

    @staticmethod
    def user() -> str:
        return (
            "(CASE WHEN jsonb_typeof(data -> 'meta' -> 'user_id') = 'string' "
            "THEN data -> 'meta' ->> 'user_id' END)"
        )

    @staticmethod
    def _nested(path: tuple[str, ...], value: Any) -> str:
        for part in reversed(path):
            value = {part: value}
        return json.dumps(value)

    def condition(self, condition: Condition, params: list[Any]) -> str:
        op, value, path = condition.op, condition.value, condition.path
        meta = "(data -> 'meta')"
        if op == "$exists":
            p = self.param(params, list(path))
            return f"({meta} #> {p}::text[] IS {'NOT ' if value else ''}NULL)"
        if op in ("$eq", "$ne"):
            if op == "$eq" and path == ("user_id",) and isinstance(value, str):
                return f"{self.user()} = {self.param(params, value)}"  # the btree index
            test = f"{meta} @> {self.param(params, self._nested(path, value))}::jsonb"
            return test if op == "$eq" else f"NOT COALESCE({test}, false)"
        if op in ("$in", "$nin"):
            docs = [self._nested(path, v) for v in value]
            test = f"{meta} @> ANY({self.param(params, docs)}::jsonb[])"
            return test if op == "$in" else f"NOT COALESCE({test}, false)"
        assert op == "$contains"
        return f"{meta} @> {self.param(params, self._nested(path, [value]))}::jsonb"

    def search(self, term: str, params: list[Any]) -> str:
        pattern = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # OFFSET 0 keeps the planner from turning this into a probe per head: the
        # matching texts are found first, through the trigram index.
        return (
            f"id IN (SELECT conv FROM {self.text_table} "
            f"WHERE body LIKE {self.param(params, pattern)} OFFSET 0)"
        )

    def indexes(self) -> list[str]:
        t, head = self.table, self.head
        name = t.rsplit(".", 1)[-1]
        out = [
            f"CREATE INDEX IF NOT EXISTS {name}_ct_updated ON {t} "
            f"({self.stamp('updated_at')}, {self.key}) WHERE {head}",
            f"CREATE INDEX IF NOT EXISTS {name}_ct_created ON {t} "
            f"({self.stamp('created_at')}, {self.key}) WHERE {head}",
            f"CREATE INDEX IF NOT EXISTS {name}_ct_user ON {t} "
            f"({self.user()}, {self.stamp('updated_at')}, {self.key}) WHERE {head}",
            f"CREATE INDEX IF NOT EXISTS {name}_ct_key ON {t} ({self.key}) WHERE {head}",
            f"CREATE INDEX IF NOT EXISTS {name}_ct_meta ON {t} "
            f"USING gin ((data -> 'meta') jsonb_path_ops) WHERE {head}",
            f"CREATE TABLE IF NOT EXISTS {t}_text (conv text NOT NULL, node text NOT NULL, "
            'body text COLLATE "C" NOT NULL, PRIMARY KEY (conv, node))',
            f"CREATE TABLE IF NOT EXISTS {t}_convtree (name text PRIMARY KEY, value text)",
        ]
        if self.trigram:
            out.append(
                f"CREATE INDEX IF NOT EXISTS {name}_text_trgm ON {t}_text "
                "USING gin (body gin_trgm_ops)"
            )
        return out
