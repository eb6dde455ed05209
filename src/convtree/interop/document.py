"""convtree's own document format as an interchange format (``--format convtree``).

A file holds one conversation document (what
[`to_dict()`][convtree.ConversationState.to_dict] writes, any schema version
convtree reads, dataknobs-llm's included) or a JSON array of them. Reading
streams the array (bounded memory); writing streams it out. The round trip is
exact: ``from_dict(to_dict(state)) == state``.

Modes: ``"tree"`` is the document itself; ``"active"`` keeps only the path
from the root to the cursor (same ids); ``"branches"`` writes one document per
leaf, the path to it, with the id ``<conversation id>~<leaf id>`` and the
cursor on the leaf (the same naming as the other formats).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any, Literal, overload

from ..state import ConversationState
from ._fields import Mode, check_mode, mode_error
from ._source import Dest, MemberFilter, Reader, Source, write_exports

__all__ = [
    "BRANCH_SEPARATOR",
    "FORMAT",
    "Mode",
    "from_dict",
    "looks_like",
    "read",
    "to_dict",
    "write",
]

FORMAT = "convtree"
"""The format's name in [`FORMATS`][convtree.interop.FORMATS]."""


BRANCH_SEPARATOR = "~"
"""Joins a conversation id and a leaf id in ``branches`` exports: ``<id>~<leaf id>``."""


def looks_like(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` is a conversation document (``nodes`` and ``edges`` lists)."""
    return isinstance(obj.get("nodes"), list) and isinstance(obj.get("edges"), list)


def from_dict(obj: Mapping[str, Any]) -> ConversationState:
    """[`ConversationState.from_dict`][convtree.ConversationState.from_dict]: any known version."""
    return ConversationState.from_dict(obj)


@overload
def to_dict(
    state: ConversationState, *, mode: Literal["tree", "active"] = "tree"
) -> dict[str, Any]: ...
@overload
def to_dict(state: ConversationState, *, mode: Literal["branches"]) -> list[dict[str, Any]]: ...
@overload
def to_dict(state: ConversationState, *, mode: Mode) -> dict[str, Any] | list[dict[str, Any]]: ...


def to_dict(
    state: ConversationState, *, mode: Mode = "tree"
) -> dict[str, Any] | list[dict[str, Any]]:
    """The conversation as a document, its active path, or one document per leaf.

    Args:
        state: The conversation (not changed).
        mode: ``"tree"`` (the whole document), ``"active"`` (the path to the
            cursor) or ``"branches"`` (a list: one path per leaf, depth-first).

    Raises:
        ValueError: an unknown mode.
    """
    if mode == "tree":
        return state.to_dict()
    if mode == "active":
        return _path_document(state, state.current_node_id, state.conversation_id)
    if mode == "branches":
        return [
            _path_document(
                state, leaf.node_id, f"{state.conversation_id}{BRANCH_SEPARATOR}{leaf.node_id}"
            )
            for leaf in state.leaves()
        ]
    raise mode_error(mode)


def _path_document(state: ConversationState, end: str, conversation_id: str) -> dict[str, Any]:
    path = state.get_path(end)
    doc = state.head_fields()
    doc.pop("active_children", None)  # a path has no branch points
    doc["conversation_id"] = conversation_id
    doc["current_node_id"] = end
    doc["nodes"] = [node.to_dict() for node in path]
    doc["edges"] = [[a.node_id, b.node_id] for a, b in pairwise(path)]
    return doc


def read(
    source: Source,
    *,
    errors: Literal["skip", "raise"] = "skip",
    member_filter: MemberFilter | None = None,
) -> Reader:
    """Stream the documents of a file (one document, or an array), a ZIP or a directory.

    A document that does not load (invalid, or of a newer major version) is
    recorded in [`Reader.skipped`][convtree.interop._source.Reader] with its path
    (``errors="skip"``), or raised (``errors="raise"``).
    """
    return Reader(source, from_dict, errors=errors, member_filter=member_filter)


def write(states: Iterable[ConversationState], dest: Dest, *, mode: Mode = "tree") -> int:
    """Write the conversations as a JSON array of documents (streamed; a path atomically).

    Returns:
        How many documents were written (``branches`` writes one per leaf).
    """
    check_mode(mode)
    return write_exports(states, dest, lambda state: to_dict(state, mode=mode))
