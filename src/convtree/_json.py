"""Small helpers for JSON-shaped data (no I/O)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .errors import FormatError

__all__ = ["copy_json", "format_error_from_validation", "json_path"]

_SCALARS = (str, int, float, bool, type(None))


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


def json_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """Render a pydantic error location as a JSON path: ``nodes[3].message.role``."""
    out = prefix
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
    prefix: str = "",
    node_id_at: Any = None,
) -> FormatError:
    """Turn a pydantic ValidationError into a FormatError naming path and node.

    Args:
        exc: The validation error.
        what: What was being validated ("conversation document", "message").
        prefix: Path prefix for the locations.
        node_id_at: Optional callable mapping a location tuple to the node id it
            falls in (or None).
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(part for part in first["loc"] if not _is_union_tag(part))
    path = json_path(loc, prefix)
    node_id = node_id_at(loc) if node_id_at is not None else None
    extra = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return FormatError(f"invalid {what}: {first['msg']}{extra}", path=path, node_id=node_id)


def _is_union_tag(part: int | str) -> bool:
    # pydantic inserts the union member's name ("str", "list[...]") into locations
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool", "none", "function-after", "function-wrap"}
        or "[" in part
    )
