"""The versioned nodes-and-edges document: its models, validation and structure checks.

A document (schema 2.1.0) looks like::

    {
      "schema_version": "2.1.0",
      "conversation_id": "c1",
      "nodes": [{"node_id": "...", "message": {...} | null, "timestamp": "...+00:00",
                 "branch_name": ..., "prompt_name": ..., "metadata": {...}}, ...],
      "edges": [["parent_id", "child_id"], ...],      # siblings in order
      "current_node_id": "...",
      "metadata": {...},
      "created_at": "...", "updated_at": "...",
      "active_children": {"parent_id": "child_id", ...}   # optional (2.1.0)
    }

``active_children`` remembers, for branch points the cursor has left, the
child it was last in, so that switching back lands where the user was
([`switch_to()`][convtree.ConversationState.switch_to] with ``descend=True``).

The pydantic models below are the single source of truth for that shape: the
committed ``migrations_schema/<version>/schema.json`` is generated from them, and a
test fails when they drift apart.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from operator import eq, itemgetter, lt
from typing import Annotated, Any, Protocol

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    create_model,
    with_config,
)
from typing_extensions import NotRequired, TypedDict

from ._json import check_depth, copy_json, format_error_from_validation, valid_text
from .errors import FormatError
from .message import MessageRecord
from .node import ConversationNode

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "ConversationDocument",
    "NodeRecord",
    "ParsedDocument",
    "document_json_schema",
    "parse_document",
]

CURRENT_SCHEMA_VERSION = "2.1.0"
"""The schema version [`to_dict()`][convtree.ConversationState.to_dict] writes."""

SCHEMA_ID = f"https://convtree.dev/schema/{CURRENT_SCHEMA_VERSION}/conversation.json"


def _iso_text(value: Any) -> Any:
    # pydantic's lax mode would read a number as a Unix time; a document holds text.
    if isinstance(value, (int, float)):
        raise ValueError("a timestamp is ISO 8601 text with an offset, not a number")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
"""ISO 8601 text with a UTC offset (``2025-03-01T12:00:00+00:00``)."""


@with_config(
    ConfigDict(
        extra="allow",
        title="Node",
        json_schema_extra={"description": "One node: a message and what is known about it."},
    )
)
class NodeRecord(TypedDict):
    """A node as stored in a document (validated into a plain dict, which is fast)."""

    node_id: Annotated[str, Field(description="Opaque id, unique in the conversation.")]
    message: Annotated[
        MessageRecord | None,
        Field(description="The message; null only for a message-less root."),
    ]
    timestamp: Annotated[Timestamp, Field(description="Creation time, ISO 8601 with an offset.")]
    branch_name: NotRequired[Annotated[str | None, Field(description="Optional branch label.")]]
    prompt_name: NotRequired[
        Annotated[str | None, Field(description="Optional prompt template name.")]
    ]
    metadata: NotRequired[Annotated[dict[str, JsonValue], Field(description="Free metadata.")]]


_NODE_FIELDS = frozenset(NodeRecord.__annotations__)


class ConversationDocument(BaseModel):
    """A whole conversation as stored: nodes, edges in sibling order, cursor, metadata."""

    model_config = ConfigDict(
        extra="allow",
        title="ConversationDocument",
        json_schema_extra={
            "description": "A conversation tree: nodes, edges in sibling order, cursor, metadata."
        },
    )

    schema_version: str = Field(
        pattern=r"^2\.[0-9]+\.[0-9]+$", description="Format version (2.x.y)."
    )
    conversation_id: str = Field(min_length=1)
    nodes: list[NodeRecord] = Field(min_length=1, description="Every node, in any order.")
    edges: list[tuple[str, str]] = Field(
        description="[parent_id, child_id] pairs; a parent's children in sibling order."
    )
    current_node_id: str = Field(description="The cursor: id of the active node.")
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    created_at: Timestamp
    updated_at: Timestamp
    active_children: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Since 2.1.0. For branch points the cursor has left: parent id -> the child "
            "it was last in. Elsewhere the active child is on the cursor's path, or the last."
        ),
    )


_ENVELOPE_FIELDS: dict[str, Any] = {
    name: (field.annotation, field)
    for name, field in ConversationDocument.model_fields.items()
    if name not in ("nodes", "edges")
}
DocumentEnvelope = create_model(
    "DocumentEnvelope",
    __config__=ConversationDocument.model_config,
    __doc__="A document's fields but ``nodes`` and ``edges`` (a store holds those apart).",
    **_ENVELOPE_FIELDS,
)
"""The fields of `ConversationDocument` but ``nodes`` and ``edges``, validated the same way."""


def document_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the current format (what ``migrations_schema`` commits)."""
    schema = ConversationDocument.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


