"""Small helpers for JSON-shaped data (no I/O)."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from .errors import FormatError

__all__ = ["copy_json", "format_error_from_validation", "gc_paused", "json_path", "json_text"]

_SCALARS = (str, int, float, bool, type(None))


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Building a document or a tree allocates tens of thousands of containers;
    each allocation burst would otherwise trigger collections that walk every
    live object, which made loading a 10k-node conversation ~3x slower. Nothing
    built here forms reference cycles that need the collector. The previous
    state is restored (a caller that disabled gc keeps it disabled).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def json_text(value: Any) -> str:
    """Compact ASCII-only JSON text: exact for every JSON value Python holds (NaN, -0.0,
    big ints, lone surrogates), storable in any backend, and comparable as text."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def copy_json(value: Any, path: str) -> Any:
    """Return an independent copy of a JSON-compatible value.

    Dicts and lists are copied (so a caller mutating the result never changes
    the source); scalars are shared. Tuples become lists.

    Raises:
        FormatError: if the value holds something JSON cannot represent
            (a datetime, bytes, a set, a non-string key), naming its path.
    """
    if type(value) is str or value is None:  # the common case, first
        return value
    if isinstance(value, dict):
        if not value:
            return {}
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise FormatError(
                    f"object keys must be strings, got {type(key).__name__} {key!r}", path=path
                )
            out[key] = item if type(item) is str else copy_json(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [copy_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, _SCALARS):
        return value
    raise FormatError(f"{type(value).__name__} is not JSON-compatible", path=path)


def json_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a JSON path: ``nodes[3].message.role``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "$"


def format_error_from_validation(
    exc: ValidationError,
    *,
    what: str,
    data: Any,
    node_id_at: Callable[[tuple[int | str, ...]], str | None] | None = None,
) -> FormatError:
    """Turn a pydantic ValidationError into one FormatError naming path and node.

    The most specific problem (the deepest path) is reported; alternatives of a
    union at the same path are joined ("a valid string, or a valid list").

    Args:
        exc: The validation error.
        what: What was being validated ("conversation document", "message").
        data: The input that was validated, to tell keys from union member tags.
        node_id_at: Optional callable mapping a location to the node id it falls in.
    """
    problems = [
        (_real_loc(data, err["loc"], err["type"] == "missing"), err["msg"])
        for err in exc.errors(include_url=False)
    ]
    deepest = max(len(loc) for loc, _ in problems)
    loc = next(loc for loc, _ in problems if len(loc) == deepest)
    messages = list(dict.fromkeys(msg for where, msg in problems if where == loc))
    text = messages[0] + "".join(f", or {m[0].lower()}{m[1:]}" for m in messages[1:])
    others = len({where for where, _ in problems} - {loc})
    if others:
        text += f" (and {others} more problem(s))"
    node_id = node_id_at(loc) if node_id_at is not None else None
    return FormatError(f"invalid {what}: {text}", path=json_path(loc), node_id=node_id)


def _real_loc(data: Any, loc: tuple[int | str, ...], missing: bool) -> tuple[int | str, ...]:
    """Drop the union-member tags pydantic puts into locations, keeping real keys.

    A part is real when it indexes the data; the last part of a "missing"
    error names the absent field or item. Any other part is a tag such as
    ``str`` or ``list[...]``.
    """
    out: list[int | str] = []
    current = data
    last = len(loc) - 1
    for i, part in enumerate(loc):
        inside = _child(current, part)
        if inside is not _ABSENT:
            current = inside
        elif not (missing and i == last):
            continue
        out.append(part)
    return tuple(out)


_ABSENT = object()


def _child(container: Any, part: int | str) -> Any:
    """``container[part]`` when ``part`` really indexes it, else ``_ABSENT``."""
    if isinstance(container, Mapping) and isinstance(part, str):
        return container.get(part, _ABSENT)
    if isinstance(container, (list, tuple)) and isinstance(part, int):
        return container[part] if 0 <= part < len(container) else _ABSENT
    return _ABSENT
