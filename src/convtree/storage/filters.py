"""Metadata filters for listing: parsed once, checked exactly in Python.

A filter is a mapping of metadata keys to conditions::

    {"user_id": "alice"}                          # equality
    {"project.name": "x"}                         # dotted keys reach nested metadata
    {"score": {"$gte": 3, "$lt": 10}}             # several operators: all must hold
    {"tags": {"$contains": "work"}}               # the list holds the value
    {"tier": {"$in": ["pro", "team"]}, "deleted": {"$exists": False}}

Comparison is JSON comparison, the same on every backend: ``1 == 1.0``, but
``True`` is not ``1`` and ``"1"`` is not ``1``; ``$gt``/``$gte``/``$lt``/``$lte``
take a number (not a bool, not NaN) or a string as bound, compare numbers with
numbers and strings with strings (by code point), and a stored value of another
type (or NaN) does not match; a missing key matches only ``$ne``, ``$nin`` and
``$exists: false``.

Backends may narrow the candidates first (see `pushdown()`),
but every row is checked here, so a backend can never return a wrong row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import FilterError

__all__ = ["OPERATORS", "Condition", "MetadataFilter", "check_page"]

OPERATORS = frozenset(
    {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$contains"}
)
# \Z, not $: "$" also matches before a final "\n" ("user_id\n" is no identifier).
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MISSING = object()


@dataclass(frozen=True)
class Condition:
    """One ``key <op> value`` test."""

    path: tuple[str, ...]
    op: str
    value: Any

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        found: Any = metadata
        for part in self.path:
            if not isinstance(found, Mapping) or part not in found:
                found = _MISSING
                break
            found = found[part]
        op, value = self.op, self.value
        if op == "$exists":
            return (found is not _MISSING) is value
        if found is _MISSING:
            return op in ("$ne", "$nin")
        if op == "$eq":
            return json_equal(found, value)
        if op == "$ne":
            return not json_equal(found, value)
        if op == "$in":
            return any(json_equal(found, v) for v in value)
        if op == "$nin":
            return not any(json_equal(found, v) for v in value)
        if op == "$contains":
            return isinstance(found, list) and any(json_equal(item, value) for item in found)
        return _ordered(found, op, value)


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: no bool/number mixing, ``1 == 1.0``, NaN equals nothing."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b) and not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _ordered(found: Any, op: str, value: Any) -> bool:
    # ``value`` passed _orderable when the filter was parsed.
    if not _orderable(found) or isinstance(found, str) is not isinstance(value, str):
        return False
    if op == "$gt":
        return bool(found > value)
    if op == "$gte":
        return bool(found >= value)
    if op == "$lt":
        return bool(found < value)
    return bool(found <= value)


class MetadataFilter:
    """A validated ``filter_metadata`` plus the date bounds of a listing call."""

    def __init__(
        self,
        filter_metadata: Mapping[str, Any] | None = None,
        *,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> None:
        """Parse and validate; raise [`FilterError`][convtree.FilterError] naming the bad part."""
        self.conditions: list[Condition] = []
        if filter_metadata is not None:
            if not isinstance(filter_metadata, Mapping):
                raise FilterError(
                    f"filter_metadata must be a mapping, got {type(filter_metadata).__name__}"
                )
            for key, spec in filter_metadata.items():
                path = _parse_key(key)
                if isinstance(spec, Mapping) and any(
                    isinstance(k, str) and k.startswith("$") for k in spec
                ):
                    for op, value in spec.items():
                        self.conditions.append(_condition(key, path, op, value))
                else:
                    self.conditions.append(_condition(key, path, "$eq", spec))
        self.bounds: list[tuple[str, str, datetime]] = []
        for name, value in (
            ("created_after", created_after),
            ("created_before", created_before),
            ("updated_after", updated_after),
            ("updated_before", updated_before),
        ):
            if value is None:
                continue
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise FilterError(f"{name} must be a timezone-aware datetime, got {value!r}")
            field, side = name.split("_")
            self.bounds.append((f"{field}_at", side, value))

    def matches(
        self, metadata: Mapping[str, Any], created_at: datetime, updated_at: datetime
    ) -> bool:
        """Whether a conversation with these metadata and timestamps is selected.

        Date bounds are exclusive: ``created_after=t`` selects ``created_at > t``.
        """
        for field, side, bound in self.bounds:
            stamp = created_at if field == "created_at" else updated_at
            if (stamp <= bound) if side == "after" else (stamp >= bound):
                return False
        return all(c.matches(metadata) for c in self.conditions)

    def pushdown(self) -> list[tuple[tuple[str, ...], str]]:
        """The conditions a backend may use to narrow candidates: ``(path, text)``.

        Only string equality on identifier keys is offered: it means the same
        thing in every backend's query language, so narrowing by it never drops
        a row that `matches()` would keep.
        """
        out = []
        for c in self.conditions:
            if (
                c.op == "$eq"
                and isinstance(c.value, str)
                and "\x00" not in c.value
                and all(_IDENT.fullmatch(p) for p in c.path)
            ):
                out.append((c.path, c.value))
        return out


def _parse_key(key: object) -> tuple[str, ...]:
    if not isinstance(key, str) or not key:
        raise FilterError(f"a filter key must be a non-empty string, got {key!r}")
    parts = tuple(key.split("."))
    if any(not p for p in parts):
        raise FilterError(
            f"filter key {key!r} has an empty part (a leading, trailing or double dot)"
        )
    if key.startswith("$"):
        raise FilterError(
            f"filter key {key!r}: an operator needs a key, e.g. {{'k': {{{key!r}: v}}}}"
        )
    control = _CONTROL.search(key)
    if control:
        raise FilterError(
            f"filter key {key!r} holds the control character {control.group()!r} at "
            f"{control.start()} (a stray newline?); filter keys cannot hold control characters"
        )
    return parts


def _condition(key: str, path: tuple[str, ...], op: object, value: Any) -> Condition:
    if op not in OPERATORS:
        raise FilterError(
            f"unknown operator {op!r} for filter key {key!r}; use one of {sorted(OPERATORS)}"
        )
    assert isinstance(op, str)
    if op in ("$in", "$nin") and not isinstance(value, (list, tuple)):
        raise FilterError(f"{op} for filter key {key!r} takes a list, got {type(value).__name__}")
    if op == "$exists" and not isinstance(value, bool):
        raise FilterError(f"$exists for filter key {key!r} takes true or false, got {value!r}")
    if op in ("$gt", "$gte", "$lt", "$lte") and not _orderable(value):
        raise FilterError(f"{op} for filter key {key!r} takes a number or a string, got {value!r}")
    for v in value if op in ("$in", "$nin") else (value,):
        _check_json(v, key)
    if op in ("$in", "$nin"):
        value = list(value)
    return Condition(path, op, value)


def _orderable(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _check_json(value: Any, key: str) -> None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, list):
        for v in value:
            _check_json(v, key)
        return
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        for v in value.values():
            _check_json(v, key)
        return
    raise FilterError(f"filter value for key {key!r} is not JSON: {value!r}")


def check_page(limit: object, offset: object) -> tuple[int | None, int]:
    """Validate ``limit`` (an int >= 0, or None for all) and ``offset`` (an int >= 0).

    ``bool`` is rejected although it is an ``int`` (``limit=True`` is a bug).
    """
    if limit is not None and (type(limit) is not int or limit < 0):
        raise FilterError(f"limit must be an int >= 0 or None, got {limit!r}")
    if type(offset) is not int or offset < 0:
        raise FilterError(f"offset must be an int >= 0, got {offset!r}")
    return limit, offset