@dataclass
class ParsedDocument:
    """A validated current-version document, ready to become a tree."""

    schema_version: str
    conversation_id: str
    nodes: dict[str, ConversationNode]  # in document order
    children: dict[str, list[str]]  # parent id -> child ids in sibling order
    root_id: str
    current_node_id: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    extra: dict[str, Any] | None
    active_children: dict[str, str]


def parse_document(doc: Mapping[str, Any]) -> ParsedDocument:
    """Validate a current-major document and check that it describes one tree.

    Loading never depends on the order of ``nodes`` or of ``edges`` across
    parents; a parent's edges give its children's order.

    Raises:
        FormatError: naming the JSON path and node id of the first problem:
            a wrong type or missing field, a duplicate id, an edge to an
            unknown node, a node with two parents, a cycle, several roots,
            unreachable nodes, a non-root node without a message, an unknown
            cursor.
    """
    try:
        model = ConversationDocument.model_validate(doc)
    except ValidationError as exc:
        raise format_error_from_validation(
            exc,
            what="conversation document",
            data=doc,
            node_id_at=lambda loc: _node_id_at(doc, loc),
        ) from None

    nodes: dict[str, ConversationNode] = {}
    index_of: dict[str, int] = {}
    without_message: list[str] = []  # only the root may be one of them
    for i, rec in enumerate(model.nodes):
        node_id = rec["node_id"]
        if node_id in index_of:
            raise duplicate_node(node_id, index_of[node_id], i)
        index_of[node_id] = i
        node = nodes[node_id] = node_from_record(rec, i)
        if node._message is None:
            without_message.append(node_id)
    return assemble_document(model, nodes, index_of, without_message, model.edges)


def node_from_record(rec: NodeRecord, i: int) -> ConversationNode:
    """The node of a validated record at ``nodes[i]`` (the checks pydantic does not make).

    Raises:
        FormatError: a value nests deeper than ``MAX_DEPTH``.
    """
    extra = None
    if len(rec) > 3 and not _NODE_FIELDS.issuperset(rec):
        extra = {k: v for k, v in rec.items() if k not in _NODE_FIELDS}
        _check_values(extra, f"nodes[{i}]")
    metadata = rec.get("metadata")
    if metadata:
        check_depth(metadata, f"nodes[{i}].metadata")
    message = rec["message"]
    if message is not None and (len(message) > 2 or type(message.get("content")) is list):
        _check_values(message, f"nodes[{i}].message")
    return ConversationNode._from_record(
        rec["node_id"],
        message,
        rec["timestamp"],
        rec.get("branch_name"),
        rec.get("prompt_name"),
        metadata,
        extra,
    )


_NODE_RECORDS = TypeAdapter(list[NodeRecord])


def validate_node_records(
    records: Mapping[int, Any], node_id_of: Callable[[int], str]
) -> dict[int, NodeRecord]:
    """Validate node records that are ``nodes[k]`` of a document, by ``k`` (one call).

    Raises:
        FormatError: naming ``nodes[k]`` and the node id (``node_id_of(k)``).
    """
    at = list(records)
    values = list(records.values())
    try:
        return dict(zip(at, _NODE_RECORDS.validate_python(values), strict=True))
    except ValidationError as exc:
        raise format_error_from_validation(
            exc,
            what="conversation document",
            data=values,
            place=lambda loc: ("nodes", at[int(loc[0])], *loc[1:]),  # values[j] is nodes[k]
            node_id_at=lambda loc: node_id_of(int(loc[1])),
        ) from None


