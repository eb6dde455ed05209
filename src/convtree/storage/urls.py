"""Parsing storage URLs: paths, query parameters, identifiers, masked passwords.

``open_storage`` lives in :mod:`convtree.storage.registry`; it is re-exported
here for code written against earlier versions.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import StorageError

__all__ = [
    "DEFAULT_STORE",
    "default_store_url",
    "identifier",
    "local_path",
    "mask_url",
    "query",
    "scrub",
]

DEFAULT_STORE = Path("~/.local/share/convtree/conversations.db")
"""Where the embedded default SQLite store lives."""

# Lower case only: PostgreSQL folds unquoted names to lower case, so "Foo" and
# "foo" would be one table under two names. \Z, not $: "$" matches before "\n".
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")


def default_store_url() -> str:
    """``$CONVTREE_STORE``, or the embedded default SQLite file."""
    return os.environ.get("CONVTREE_STORE") or f"sqlite:///{DEFAULT_STORE.expanduser()}"


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def scrub(message: str, url: str) -> str:
    """``message`` with the URL's password (raw or percent-decoded) replaced by ``***``."""
    password = urlsplit(url).password
    if password:
        message = message.replace(password, "***").replace(unquote(password), "***")
    return message


def query(url: str) -> dict[str, str]:
    """The URL's query parameters (the last value of each)."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def local_path(url: str, what: str) -> Path:
    """The local path of a ``scheme:///path`` URL."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise StorageError(f"{what} URL {url!r} must be {parts.scheme}:///absolute/path")
    path = unquote(parts.path)
    if not path or path == "/":
        raise StorageError(f"{what} URL {url!r} has no path")
    return Path(path).expanduser()


def identifier(value: str, what: str, url: str) -> str:
    """A SQL identifier from a URL, checked: lower-case letters, digits, ``_``."""
    if not _IDENT.match(value):
        raise StorageError(
            f"{what} {value!r} in {mask_url(url)!r} must be a lower-case SQL identifier "
            "(a-z, 0-9, _; not starting with a digit; at most 63 characters)"
        )
    return value


def __getattr__(name: str) -> Any:
    if name == "open_storage":  # moved to convtree.storage.registry
        from .registry import open_storage

        return open_storage
    raise AttributeError(name)
