"""Persisting conversations: the storage interface, the dataknobs-data adapter, URLs.

Importing this package does not import dataknobs-data; opening a store does.
"""

from __future__ import annotations

from .adapter import DataknobsConversationStorage
from .base import ConversationStorage, ConversationSummary
from .urls import open_storage

__all__ = [
    "ConversationStorage",
    "ConversationSummary",
    "DataknobsConversationStorage",
    "open_storage",
]