class DocumentFields(Protocol):
    """What `assemble_document` reads of a validated document (or envelope)."""

    schema_version: str
    conversation_id: str
    current_node_id: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    active_children: dict[str, str]
    __pydantic_extra__: dict[str, Any] | None


def assemble_document(
    top: DocumentFields,
    nodes: dict[str, ConversationNode],
    index_of: Mapping[str, int],
    without_message: Sequence[str],
    edges: Sequence[Sequence[str]],
) -> ParsedDocument:
    """Check that validated fields, built nodes and ``edges`` make one tree, and hold them.

    ``index_of`` gives each node's index in the document's ``nodes`` (for error
    paths); ``without_message`` lists the nodes whose message is ``None``.

    Raises:
        FormatError: as `parse_document`.
    """
    ups = list(map(itemgetter(0), edges))
    kids = list(map(itemgetter(1), edges))
    parent_edge = dict(zip(kids, range(len(kids)), strict=True))
    # What `_edge_problem` checks edge by edge, at C speed: it runs only to name a problem.
    if not (
        len(parent_edge) == len(kids)
        and all(map(index_of.__contains__, ups))
        and all(map(index_of.__contains__, kids))
        and not any(map(eq, ups, kids))
    ):
        raise _edge_problem(edges, index_of)
    # Each parent's children in edge order: one list per parent built at C speed, then
    # the parents of several children (branch points, a few) filled edge by edge.
    children = dict(zip(ups, map(list, zip(kids)), strict=True))
    if len(children) != len(ups):
        several = {up for up, count in Counter(ups).items() if count > 1}
        for up in several:
            children[up] = []
        pairs = zip(ups, kids, strict=True)
        for up, kid in itertools.compress(pairs, map(several.__contains__, ups)):
            children[up].append(kid)
    root_id = next(itertools.filterfalse(parent_edge.__contains__, nodes), None)
    if root_id is None:  # the first node is as good as any: it is on or below a cycle
        first = next(iter(nodes), None)
        if first is None:
            raise FormatError("no nodes: a conversation has a root node", path="nodes")
        raise FormatError(
            f"no root node: every node has a parent (a cycle); nodes[{index_of[first]}] "
            f"{first!r} is the child of {edges[parent_edge[first]][0]!r} here",
            path=f"edges[{parent_edge[first]}]",
            node_id=first,
        )
    if len(nodes) - len(parent_edge) > 1:
        roots = list(itertools.filterfalse(parent_edge.__contains__, nodes))
        shown = ", ".join(repr(r) for r in roots[:5])
        raise FormatError(
            f"{len(roots)} root nodes ({shown}); a conversation has exactly one root",
            path=f"nodes[{index_of[roots[1]]}]",
            node_id=roots[1],
        )
    # Every node but the root has one parent. When each edge leaves the root or a node an
    # earlier edge reached (edges as a store appends them), the edges reach every node
    # from the root; otherwise the tree is walked to find nodes on a cycle.
    ordered = all(map(lt, map(parent_edge.get, ups, repeat(-1)), range(len(ups))))
    if not ordered and (lost := unreachable(root_id, children, nodes)):
        # Every node but the root has exactly one parent, so the rest form cycles.
        shown = ", ".join(repr(n) for n in lost[:5])
        raise FormatError(
            f"{len(lost)} node(s) not reachable from the root {root_id!r}, "
            f"their edges form a cycle: {shown}",
            path=f"nodes[{index_of[lost[0]]}]",
            node_id=lost[0],
        )

    for node_id in without_message:
        if node_id != root_id:
            raise FormatError(
                "only the root may have no message",
                path=f"nodes[{index_of[node_id]}].message",
                node_id=node_id,
            )

    if top.current_node_id not in nodes:
        raise FormatError(
            "the cursor names no node of this conversation",
            path="current_node_id",
            node_id=top.current_node_id,
        )

    for parent_id, child_id in top.active_children.items():
        at = parent_edge.get(child_id)
        if parent_id not in nodes or at is None or edges[at][0] != parent_id:
            raise FormatError(
                f"active child {child_id!r} is not a child of node {parent_id!r}",
                path=f"active_children.{parent_id}",
                node_id=parent_id,
            )

    # The conversation id and metadata become keys and native values in stores.
    valid_text(top.conversation_id, "conversation_id")
    doc_metadata: dict[str, Any] = copy_json(top.metadata, "metadata", unicode=True)
    if top.__pydantic_extra__:
        _check_values(top.__pydantic_extra__, "")

    return ParsedDocument(
        schema_version=top.schema_version,
        conversation_id=top.conversation_id,
        nodes=nodes,
        children=children,
        root_id=root_id,
        current_node_id=top.current_node_id,
        metadata=doc_metadata,
        created_at=top.created_at,
        updated_at=top.updated_at,
        extra=top.__pydantic_extra__ or None,
        active_children=top.active_children,
    )


