"""dataknobs-llm's ``dataknobs_llm.conversations`` module functions, for code written against it.

Code that imported them from ``dataknobs_llm.conversations`` imports them from
``convtree``. In dataknobs-llm, a node's id was its position (``"0.1.2"``: the
root's child 0, its child 1, its child 2); in convtree ids are opaque and never
change, and documents written by dataknobs-llm keep their positional ids as
they are. So these functions look nodes up **by id**; where a position is all
there is to go on (a `dataknobs_structures.Tree` holding other data than
[`ConversationNode`][convtree.ConversationNode]s), they navigate by position as
dataknobs-llm did.

The names dataknobs-llm exports that convtree does not have (its
``ConversationManager`` and middleware, which call models) raise
[`NotProvidedError`][convtree.compat.NotProvidedError] on import, naming what to
use instead. docs/dataknobs-llm.md maps every name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from dataknobs_structures import Tree

from .errors import ConvtreeError, NodeNotFoundError, TreeOperationError
from .format import CURRENT_SCHEMA_VERSION
from .message import Message
from .node import ConversationNode

__all__ = [
    "SCHEMA_VERSION",
    "NotProvidedError",
    "calculate_node_id",
    "get_messages_for_llm",
    "get_node_by_id",
    "get_nodes_for_path",
]

SCHEMA_VERSION: Final = CURRENT_SCHEMA_VERSION
"""dataknobs-llm's name for the schema version ``to_dict()`` writes (there ``"1.1.0"``).

