"""MetadataFilter on its own: JSON comparison edge cases, validation, pushdown safety."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from convtree import ConversationState, FilterError, open_storage
from convtree.storage.filters import MetadataFilter, check_page, json_equal
from tests.conftest import BACKENDS

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def selects(flt: dict[str, Any], metadata: dict[str, Any]) -> bool:
    return MetadataFilter(flt).matches(metadata, T0, T0)


@pytest.mark.parametrize(
    ("flt", "metadata", "expected"),
    [
        # bool and numbers never mix, ints and floats do
        ({"n": 1}, {"n": True}, False),
        ({"n": True}, {"n": 1}, False),
        ({"n": 0}, {"n": False}, False),
        ({"n": 1}, {"n": 1.0}, True),
        ({"n": 2**70}, {"n": float(2**70)}, True),
        ({"n": {"$in": [1, 2]}}, {"n": True}, False),
        ({"n": {"$nin": [1]}}, {"n": True}, True),
        ({"n": {"$contains": 1}}, {"n": [True, 2]}, False),
        ({"n": {"$contains": True}}, {"n": [1, True]}, True),
        ({"n": {"$gt": 0}}, {"n": True}, False),
        ({"n": {"$lte": 1}}, {"n": False}, False),
        # strings and numbers never mix
        ({"n": "1"}, {"n": 1}, False),
        ({"n": {"$gt": "0"}}, {"n": 5}, False),
        ({"n": {"$gt": 0}}, {"n": "5"}, False),
        ({"n": {"$gte": "b"}}, {"n": "b"}, True),
        ({"n": {"$lt": "b"}}, {"n": "B"}, True),  # code point order, not locale
        ({"n": {"$lt": "é"}}, {"n": "z"}, True),
        # NaN equals nothing, orders with nothing; inf is an ordinary number
        ({"n": math.nan}, {"n": math.nan}, False),
        ({"n": {"$ne": math.nan}}, {"n": math.nan}, True),
        ({"n": {"$in": [math.nan]}}, {"n": math.nan}, False),
        ({"n": {"$gt": 0}}, {"n": math.nan}, False),
        ({"n": {"$lt": 0}}, {"n": math.nan}, False),
        ({"n": {"$gt": 1e308}}, {"n": math.inf}, True),
        ({"n": {"$lt": 0}}, {"n": -math.inf}, True),
        ({"n": math.inf}, {"n": math.inf}, True),
        ({"n": -0.0}, {"n": 0}, True),
        # missing keys: only $ne, $nin and $exists: false match
        ({"n": 1}, {}, False),
        ({"n": None}, {}, False),
        ({"n": None}, {"n": None}, True),
        ({"n": {"$ne": 1}}, {}, True),
        ({"n": {"$nin": [1]}}, {}, True),
        ({"n": {"$exists": False}}, {}, True),
        ({"n": {"$exists": True}}, {"n": None}, True),
        ({"n": {"$gt": 0}}, {}, False),
        ({"n": {"$contains": 1}}, {}, False),
        ({"a.b": 1}, {"a": 5}, False),  # path through a non-mapping is missing
        ({"a.b": {"$ne": 1}}, {"a": [1]}, True),
        ({"a.b.c": "x"}, {"a": {"b": {"c": "x"}}}, True),
        ({"a.b": "x"}, {"a.b": "x"}, False),  # dots always mean nesting
        # containers compare structurally, keys in any order, lists in order
        ({"n": [1, 2]}, {"n": [1, 2]}, True),
        ({"n": [1, 2]}, {"n": [2, 1]}, False),
        ({"n": {"x": 1, "y": [True]}}, {"n": {"y": [True], "x": 1.0}}, True),
        ({"n": {"x": 1}}, {"n": {"x": True}}, False),
        ({"n": {}}, {"n": {}}, True),
        ({"n": {"$contains": [1]}}, {"n": [[1], 2]}, True),
        ({"n": {"$contains": "a"}}, {"n": "abc"}, False),  # not a substring test
        # several operators on one key, several keys: all must hold
        ({"n": {"$gt": 1, "$lt": 3}}, {"n": 2}, True),
        ({"n": {"$gt": 1, "$lt": 3}}, {"n": 3}, False),
        ({"n": 2, "m": {"$exists": False}}, {"n": 2, "m": 0}, False),
    ],
)
def test_json_comparison(flt: dict[str, Any], metadata: dict[str, Any], expected: bool) -> None:
    assert selects(flt, metadata) is expected


def test_json_equal_is_symmetric_for_mixed_types() -> None:
    values: list[Any] = [0, 0.0, False, 1, True, "1", None, [], {}, [0], {"a": 0}, math.nan]
    for a in values:
        for b in values:
            assert json_equal(a, b) is json_equal(b, a), (a, b)


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        ({"": 1}, "non-empty string"),
        ({1: 1}, "non-empty string"),
        ({"a..b": 1}, "empty part"),
        ({".a": 1}, "empty part"),
        ({"a.": 1}, "empty part"),
        ({"$gt": 1}, "an operator needs a key"),
        ({"a": {"$regex": "x"}}, "unknown operator '$regex' for filter key 'a'"),
        ({"a": {"$gt": 1, "b": 2}}, "unknown operator 'b'"),
        ({"a": {"$in": "abc"}}, "$in for filter key 'a' takes a list"),
        ({"a": {"$nin": 1}}, "$nin for filter key 'a' takes a list"),
        ({"a": {"$exists": 1}}, "$exists for filter key 'a' takes true or false"),
        ({"a": {"$gt": None}}, "$gt for filter key 'a' takes a number or a string"),
        ({"a": {"$gte": True}}, "takes a number or a string"),
        ({"a": {"$lt": math.nan}}, "takes a number or a string"),
        ({"a": {"$lte": [1]}}, "takes a number or a string"),
        ({"a": {1, 2}}, "not JSON"),
        ({"a": {"$in": [object()]}}, "not JSON"),
        ({"a": {"$contains": b"x"}}, "not JSON"),
        ({"a": {1: "x"}}, "not JSON"),
    ],
)
def test_bad_filters_name_the_key_and_the_problem(flt: dict[Any, Any], message: str) -> None:
    with pytest.raises(FilterError) as raised:
        MetadataFilter(flt)
    assert message in str(raised.value)


def test_a_filter_must_be_a_mapping() -> None:
    with pytest.raises(FilterError, match="must be a mapping, got list"):
        MetadataFilter([("user_id", "alice")])  # type: ignore[arg-type]


def test_date_bounds_are_exclusive_and_need_a_timezone() -> None:
    later = T0 + timedelta(seconds=1)
    assert not MetadataFilter(created_after=T0).matches({}, T0, T0)
    assert MetadataFilter(created_after=T0).matches({}, later, later)
    assert not MetadataFilter(updated_before=T0).matches({}, T0, T0)
    assert MetadataFilter(created_after=T0, updated_before=later + later.resolution).matches(
        {}, later, later
    )
    with pytest.raises(FilterError, match="created_before must be a timezone-aware datetime"):
        MetadataFilter(created_before=datetime(2026, 1, 1))
    with pytest.raises(FilterError, match="updated_after"):
        MetadataFilter(updated_after="2026-01-01")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limit", "offset", "ok"),
    [
        (None, 0, True),
        (0, 0, True),
        (50, 10, True),
        (True, 0, False),
        (10, False, False),
        (-1, 0, False),
        (10, -1, False),
        (10.0, 0, False),
        ("10", 0, False),
        (10, None, False),
    ],
)
def test_page_arguments(limit: object, offset: object, ok: bool) -> None:
    if ok:
        assert check_page(limit, offset) == (limit, offset)
    else:
        with pytest.raises(FilterError, match=r"^(limit|offset) must be"):
            check_page(limit, offset)


def test_only_string_equality_on_identifier_keys_is_pushed_down() -> None:
    flt = MetadataFilter(
        {
            "user_id": "alice",
            "project.name": "x",
            "n": 1,
            "flag": True,
            "weird-key": "y",
            "nul": "a\x00b",
            "tier": {"$in": ["pro"]},
            "team": {"$eq": "core"},
        }
    )
    assert flt.pushdown() == [
        (("user_id",), "alice"),
        (("project", "name"), "x"),
        (("team",), "core"),
    ]


# What a backend narrows by must never drop a row that the Python check keeps.
# Every tricky string, stored in every shape, queried under every key, on every
# backend (SQLite and PostgreSQL push string equality into SQL).
TRICKY = ["alice", "Alice", "alice ", " alice", "1", "", "ünï", "a'b", 'a"b', "%", "_", "\\"]
SHAPES = [
    lambda s: {"user_id": s},
    lambda s: {"user_id": [s]},
    lambda s: {"user_id": {"name": s}},
    lambda s: {"project": {"name": s}},
    lambda s: {"project": s},
]
OTHERS: list[dict[str, Any]] = [
    {"user_id": 1},
    {"user_id": True},
    {"user_id": None},
    {"project": {"name": 1}},
    {"project": {"name": None}},
    {},
]


@pytest.mark.parametrize(
    # S3 pushes nothing down (its search cannot reach nested fields), so it is
    # the Python check alone, as on memory; the conformance suite covers it.
    "store_url",
    [b for b in BACKENDS if b != "s3"],
    indirect=True,
)
def test_pushdown_returns_exactly_the_python_rows(store_url: str) -> None:
    rows = [shape(s) for s in TRICKY for shape in SHAPES] + OTHERS

    async def run() -> None:
        async with open_storage(store_url) as storage:
            for i, metadata in enumerate(rows):
                state = ConversationState(f"c{i:03d}", metadata=metadata)
                state.add_message("user", "hi")
                await storage.save_conversation(state)
            for key in ("user_id", "project.name", "user_id.name", "project"):
                for value in TRICKY:
                    flt = {key: value}
                    found = await storage.list_summaries(
                        flt, order_by="conversation_id", limit=None
                    )
                    expected = [f"c{i:03d}" for i, m in enumerate(rows) if selects(flt, m)]
                    assert [s.conversation_id for s in found] == expected, flt
                    assert await storage.count_conversations(flt) == len(expected), flt

    asyncio.run(run())