def unreachable(
    root_id: str, children: Mapping[str, Sequence[str]], ids: Collection[str]
) -> list[str]:
    """The ``ids`` (in their order) that are neither ``root_id`` nor below it
    (``children``: parent -> child ids)."""
    seen = {root_id}
    stack = [root_id]
    while stack:
        below = children.get(stack.pop())
        if below:
            seen.update(below)
            stack.extend(below)
    return [] if len(seen) == len(ids) else [i for i in ids if i not in seen]


def duplicate_node(node_id: str, first: int, again: int) -> FormatError:
    """The error for node ``node_id`` at ``nodes[again]``, already at ``nodes[first]``."""
    return FormatError(
        f"duplicate node id (first at nodes[{first}])",
        path=f"nodes[{again}].node_id",
        node_id=node_id,
    )


def _edge_problem(edges: Sequence[Sequence[str]], index_of: Mapping[str, int]) -> FormatError:
    """The first edge that is not one of a tree over ``index_of``'s nodes, as an error."""
    parent_edge: dict[str, int] = {}
    for j, (parent_id, child_id) in enumerate(edges):
        if parent_id not in index_of:
            return FormatError(
                "edge from an unknown node", path=f"edges[{j}][0]", node_id=parent_id
            )
        if child_id not in index_of:
            return FormatError("edge to an unknown node", path=f"edges[{j}][1]", node_id=child_id)
        if parent_id == child_id:
            return FormatError(
                "edge from a node to itself (a cycle)", path=f"edges[{j}]", node_id=child_id
            )
        if child_id in parent_edge:
            k = parent_edge[child_id]
            first_parent = edges[k][0]
            return FormatError(
                f"node has a second parent {parent_id!r} "
                f"(its first is {first_parent!r} at edges[{k}])",
                path=f"edges[{j}]",
                node_id=child_id,
            )
        parent_edge[child_id] = j
    raise AssertionError("no problem found in edges said to have one")  # pragma: no cover


def _check_values(fields: Mapping[str, Any], path: str) -> None:
    """Refuse values nesting deeper than ``MAX_DEPTH``, each counted from itself as when saved."""
    for key, value in fields.items():
        if isinstance(value, (dict, list)):
            check_depth(value, f"{path}.{key}" if path else key)


def _node_id_at(doc: Mapping[str, Any], loc: tuple[int | str, ...]) -> str | None:
    """The node id a validation error location falls in, if it can be read."""
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
        nodes = doc.get("nodes")
        if isinstance(nodes, list) and 0 <= loc[1] < len(nodes):
            record = nodes[loc[1]]
            if isinstance(record, Mapping):
                node_id = record.get("node_id")
                if isinstance(node_id, str):
                    return node_id
    return None
