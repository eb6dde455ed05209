"""Parsing storage URLs: paths, query parameters, identifiers, masked passwords.

Local paths in URLs follow the convention users already know for each scheme
(`local_path()`): ``sqlite:`` is SQLAlchemy's (``sqlite:///chats.db`` is
``./chats.db``, ``sqlite:////var/db/chats.db`` is absolute) and ``file:`` is the
standard file URI of RFC 8089, which ``Path.as_uri()`` writes
(``file:///var/store`` is absolute, ``file:store`` is ``./store``).

``open_storage`` lives in `registry`; it is re-exported
here for code written against earlier versions.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PureWindowsPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from urllib.request import url2pathname

from ..errors import StorageError

__all__ = [
    "default_store_path",
    "default_store_url",
    "identifier",
    "local_path",
    "mask_url",
    "path_url",
    "query",
    "scrub",
]

# Lower case only: PostgreSQL folds unquoted names to lower case, so "Foo" and
# "foo" would be one table under two names. \Z, not $: "$" matches before "\n".
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")

# Schemes whose paths follow SQLAlchemy: "sqlite:///" + the path as written.
_SQLALCHEMY_STYLE = frozenset({"sqlite"})


def default_store_path() -> Path:
    """Where the embedded default SQLite store lives, by the platform's conventions.

    ``platformdirs.user_data_dir``: ``$XDG_DATA_HOME/convtree`` (else
    ``~/.local/share/convtree``) on Linux, ``~/Library/Application Support/convtree``
    on macOS, ``%LOCALAPPDATA%\\convtree`` on Windows; the file is
    ``conversations.db`` in it.
    """
    from platformdirs import user_data_dir

    return Path(user_data_dir("convtree", appauthor=False)) / "conversations.db"


def default_store_url() -> str:
    """``$CONVTREE_STORE``, or the URL of `default_store_path()`."""
    return os.environ.get("CONVTREE_STORE") or path_url("sqlite", default_store_path())


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
    """The absolute local path a ``sqlite:`` or ``file:`` URL names.

    ``sqlite:`` follows SQLAlchemy: ``sqlite:///`` then the path as written, so
    three slashes start a relative path and four an absolute one
    (``sqlite:///chats.db``, ``sqlite:////var/db/chats.db``,
    ``sqlite:///C:/db/chats.db``). Any other scheme (``file:``) is a standard file
    URI (RFC 8089, what ``Path.as_uri()`` writes): ``file:///var/store`` and
    ``file://localhost/var/store`` are absolute, ``file:store`` is relative. ``~``
    is the home directory; a relative path is resolved against the current
    directory now, so the store does not move if the process changes directory.

    Raises:
        StorageError: the URL names a host, has no path, is a ``sqlite:`` URL
            without ``//``, or is a three-slash ``sqlite:`` URL that surely
            means the absolute path earlier convtree versions read it as
            (``sqlite:///tmp/x.db`` beside ``/tmp``): write four slashes for an
            absolute path, ``sqlite:///./x.db`` for a relative one.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in _SQLALCHEMY_STYLE:
        if parts.netloc or not url.partition(":")[2].startswith("//"):
            raise StorageError(
                f"{what} URL {url!r} must be {scheme}:///relative/path or "
                f"{scheme}:////absolute/path (SQLAlchemy's form)"
            )
        written = unquote(parts.path[1:])
        if written.strip("/") in ("", ":memory:"):
            raise StorageError(f"{what} URL {url!r} has no path (memory:// is the store in memory)")
        _refuse_legacy_absolute(url, what, written)
    else:
        if parts.netloc not in ("", "localhost"):
            raise StorageError(
                f"{what} URL {url!r} names the host {parts.netloc!r}: write "
                f"{scheme}:///absolute/path or {scheme}:relative/path"
            )
        written = url2pathname(parts.path)
        if written.strip("/\\") == "":
            raise StorageError(f"{what} URL {url!r} has no path")
    try:
        return Path(os.path.abspath(Path(written).expanduser()))
    except OSError as exc:  # the current directory was deleted
        raise StorageError(f"{what} URL {url!r}: cannot resolve the path ({exc})") from None


def _refuse_legacy_absolute(url: str, what: str, written: str) -> None:
    """Refuse ``sqlite:///tmp/x.db`` where it surely means ``/tmp/x.db``.

    Earlier convtree versions read three slashes as an absolute path. A relative
    path whose first part exists at the file system root but not in the current
    directory (``tmp/x.db`` beside ``/tmp``, ``chats.db`` beside ``/chats.db``)
    is refused with both spellings; ``./`` marks a relative path on purpose.
    """
    path = Path(written)
    if path.is_absolute() or PureWindowsPath(written).drive or written.startswith(("./", "~")):
        return
    try:
        cwd = Path.cwd()
    except OSError:
        return  # local_path reports it
    root = Path(cwd.anchor)
    first = path.parts[0]
    if (root / first).exists() and not (cwd / first).exists():
        raise StorageError(
            f"{what} URL {url!r} is ambiguous: three slashes start a path relative to the "
            f"current directory (SQLAlchemy's convention), {cwd / path}, but {root / first} "
            f"exists and {cwd / first} does not (earlier convtree versions read this URL as "
            f"{root / path}). Write sqlite:///{(root / path).as_posix()} for the absolute "
            f"path, or sqlite:///./{path.as_posix()} for the relative one"
        )


def path_url(scheme: str, path: Path | str) -> str:
    """The URL of a local path by the scheme's convention; `local_path()` reads it back.

    ``path_url("sqlite", "/var/db/x.db") == "sqlite:////var/db/x.db"``;
    ``path_url("file", "/var/store") == "file:///var/store"``. A relative path is
    made absolute first.
    """
    absolute = Path(os.path.abspath(path))
    if scheme in _SQLALCHEMY_STYLE:
        return f"{scheme}:///{quote(absolute.as_posix(), safe='/:~')}"
    return f"{scheme}:{absolute.as_uri().partition(':')[2]}"


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