The same value as [`CURRENT_SCHEMA_VERSION`][convtree.format.CURRENT_SCHEMA_VERSION].
"""

_POSITIONAL = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")

_MODEL_CALLS = (
    "convtree stores conversations and does not call models. Call yours with "
    "state.get_current_messages() (convtree.interop.openai.to_messages(state) for the "
    "OpenAI client), add the reply with state.add_message(...) (state.add_alternative(...) "
    "to regenerate) and save with storage.save_conversation(state); or keep using "
    "dataknobs-llm's, with its own ConversationState and storage"
)
_MIDDLEWARE = (
    "middleware runs around ConversationManager's model calls, and convtree makes none. "
    "Run the same steps around your own model call, or keep using dataknobs-llm's "
    "ConversationManager and middleware, with its own ConversationState and storage"
)

_NOT_PROVIDED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ConversationManager": _MODEL_CALLS,
        "ConversationMiddleware": _MIDDLEWARE,
        "LoggingMiddleware": _MIDDLEWARE,
        "ContentFilterMiddleware": _MIDDLEWARE,
        "ValidationMiddleware": _MIDDLEWARE,
        "MetadataMiddleware": _MIDDLEWARE,
        "RateLimitMiddleware": _MIDDLEWARE,
        "RateLimitError": _MIDDLEWARE,
    }
)
"""Names dataknobs-llm's ``dataknobs_llm.conversations`` exports that convtree does not
have, and what to use instead."""


class NotProvidedError(ConvtreeError, ImportError):
    """A name of dataknobs-llm's ``dataknobs_llm.conversations`` that convtree does not have.

    Raised when it is imported from ``convtree`` (``from convtree import
    ConversationManager``); the message says what to use instead. An
    ``ImportError``, so ``except ImportError`` fallbacks keep working.
    """


def get_node_by_id(tree: Tree, node_id: str) -> Tree | None:
    """The node of ``tree`` whose id is ``node_id``, or ``None`` if there is none.

    ``tree`` is the root (``state.message_tree``); the result is a
    `dataknobs_structures.Tree` whose ``data`` is the
    [`ConversationNode`][convtree.ConversationNode]. Ids are compared exactly:
    ``""`` is the root of a document dataknobs-llm wrote, and ``"00.1"`` or
    ``" 0"`` name nothing (dataknobs-llm read them as ``"0.1"`` and ``"0"``).
    A positional id that matches its node's position is found in O(depth);
    any other id by walking the tree, O(n): in a
    [`ConversationState`][convtree.ConversationState],
    [`get_node()`][convtree.ConversationState.get_node] finds a node in O(1).
    In a tree that holds other data than ConversationNodes, ``node_id`` is
    a position, as in dataknobs-llm.
    """
    if not isinstance(node_id, str):
        return None
    placed = _at_position(tree, node_id)
    if not isinstance(tree.data, ConversationNode):
        return placed
    if placed is not None and placed.data.node_id == node_id:
        return placed
    stack = [tree]
    while stack:
        top = stack.pop()
        data = top.data
        if isinstance(data, ConversationNode) and data.node_id == node_id:
            return top
        kids = top.children
        if kids:
            stack.extend(reversed(kids))
    return None


def get_messages_for_llm(tree: Tree, node_id: str) -> list[Message]:
    """The messages on the path from the root of ``tree`` to the node ``node_id``.

    What to send to a model; the messages are the nodes' own (change them
    through the conversation). A message-less root contributes nothing. In a
    [`ConversationState`][convtree.ConversationState] this is
    [`get_current_messages()`][convtree.ConversationState.get_current_messages]
    for the cursor, or ``[n.message for n in state.get_path(ref)]``.

    Raises:
        NodeNotFoundError: no node has this id (dataknobs-llm returned ``[]``,
            which sent a model an empty history without a word).
    """
    messages: list[Message] = []
    for node in get_nodes_for_path(tree, node_id):
        message = node._message_object()  # an internal read: the node is not watched
        if message is not None:
            messages.append(message)
    return messages


def get_nodes_for_path(tree: Tree, node_id: str) -> list[ConversationNode]:
    """The nodes from the root of ``tree`` to the node ``node_id`` that hold a message.

    The nodes of [`get_messages_for_llm()`][convtree.compat.get_messages_for_llm],
    in the same order (a message-less root is left out). In a
    [`ConversationState`][convtree.ConversationState]: ``state.get_path(ref)``.

    Raises:
        NodeNotFoundError: no node has this id.
    """
    found = get_node_by_id(tree, node_id)
    if found is None:
        raise NodeNotFoundError(f"no node with id {node_id!r} in this tree", ref=node_id)
    return [
        t.data
        for t in found.get_path()
        if isinstance(t.data, ConversationNode) and t.data.has_message
    ]


def calculate_node_id(node: Tree) -> str:
    """The positional id of ``node`` (``"0.1.2"``; ``""`` for the root), when that is its id.

    dataknobs-llm computed ids from positions; convtree keeps the ids nodes
    have, which are positions only in documents dataknobs-llm wrote, and only
    until a sibling is pruned. The id of a node is ``node.data.node_id``.

    Raises:
        TreeOperationError: the node's id is not its position (a node convtree
            created, or one whose siblings changed): the message gives its id.
    """
    data = node.data
    if isinstance(data, ConversationNode):
        node_id = data.node_id
        if node_id != "" and not _POSITIONAL.fullmatch(node_id):
            raise _not_positional(node_id, None)
    position = _position_of(node)
    if isinstance(data, ConversationNode) and data.node_id != position:
        raise _not_positional(data.node_id, position)
    return position


def _not_positional(node_id: str, position: str | None) -> TreeOperationError:
    where = "" if position is None else f" (it stands at position {position!r})"
    return TreeOperationError(
        f"node {node_id!r} has no positional id{where}: convtree ids are opaque and never "
        f"change; use its id, node.data.node_id == {node_id!r}"
    )


def _position_of(node: Tree) -> str:
    steps: list[str] = []
    current = node
    parent = current.parent
    while parent is not None:
        for i, kid in enumerate(parent.children or ()):
            if kid is current:
                steps.append(str(i))
                break
        current, parent = parent, parent.parent
    return ".".join(reversed(steps))


def _at_position(tree: Tree, node_id: str) -> Tree | None:
    if node_id == "":
        return tree
    if not _POSITIONAL.fullmatch(node_id):
        return None
    current = tree
    for step in node_id.split("."):
        kids = current.children
        index = int(step)
        if not kids or index >= len(kids):
            return None
        current = kids[index]
    return current


if not TYPE_CHECKING:  # type checkers keep reporting unknown names of this module

    def __getattr__(name: str) -> Any:
        instead = _NOT_PROVIDED.get(name)
        if instead is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        raise NotProvidedError(f"convtree has no {name}: {instead}", name=name)
