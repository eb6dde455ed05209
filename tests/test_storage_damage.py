"""Damaged records never take the store down, on every persistent backend.

Records are damaged through each backend's own medium (file bytes, an SQL UPDATE, an S3
PUT, the memory store's dict), in many ways: truncated or garbled bytes, text that is
not UTF-8, wrong types or missing fields in the head and in its JSON text, a segment the
head lists that is gone, a segment with wrong types. For every damage:

* listing and counting still work, skip the damaged conversation (a damaged head) and
  name it in a :class:`DamagedRecordWarning` and in ``damaged_conversations()``;
* loading it raises one :class:`DamagedRecordError` naming the conversation, the record
  key and what is wrong;
* deleting it and overwriting it work, and leave nothing of it behind;
* ``check()`` reports it;
* no exception but convtree's escapes.

Run with ``-s`` to see the counts per backend.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from convtree import ConversationState, ConvtreeError, open_storage
from convtree.errors import DamagedRecordError, DamagedRecordWarning
from convtree.storage.layout import record_id
from convtree.storage.query import HeadQuery

from .conftest import fresh_store_url
from .storage_media import Medium

PERSISTENT = ["memory", "file", "sqlite", "postgres", "s3"]


def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store; SQLite by an absolute four-slash URL (valid in every URL convention)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    if backend == "file":
        return f"file://{tmp_path}/store"
    return fresh_store_url(backend, request, tmp_path)


# ------------------------------------------------------------------ damage modes

Damage = Callable[[Medium, str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Mode:
    name: str
    target: str  # "head" or "segment"
    damage: Damage
    raw_bytes: bool = False  # needs a medium that stores bytes


def _bytes(transform: Callable[[bytes], bytes]) -> Damage:
    async def damage(medium: Medium, key: str, fields: dict[str, Any]) -> None:
        await medium.put_raw(key, transform(await medium.raw(key)))

    return damage


def _value(value: Any) -> Damage:
    async def damage(medium: Medium, key: str, fields: dict[str, Any]) -> None:
        await medium.put_value(key, value)

    return damage


def _fields(edit: Callable[[dict[str, Any]], None]) -> Damage:
    async def damage(medium: Medium, key: str, fields: dict[str, Any]) -> None:
        fields = dict(fields)
        edit(fields)
        await medium.put_value(key, fields)

    return damage


def _set(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda fields: fields.__setitem__(name, value)


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda fields: fields.pop(name)


def _text(field: str, edit: Callable[[dict[str, Any]], None]) -> Damage:
    """Edit the JSON text in ``field`` (the head's ``head``, a segment's ``payload``)."""

    def change(fields: dict[str, Any]) -> None:
        doc = json.loads(fields[field])
        edit(doc)
        fields[field] = json.dumps(doc)

    return _fields(change)


def _in(*path: Any, value: Any = None, drop: bool = False) -> Callable[[dict[str, Any]], None]:
    def edit(doc: Any) -> None:
        for part in path[:-1]:
            doc = doc[part]
        if drop:
            del doc[path[-1]]
        else:
            doc[path[-1]] = value

    return edit


def _first_message_role(doc: dict[str, Any]) -> None:
    i = next(i for i, role in enumerate(doc["roles"]) if role is not None)
    doc["roles"][i] = 5


def _same_id_twice(doc: dict[str, Any]) -> None:
    doc["ids"][1] = doc["ids"][0]


def _edges_in_a_loop(doc: dict[str, Any]) -> None:
    """The root's parent made the last node: the parent links from the cursor go round."""
    doc["edges"].append([doc["ids"][-1], doc["ids"][0]])


def _record_role(doc: dict[str, Any]) -> None:
    """Node 1 stored as a record (as a node with metadata is), its role an integer."""
    i = 1
    doc["records"][i] = {
        "node_id": doc["ids"][i],
        "message": {"role": 5, "content": "x"},
        "timestamp": doc["stamps"][i],
        "metadata": {"k": 1},
    }
    doc["stamps"][i] = doc["roles"][i] = doc["contents"][i] = None


