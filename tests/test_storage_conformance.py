"""The conformance suite, unchanged, over memory, file, SQLite, S3 (moto) and PostgreSQL."""

from __future__ import annotations

from convtree.testing import StorageConformance


class TestEveryBackend(StorageConformance):
    """``store_url`` (tests/conftest.py) is parametrized over the five backends."""
