"""Persisting conversations, in layers (see docs/storage.md):

* :mod:`convtree.storage.base`: :class:`ConversationStorage`, the interface users call;
* :mod:`convtree.storage.adapter`: :class:`DataknobsConversationStorage`, save, load,
  merge, list and count for every backend, built on a record store;
* :mod:`convtree.storage.layout`: states and change sets as records (head + segments);
* :mod:`convtree.storage.records`: :class:`~convtree.storage.records.RecordStore`, the
  primitives a backend implements (read, conditional write, delete, scan);
* :mod:`convtree.storage.backends`: one module per backend;
* :mod:`convtree.storage.registry`: URL schemes, ``open_storage``, entry points.

Importing this package imports neither dataknobs-data nor any driver; opening a
store imports what its backend needs.
"""

from __future__ import annotations

from .adapter import DataknobsConversationStorage
from .base import ConversationStorage, ConversationSummary
from .records import Capabilities, IfRevision, RecordStore
from .registry import open_storage, register_backend

__all__ = [
    "Capabilities",
    "ConversationStorage",
    "ConversationSummary",
    "DataknobsConversationStorage",
    "IfRevision",
    "RecordStore",
    "open_storage",
    "register_backend",
]