def _record_of_another(doc: dict[str, Any]) -> None:
    doc["records"][1] = {"node_id": "someone-else", "message": None, "timestamp": "x"}


def _rows(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """Rewrite a payload in layout 1 (``{"nodes": [records], ...}``), then ``edit`` it."""

    def change(doc: dict[str, Any]) -> None:
        nodes = [
            record
            or {
                "node_id": node_id,
                "message": None if role is None else {"role": role, "content": content},
                "timestamp": stamp,
                "metadata": {},
            }
            for node_id, stamp, role, content, record in zip(
                doc["ids"],
                doc["stamps"],
                doc["roles"],
                doc["contents"],
                doc["records"],
                strict=True,
            )
        ]
        rows = {"nodes": nodes, "edges": doc["edges"], "removed": doc["removed"]}
        doc.clear()
        doc.update(rows)
        edit(doc)

    return change


def _first_row_role(doc: dict[str, Any]) -> None:
    node = next(n for n in doc["nodes"] if n.get("message"))
    node["message"]["role"] = 5


async def _absent(medium: Medium, key: str, fields: dict[str, Any]) -> None:
    await medium.remove(key)


HEAD_MODES = [
    Mode("bytes: truncated", "head", _bytes(lambda b: b[: len(b) // 2]), True),
    Mode("bytes: garbage", "head", _bytes(lambda b: b"\x8f\x00\xfe garbage \x01\xff"), True),
    Mode(
        "bytes: not UTF-8", "head", _bytes(lambda b: b.replace(b'"kind"', b'"k\xffind"', 1)), True
    ),
    Mode("bytes: empty", "head", _bytes(lambda b: b""), True),
    Mode(
        "bytes: not JSON", "head", _bytes(lambda b: b"<html>503 Service Unavailable</html>"), True
    ),
    Mode("value: an array", "head", _value([1, 2, 3])),
    Mode("value: a string", "head", _value("head")),
    Mode("kind: wrong", "head", _fields(_set("kind", 5))),
    Mode("kind: missing", "head", _fields(_drop("kind"))),
    Mode("key: an array", "head", _fields(_set("key", []))),
    Mode("revision: a string", "head", _fields(_set("revision", "2"))),
    Mode("revision: missing", "head", _fields(_drop("revision"))),
    Mode("revision: null", "head", _fields(_set("revision", None))),
    Mode("token: an integer", "head", _fields(_set("token", 5))),
    Mode("token: not convtree's", "head", _fields(_set("token", "not a token"))),
    Mode("created_at: an integer", "head", _fields(_set("created_at", 5))),
    Mode("updated_at: missing", "head", _fields(_drop("updated_at"))),
    Mode("meta: a string", "head", _fields(_set("meta", "x"))),
    Mode("head: an integer", "head", _fields(_set("head", 5))),
    Mode("head: missing", "head", _fields(_drop("head"))),
    Mode("head text: truncated", "head", _fields(lambda f: f.update(head=f["head"][:40]))),
    Mode("head text: not JSON", "head", _fields(_set("head", "garbage{"))),
    Mode("head text: an array", "head", _fields(_set("head", "[]"))),
    Mode("head text: storage missing", "head", _text("head", _in("storage", drop=True))),
    Mode(
        "head text: segments an integer", "head", _text("head", _in("storage", "segments", value=5))
    ),
    Mode(
        "head text: segment entry of wrong types",
        "head",
        _text("head", _in("storage", "segments", 0, value={"id": 5, "size": "x"})),
    ),
    Mode(
        "head text: another revision", "head", _text("head", _in("storage", "revision", value=99))
    ),
    Mode("head text: summary an array", "head", _text("head", _in("summary", value=[]))),
    Mode(
        "head text: a count a string",
        "head",
        _text("head", _in("summary", "node_count", value="3")),
    ),
    Mode("head text: id missing", "head", _text("head", _in("conversation_id", drop=True))),
    Mode("head text: another id", "head", _text("head", _in("conversation_id", value="someone"))),
    Mode("head text: metadata an array", "head", _text("head", _in("metadata", value=[]))),
    Mode(
        "head text: created_at not a date",
        "head",
        _text("head", _in("created_at", value="yesterday")),
    ),
    Mode(
        "head text: updated_at naive",
        "head",
        _text("head", _in("updated_at", value="2025-01-01T00:00:00")),
    ),
]

SEGMENT_MODES = [
    Mode("segment: listed but absent", "segment", _absent),
    Mode("segment bytes: truncated", "segment", _bytes(lambda b: b[: len(b) // 2]), True),
    Mode("segment bytes: garbage", "segment", _bytes(lambda b: b"\xff\xfe\x00\x01"), True),
    Mode(
        "segment bytes: not UTF-8",
        "segment",
        _bytes(lambda b: b.replace(b'"payload"', b'"pay\xc3load"', 1)),
        True,
    ),
    Mode("segment value: a number", "segment", _value(42)),
    Mode("segment kind: missing", "segment", _fields(_drop("kind"))),
    Mode("segment payload: an integer", "segment", _fields(_set("payload", 7))),
    Mode("segment payload: missing", "segment", _fields(_drop("payload"))),
    Mode(  # what the payload text holds, stored as an object instead of as text
        "segment payload: an object",
        "segment",
        _fields(lambda f: f.update(payload=json.loads(f["payload"]))),
    ),
    Mode("segment kind: a head's", "segment", _fields(_set("kind", "head"))),
    Mode(
        "segment payload: truncated",
        "segment",
        _fields(lambda f: f.update(payload=f["payload"][:30])),
    ),
    Mode("segment payload: ids an integer", "segment", _text("payload", _in("ids", value=5))),
    Mode(
        "segment payload: an edge of one id",
        "segment",
        _text("payload", _in("edges", value=[["a"]])),
    ),
    Mode(
        "segment payload: a node id an integer",
        "segment",
        _text("payload", _in("ids", 0, value=12)),
    ),
    Mode("segment payload: a node id twice", "segment", _text("payload", _same_id_twice)),
    Mode(
        "segment payload: a column shorter than the ids",
        "segment",
        _text("payload", _in("stamps", value=[])),
    ),
    Mode(
        "segment payload: removed a string", "segment", _text("payload", _in("removed", value="x"))
    ),
    Mode(
        "segment payload: a message role an integer",
        "segment",
        _text("payload", _first_message_role),
    ),
    Mode(
        "segment payload: a timestamp not a date",
        "segment",
        _text("payload", _in("stamps", 1, value="yesterday")),
    ),
    Mode(
        "segment payload: a record with a role an integer",
        "segment",
        _text("payload", _record_role),
    ),
    Mode(
        "segment payload: a record of another node",
        "segment",
        _text("payload", _record_of_another),
    ),
    Mode("segment payload: edges in a loop", "segment", _text("payload", _edges_in_a_loop)),
    Mode("segment payload: a newer layout", "segment", _text("payload", _in("layout", value=3))),
    # The layout written before (one object per node), damaged: still read, still refused.
    Mode(
        "segment payload (layout 1): nodes an integer",
        "segment",
        _text("payload", _rows(_in("nodes", value=5))),
    ),
    Mode(
        "segment payload (layout 1): a node without id",
        "segment",
        _text("payload", _rows(_in("nodes", 0, "node_id", drop=True))),
    ),
    Mode(
        "segment payload (layout 1): a message role an integer",
        "segment",
        _text("payload", _rows(_first_row_role)),
    ),
]

MODES = HEAD_MODES + SEGMENT_MODES

# What the error must say about a damage whose name holds the key.
SAYS = {"truncated": "truncated", "absent": "missing", "UTF-8": "UTF-8", "empty": "empty"}


def _conversation(cid: str) -> ConversationState:
    state = ConversationState(cid, metadata={"user_id": "alice", "mode": cid})
    state.add_message("system", "sys")
    state.add_message("user", f"question of {cid}")
    return state


@dataclass
class _Findings:
    modes: int = 0
    listing_ok: int = 0
    reported: int = 0
    load_clear: int = 0
    deleted: int = 0
    overwritten: int = 0
    raw: list[str] | None = None
    failures: list[str] | None = None


@pytest.mark.parametrize("backend", PERSISTENT)
def test_damaged_records_never_take_the_store_down(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = store_url(backend, request, tmp_path)
    found = _Findings(raw=[], failures=[])
    assert found.raw is not None
    assert found.failures is not None
    raw, failures = found.raw, found.failures

    async def guarded(what: str, call: Awaitable[Any]) -> Any:
        """The result, or the convtree error; any other exception is a finding."""
        try:
            return await call
        except ConvtreeError as exc:
            return exc
        except Exception as exc:  # counting what escapes is the point
            raw.append(f"{what}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
            return exc

    async def main() -> None:
        async with open_storage(url) as storage:
            medium = await Medium.open(storage, url)
            try:
                await run(storage, medium)
            finally:
                await medium.close()

    async def run(storage: Any, medium: Medium) -> None:
        modes = [m for m in MODES if medium.raw_bytes or not m.raw_bytes]
        found.modes = len(modes)
        healthy = _conversation("healthy")
        await storage.save_conversation(healthy)
        targets: dict[str, str] = {}  # conversation id -> key of the damaged record
        # Stores that list through SQL indexes see a damaged head only if it still has
        # a sort time: they list (skipping it, with a warning) and count those; the
        # others are found by damaged_conversations() and check().
        sortable: set[str] = set()
        for i, mode in enumerate(modes):
            for suffix in ("del", "ovr"):
                cid = f"m{i:02d}-{suffix}"
                state = _conversation(cid)
                await storage.save_conversation(state)
                state.add_message("assistant", f"answer of {cid}")
                await storage.save_conversation(state)
                key = record_id(cid)
                head = await storage.records.read(key)
                if mode.target == "segment":
                    key = json.loads(head["head"])["storage"]["segments"][0]["id"]
                fields = await storage.records.read(key)
                await mode.damage(medium, key, fields)
                targets[cid] = key

        head_damaged = {
            f"m{i:02d}-{s}"
            for i, m in enumerate(modes)
            if m.target == "head"
            for s in ("del", "ovr")
        }
        if storage.records.capabilities.query:
            # The store's SQL sees a damaged head if it still has a sort time (SQLite's
            # JSON functions also read text that is not UTF-8).
            keys = {h.key for h in await storage.records.query_heads(HeadQuery())}
            sortable.update(c for c in head_damaged if record_id(c) in keys)
            assert sortable, "damaged heads that keep their times are listed (and skipped)"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = await guarded("list_summaries", storage.list_summaries(limit=None))
            count = await guarded("count_conversations", storage.count_conversations())
            filtered = await guarded(
                "list_summaries(filter)", storage.list_summaries({"user_id": "alice"}, limit=None)
            )
        with warnings.catch_warnings(record=True) as caught_search:
            warnings.simplefilter("always")
            searched = await guarded(
                "list_summaries(search)", storage.list_summaries(search="QUESTION OF", limit=None)
            )
        damaged = await guarded("damaged_conversations", storage.damaged_conversations())
        report = await guarded("check", storage.check(grace=0))
        warned: set[str] = set()
        for w in caught:
            if isinstance(w.message, DamagedRecordWarning):
                warned.update(w.message.conversation_ids)

        listed = {r.conversation_id for r in rows} if isinstance(rows, list) else set()
        expected_listed = {"healthy"} | (set(targets) - head_damaged)
        if listed != expected_listed or count != len(expected_listed) + len(sortable):
            missing = sorted(expected_listed - listed)[:5]
            extra = sorted(listed - expected_listed)[:5]
            failures.append(
                f"listing: {len(listed)} listed, count {count!r}, expected "
                f"{len(expected_listed)}; missing {missing}, extra {extra}"
            )
        if (
            not isinstance(filtered, list)
            or {r.conversation_id for r in filtered} != expected_listed
        ):
            failures.append(f"filtered listing: {filtered!r:.200}")
        # A search reads the segments where no search index holds the texts: a conversation
        # whose segment cannot be read is skipped and named, the rest of the page is served.
        searched_ids = (
            {r.conversation_id for r in searched} if isinstance(searched, list) else set()
        )
        search_warned = {
            cid
            for w in caught_search
            if isinstance(w.message, DamagedRecordWarning)
            for cid in w.message.conversation_ids
        }
        unaccounted = sorted(expected_listed - searched_ids - search_warned)
        if "healthy" not in searched_ids or unaccounted:
            failures.append(
                f"search listing: {searched!r:.200}; neither found nor named {unaccounted}"
            )
        reported_ids = {d.conversation_id for d in damaged} if isinstance(damaged, list) else set()
        checked_ids = (
            {d.conversation_id for d in report.damaged} if hasattr(report, "damaged") else set()
        )

        for i, mode in enumerate(modes):
            ok = True
            for suffix in ("del", "ovr"):
                cid = f"m{i:02d}-{suffix}"
                key = targets[cid]
                listing_sees = not storage.records.capabilities.query or cid in sortable
                if mode.target == "head" and not (
                    (cid in warned or not listing_sees) and cid in reported_ids
                ):
                    failures.append(f"[{mode.name}] {cid}: not reported by the listing")
                    ok = False
                if cid not in checked_ids:
                    failures.append(f"[{mode.name}] {cid}: not reported by check()")
                    ok = False
                err = await guarded(f"load [{mode.name}]", storage.load_conversation(cid))
                if not (
                    isinstance(err, DamagedRecordError)
                    and err.conversation_id == cid
                    and err.key == key
                    and repr(cid) in str(err)
                    and repr(key) in str(err)
                    and err.problem
                    and all(
                        said in err.problem
                        for word, said in SAYS.items()
                        if word in mode.name and mode.raw_bytes == ("bytes" in mode.name)
                    )
                ):
                    failures.append(f"[{mode.name}] load of {cid}: {type(err).__name__}: {err}")
                    ok = False
                else:
                    found.load_clear += 1
                # The path read checks what it reads (a damaged node off the path may go
                # unseen), and names the same record when it fails.
                err = await guarded(f"load_path [{mode.name}]", storage.load_path(cid))
                if isinstance(err, list) and mode.target == "segment":
                    pass
                elif not (
                    isinstance(err, DamagedRecordError)
                    and (err.conversation_id, err.key) == (cid, key)
                    and err.problem
                ):
                    failures.append(f"[{mode.name}] load_path of {cid}: {err!r}")
                    ok = False
            found.listing_ok += ok
            found.reported += ok

            cid = f"m{i:02d}-del"
            gone = await guarded(f"delete [{mode.name}]", storage.delete_conversation(cid))
            after = await guarded(
                f"load after delete [{mode.name}]", storage.load_conversation(cid)
            )
            left = [k async for k in storage.records.scan_keys(record_id(cid))]
            if gone is True and after is None and not left:
                found.deleted += 1
            else:
                failures.append(f"[{mode.name}] delete: {gone!r}, then {after!r:.80}, left {left}")

            cid = f"m{i:02d}-ovr"
            fresh = _conversation(cid)
            fresh.add_message("assistant", "replaced")
            done = await guarded(
                f"overwrite [{mode.name}]", storage.save_conversation(fresh, overwrite=True)
            )
            back = await guarded(
                f"load after overwrite [{mode.name}]", storage.load_conversation(cid)
            )
            if done is None and back == fresh:
                found.overwritten += 1
            else:
                failures.append(f"[{mode.name}] overwrite: {done!r:.200}, then {back!r:.80}")

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no damage left: no warning
            assert await storage.count_conversations() == 1 + len(modes)
        final = await storage.check(grace=0)
        if not final.clean:
            failures.append(f"after deletes and overwrites, check(): {final.lines()}")

    asyncio.run(main())
    print(
        f"\n[{backend}] {found.modes} damage modes: listing and count kept working and "
        f"reported the damage in {found.reported}, load raised one clear "
        f"DamagedRecordError in {found.load_clear}/{2 * found.modes}, delete worked in "
        f"{found.deleted}, overwrite in {found.overwritten}; raw exceptions: {len(raw)}"
    )
    assert not raw, "\n".join(raw[:20])
    assert not failures, "\n".join(failures[:30])
    assert found.deleted == found.overwritten == found.reported == found.modes


def test_a_damaged_file_whose_name_was_shortened_is_quarantined_not_deleted(
    tmp_path: Path,
) -> None:
    """A long non-ASCII id gets a hashed file name that does not say its key: a damaged
    head of that kind is still reported as damaged, quarantined by repair, never deleted
    as an orphan; deleting its conversation works."""
    from convtree.storage.backends.file import _file_name

    url = f"file://{tmp_path}/store"
    cid = "\u00e9" * 29  # 174 characters as a key, more than 200 as a file name

    async def main() -> None:
        async with open_storage(url) as storage:
            for c in (cid, "short"):
                state = _conversation(c)
                await storage.save_conversation(state)
            head = tmp_path / "store" / _file_name(record_id(cid))
            assert "~" in head.name  # shortened with a hash
            head.write_bytes(b"\x00garbage")
            with pytest.warns(DamagedRecordWarning):
                assert [r.conversation_id for r in await storage.list_summaries()] == ["short"]
            report = await storage.check(grace=0)
            assert (len(report.damaged), report.orphans) == (1, []), report.lines()
            assert report.damaged[0].conversation_id == cid  # known from its segment
            assert "not JSON" in report.damaged[0].problem
            with pytest.raises(DamagedRecordError, match="not JSON"):
                await storage.load_conversation(cid)
            report = await storage.check(repair=True, grace=0)
            assert report.repaired, report.lines()
            aside = sorted(p.name for p in (tmp_path / "store" / "quarantine").iterdir())
            assert len(aside) == 2, aside  # the head and its segment, together
            assert any(name.startswith(head.name) for name in aside)
            assert (await storage.check(grace=0)).clean
            assert await storage.count_conversations() == 1
            # Deleting a conversation with such a file works too.
            state = _conversation(cid)
            await storage.save_conversation(state)
            head.write_bytes(b"")
            assert await storage.delete_conversation(cid)
            assert sorted(p.name for p in (tmp_path / "store").glob("*.json")) == sorted(
                p.name for p in (tmp_path / "store").glob("short*.json")
            )

    asyncio.run(main())


def test_a_head_the_store_reads_otherwise_is_reported_not_retried_forever(
    tmp_path: Path,
) -> None:
    """A head record holding its ``token`` twice: Python's JSON parser keeps the last,
    SQLite's ``json_extract`` the first, so the conditional write of every save was
    refused and the save retried for about a minute (found by a random-damage run, with
    a token holding a NUL, now refused when read). A head still as it was after a refusal
    means no writer came first: the save raises a `DamagedRecordError` naming it, and
    ``overwrite=True`` replaces the conversation."""
    url = f"sqlite:///{tmp_path}/store.db"

    async def main() -> None:
        async with open_storage(url) as storage:
            medium = await Medium.open(storage, url)
            try:
                await storage.save_conversation(_conversation("c"))
                text = (await medium.raw("c")).decode()
                assert text.startswith("{")
                await medium.put_raw("c", ('{"token": "0123456789ab", ' + text[1:]).encode())
                state = await storage.load_conversation("c")  # the last token is read
                assert state is not None
                state.add_message("user", "one more")
                with pytest.raises(DamagedRecordError, match="refuses a write") as caught:
                    await asyncio.wait_for(storage.save_conversation(state), 10)
                assert (caught.value.conversation_id, caught.value.key) == ("c", "c")
                loaded = await storage.load_conversation("c")  # nothing was changed
                assert loaded is not None
                assert len(loaded) == len(state) - 1
                await asyncio.wait_for(storage.save_conversation(state, overwrite=True), 10)
                again = await storage.load_conversation("c")
                assert again is not None
                assert again.to_dict() == state.to_dict()
                again.add_message("assistant", "and it saves again")
                await storage.save_conversation(again)
                assert (await storage.check(grace=0)).clean
            finally:
                await medium.close()

    asyncio.run(main())
