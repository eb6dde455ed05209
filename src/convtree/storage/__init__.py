"""Persisting conversations, in layers (see docs/storage.md):

* `base`: [`ConversationStorage`][convtree.ConversationStorage], the interface users call;
* `adapter`: [`DataknobsConversationStorage`][convtree.DataknobsConversationStorage], save, load,
  merge, list and count for every backend, built on a record store;
* `layout`: states and change sets as records (head + segments);
* `records`: `RecordStore`, the
  primitives a backend implements (read, conditional write, delete, scan);
* `backends`: one module per backend;
* `registry`: URL schemes, ``open_storage``, entry points.

Importing this package imports neither dataknobs-data nor any driver; opening a
store imports what its backend needs.
"""

from __future__ import annotations

from .adapter import DataknobsConversationStorage
from .base import ConversationPage, ConversationStorage, ConversationSummary
from .records import Capabilities, IfRevision, RecordStore
from .registry import open_storage, register_backend

__all__ = [
    "Capabilities",
    "ConversationPage",
    "ConversationStorage",
    "ConversationSummary",
    "DataknobsConversationStorage",
    "IfRevision",
    "RecordStore",
    "open_storage",
    "register_backend",
]
