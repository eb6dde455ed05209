"""Small helpers for JSON-shaped data (no I/O)."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from .errors import FormatError

__all__ = [
    "MAX_DEPTH",
    "check_depth",
    "copy_json",
    "format_error_from_validation",
    "gc_paused",
    "json_path",
    "json_text",
    "valid_text",
]

_SCALARS = (str, int, float, bool, type(None))
_PLAIN = frozenset({int, float, bool, type(None)})  # scalars copied as they are
_NESTED = frozenset({dict, list, tuple})


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
    return _encode(value)


# What ``json.dumps(value, ensure_ascii=True, separators=(",", ":"))`` does, without
# building an encoder on every call (which was most of the time for a small value).
_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


MAX_DEPTH = 200
"""How deep JSON values (metadata, content parts, tool calls, unknown fields) may nest.

Enforced where values enter a conversation (`copy_json()`, `check_depth()`)
and when documents load, so whatever is saved loads again: pydantic's own limit
(about 255 levels for a whole document) is never reached.
"""


def copy_json(value: Any, path: str, *, unicode: bool = False) -> Any:
    """Return an independent copy of a JSON-compatible value.

    Dicts and lists are copied (so a caller mutating the result never changes
    the source); scalars are shared. Tuples become lists. Iterative: any depth
    is handled without recursion, and refused beyond `MAX_DEPTH`.

    Args:
        value: The value.
        path: Its JSON path, for error messages.
        unicode: Also refuse text that is not valid Unicode (a lone surrogate):
            for values that stores keep natively (conversation metadata), where
            such text cannot be stored. Elsewhere it is kept (stores hold it
            as escaped JSON text).

    Raises:
        FormatError: if the value holds something JSON cannot represent
            (a datetime, bytes, a set, a non-string key), nests deeper than
            `MAX_DEPTH`, or (``unicode``) holds a lone surrogate, naming
            its path.
    """
    if type(value) is str:  # the common case, first
        return value if value.isascii() or not unicode else _checked_text(value, lambda: path)
    if value is None:
        return None
    text = _checked_text if unicode else _any_text
    root = _copy_shell(value, lambda: path, text)
    if root is value:  # a scalar
        return value
    # (source, its copy, depth, how to name it)
    stack: list[tuple[Any, Any, int, Callable[[], str]]] = [(value, root, 1, lambda: path)]
    while stack:
        source, copy, depth, name = stack.pop()
        if depth > MAX_DEPTH:
            raise FormatError(f"nested deeper than {MAX_DEPTH} levels", path=name())
        if type(copy) is dict:
            for key, item in source.items():
                if type(key) is not str:
                    raise FormatError(
                        f"object keys must be strings, got {type(key).__name__} {key!r}",
                        path=name(),
                    )
                if not key.isascii():
                    text(key, name)
                kind = type(item)
                if (kind is str and item.isascii()) or kind in _PLAIN:
                    copy[key] = item
                    continue
                where = _child_name(name, key)
                inner = _copy_shell(item, where, text)
                copy[key] = inner
                if inner is not item:
                    stack.append((item, inner, depth + 1, where))
        else:
            for i, item in enumerate(source):
                kind = type(item)
                if (kind is str and item.isascii()) or kind in _PLAIN:
                    copy.append(item)
                    continue
                where = _child_name(name, i)
                inner = _copy_shell(item, where, text)
                copy.append(inner)
                if inner is not item:
                    stack.append((item, inner, depth + 1, where))
    return root


def check_depth(value: Any, path: str) -> None:
    """Raise [`FormatError`][convtree.FormatError] if ``value`` nests deeper than `MAX_DEPTH`.

    Iterative and cheap for shallow values (what loading checks).
    """
    if type(value) is dict and not any(type(v) in _NESTED for v in value.values()):
        return  # flat: the common case
    stack: list[tuple[Any, int, Callable[[], str]]] = [(value, 1, lambda: path)]
    while stack:
        item, depth, name = stack.pop()
        if depth > MAX_DEPTH:
            raise FormatError(f"nested deeper than {MAX_DEPTH} levels", path=name())
        if isinstance(item, Mapping):
            stack.extend(
                (v, depth + 1, _child_name(name, k))
                for k, v in item.items()
                if isinstance(v, (Mapping, list, tuple))
            )
        elif isinstance(item, (list, tuple)):
            stack.extend(
                (v, depth + 1, _child_name(name, i))
                for i, v in enumerate(item)
                if isinstance(v, (Mapping, list, tuple))
            )


def _child_name(parent: Callable[[], str], key: str | int) -> Callable[[], str]:
    """The path of a child, built only when an error needs it."""
    if isinstance(key, int):
        return lambda: f"{parent()}[{key}]"
    return lambda: f"{parent()}.{key}"


def _copy_shell(
    value: Any, name: Callable[[], str], text: Callable[[str, Callable[[], str]], str]
) -> Any:
    """An empty container of ``value``'s kind, or ``value`` itself when it is a scalar."""
    if isinstance(value, dict):
        return {}
    if isinstance(value, (list, tuple)):
        return []
    if isinstance(value, str):
        return text(value, name)
    if isinstance(value, _SCALARS):
        return value
    raise FormatError(f"{type(value).__name__} is not JSON-compatible", path=name())


def _checked_text(text: str, name: Callable[[], str]) -> str:
    """``text`` if it is valid Unicode (no lone surrogate), else a ``FormatError``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError(
            f"text holds a lone surrogate {text[exc.start]!r} at index {exc.start}: "
            "not valid Unicode, so no store could keep it",
            path=name(),
        ) from None
    return text


def _any_text(text: str, name: Callable[[], str]) -> str:
    return text


def valid_text(text: str, path: str) -> str:
    """``text`` if it is valid Unicode (no lone surrogate), else a ``FormatError``."""
    return text if text.isascii() else _checked_text(text, lambda: path)


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
    place: Callable[[tuple[int | str, ...]], tuple[int | str, ...]] | None = None,
) -> FormatError:
    """Turn a pydantic ValidationError into one FormatError naming path and node.

    The most specific problem (the deepest path) is reported; alternatives of a
    union at the same path are joined ("a valid string, or a valid list").

    Args:
        exc: The validation error.
        what: What was being validated ("conversation document", "message").
        data: The input that was validated, to tell keys from union member tags.
        node_id_at: Optional callable mapping a location to the node id it falls in.
        place: Optional callable mapping a location in ``data`` to the one it has in
            the document ``data`` is part of (the path reported, and what
            ``node_id_at`` is given).
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
    if place is not None:
        loc = place(loc)
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
