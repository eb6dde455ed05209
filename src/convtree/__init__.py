"""convtree: branching LLM conversations as trees.

A :class:`ConversationState` holds a tree of message nodes and a cursor. Every
regenerated reply, edited message and fork is a branch that is kept,
navigated, replayed and persisted as a versioned nodes-and-edges document.
"""

from __future__ import annotations

from .errors import (
    AmbiguousReferenceError,
    ConvtreeError,
    FormatError,
    NodeNotFoundError,
    SchemaVersionError,
    TreeOperationError,
)
from .format import CURRENT_SCHEMA_VERSION
from .message import Message
from .migrations import upgrade_document
from .node import ConversationNode
from .render import render_tree
from .state import ConversationState, NodeRef

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "AmbiguousReferenceError",
    "ConversationNode",
    "ConversationState",
    "ConvtreeError",
    "FormatError",
    "Message",
    "NodeNotFoundError",
    "NodeRef",
    "SchemaVersionError",
    "TreeOperationError",
    "__version__",
    "render_tree",
    "upgrade_document",
]

__version__ = "0.1.0.dev0"
