"""The segment payload layout: plain nodes as columns, other nodes as records, and the
payloads written before (layout 1, an object per node) read, merged and searched.

``store_url`` (tests/conftest.py) is parametrized over the five backends.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from convtree import ConversationState, open_storage
from convtree.errors import DamagedRecordError
from convtree.storage.layout import SEGMENT_LAYOUT, Segment, record_id


def _mixed() -> ConversationState:
    """Plain nodes (a text message, no metadata) and every kind of node that is not."""
    state = ConversationState("mixed", metadata={"user_id": "u"})
    state.add_message("system", "be brief")
    state.add_message("user", "what is 2+2? caf\u00e9 \x00 \ud800")
    rated = state.add_message("assistant", "4")
    rated.metadata = {"rating": 5, "usage": {"prompt_tokens": 9}}
    state.add_message(
        "assistant",
        None,
        tool_calls=[{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    )
    state.add_message("tool", "42", tool_call_id="t1", name="f")
    state.add_message("user", [{"type": "text", "text": "parts"}])
    branch = state.add_alternative("assistant", "another answer", branch_name="b")
    branch.metadata = {}
    state.add_message("user", "back on the plain road")
    return state


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _segment_keys(storage: Any, cid: str) -> list[str]:
    head = await storage.records.read(record_id(cid))
    return [entry["id"] for entry in json.loads(head["head"])["storage"]["segments"]]


def test_plain_nodes_are_columns_and_the_others_records(store_url: str) -> None:
    state = _mixed()

    async def main() -> None:
        async with open_storage(store_url) as storage:
            await storage.save_conversation(state)
            (key,) = await _segment_keys(storage, "mixed")
            payload = json.loads((await storage.records.read(key))["payload"])
            assert payload["layout"] == SEGMENT_LAYOUT
            records = dict(zip(payload["ids"], payload["records"], strict=True))
            nodes = {n.node_id: n for n in state.nodes()}
            plain = {i for i, r in records.items() if r is None}
            expected = {
                i
                for i, n in nodes.items()
                if not n.metadata
                and n.branch_name is None
                and (n.message is None or set(n.message.to_dict()) == {"role", "content"})
                and (n.message is None or isinstance(n.message.content, str))
            }
            assert plain == expected
            assert 3 <= len(plain) < len(nodes)
            for i, record in records.items():
                if record is not None:
                    assert record == nodes[i].to_dict()
            loaded = await storage.load_conversation("mixed")
            assert loaded is not None
            assert loaded.to_json() == state.to_json()
            path = await storage.load_path("mixed")
            assert [n.to_dict() for n in path or []] == [n.to_dict() for n in state.get_path()]

    _run(main())


def _layout_1(payload: dict[str, Any]) -> dict[str, Any]:
    """What convtree wrote before layout 2: ``{"nodes": [records], "edges", "removed"}``."""
    segment = Segment(
        payload["ids"],
        payload["stamps"],
        payload["roles"],
        payload["contents"],
        payload["records"],
        payload["edges"],
        payload["removed"],
    )
    return {"nodes": segment.node_records(), "edges": segment.edges, "removed": segment.removed}


def test_segments_of_layout_1_load_merge_and_search(store_url: str) -> None:
    state = _mixed()
    for i in range(5):
        state.add_message("assistant" if i % 2 else "user", f"turn {i}")

    async def main() -> None:
        async with open_storage(store_url) as storage:
            await storage.save_conversation(state)
            state.add_message("assistant", "one more, in a segment of its own")
            await storage.save_conversation(state)
            keys = await _segment_keys(storage, "mixed")
            assert len(keys) == 2
            for key in keys:
                record = await storage.records.read(key)
                old = _layout_1(json.loads(record["payload"]))
                await storage.records.write(key, {"kind": "segment", "payload": json.dumps(old)})
                assert "nodes" in json.loads((await storage.records.read(key))["payload"])
            loaded = await storage.load_conversation("mixed")
            assert loaded is not None
            assert loaded.to_json() == state.to_json()
            path = await storage.load_path("mixed")
            assert [n.to_dict() for n in path or []] == [n.to_dict() for n in state.get_path()]
            found = await storage.list_summaries(search="plain road")
            assert [s.conversation_id for s in found] == ["mixed"]
            for i in range(9):  # merges read the layout-1 segments and write layout 2
                loaded.add_message("user", f"more {i}")
                await storage.save_conversation(loaded)
            now = await _segment_keys(storage, "mixed")
            assert set(keys) - set(now)  # merged (the oldest, a tier above, may stay)
            for key in set(now) - set(keys):
                payload = json.loads((await storage.records.read(key))["payload"])
                assert payload["layout"] == SEGMENT_LAYOUT
            again = await storage.load_conversation("mixed")
            assert again is not None
            assert again.to_json() == loaded.to_json()

    _run(main())


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda p: p.update(layout=3), "payload layout is 3"),
        (lambda p: p["ids"].__setitem__(1, p["ids"][0]), "twice"),
        (lambda p: p["roles"].__setitem__(1, ""), "not a text message"),
        (lambda p: p["contents"].__setitem__(1, 7), "not a text message"),
        (lambda p: p["stamps"].__setitem__(1, 1700000000), "not an integer"),
        (lambda p: p["stamps"].__setitem__(1, "2025-01-01T00:00:00"), "timestamp"),
        (lambda p: p["records"].__setitem__(1, ["x"]), "records[1] is an array"),
    ],
)
def test_a_damaged_column_is_named(edit: Any, says: str, tmp_path: Any) -> None:
    """Each check of a layout-2 payload refuses a damaged value with a clear error, on a
    full load and on a path load (which checks only the path's nodes)."""
    state = ConversationState("c")
    state.add_message("system", "s")
    state.add_message("user", "u")
    state.add_message("assistant", "a")

    async def main() -> None:
        async with open_storage(f"sqlite:///{tmp_path / 's.db'}") as storage:
            await storage.save_conversation(state)
            (key,) = await _segment_keys(storage, "c")
            payload = json.loads((await storage.records.read(key))["payload"])
            edit(payload)
            await storage.records.write(key, {"kind": "segment", "payload": json.dumps(payload)})
            for load in (storage.load_conversation, storage.load_path):
                with pytest.raises(DamagedRecordError) as err:
                    await load("c")
                assert says in str(err.value), str(err.value)
                assert key in str(err.value)

    _run(main())
