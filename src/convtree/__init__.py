"""convtree: branching LLM conversations as trees.

A [`ConversationState`][convtree.ConversationState] holds a tree of message
nodes and a cursor. Every regenerated reply, edited message and fork is a branch that is kept,
navigated, replayed and persisted as a versioned nodes-and-edges document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .changes import ChangeSet, SavedRevision
from .compat import (
    SCHEMA_VERSION,
    NotProvidedError,
    calculate_node_id,
    get_messages_for_llm,
    get_node_by_id,
    get_nodes_for_path,
)
from .errors import (
    AmbiguousReferenceError,
    ConflictError,
    ConvtreeError,
    DamagedRecordError,
    DamagedRecordWarning,
    FilterError,
    FormatError,
    NodeNotFoundError,
    PreconditionFailed,
    SchemaVersionError,
    StorageError,
    StorageUnavailableError,
    TreeOperationError,
)
from .format import CURRENT_SCHEMA_VERSION
from .message import Message
from .migrations import upgrade_document
from .node import ConversationNode
from .render import render_tree
from .state import ConversationState, NodeRef, SiblingPosition
from .storage import (
    ConversationPage,
    ConversationStorage,
    ConversationSummary,
    DataknobsConversationStorage,
    open_storage,
)

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "AmbiguousReferenceError",
    "ChangeSet",
    "ConflictError",
    "ConversationNode",
    "ConversationPage",
    "ConversationState",
    "ConversationStorage",
    "ConversationSummary",
    "ConvtreeError",
    "DamagedRecordError",
    "DamagedRecordWarning",
    "DataknobsConversationStorage",
    "FilterError",
    "FormatError",
    "Message",
    "NodeNotFoundError",
    "NodeRef",
    "NotProvidedError",
    "PreconditionFailed",
    "SavedRevision",
    "SchemaVersionError",
    "SiblingPosition",
    "StorageError",
    "StorageUnavailableError",
    "TreeOperationError",
    "__version__",
    "calculate_node_id",
    "get_messages_for_llm",
    "get_node_by_id",
    "get_nodes_for_path",
    "open_storage",
    "render_tree",
    "upgrade_document",
]

__version__ = "0.1.0.dev0"

if not TYPE_CHECKING:  # dataknobs-llm names convtree lacks raise NotProvidedError on import
    from .compat import __getattr__  # noqa: F401
