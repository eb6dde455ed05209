"""``--format openai``: a file holding one JSON array of Chat Completions messages.

The file format behind [`FORMATS["openai"]`][convtree.interop.FORMATS]; the
conversion itself is [`convtree.interop.openai`][convtree.interop.openai]'s
``from_messages`` / ``to_messages``.

A message list holds one conversation, one path, and carries no ids or times.
So that importing the same file twice finds the conversation it made the first
time, what the list lacks is derived from the file, never invented at random:

- the conversation id is ``openai-`` and 16 hex digits of the SHA-256 of the
  file's absolute path (the same file imports under the same id);
- node ids are ``root`` for the message-less root, then ``m1``, ``m2``, ... in
  message order;
- every timestamp (nodes, ``created_at``, ``updated_at``) is the file's
  modification time, in UTC;
- ``metadata``: ``title`` is the file name without its extension, ``source``
  is ``"openai"``.

Writing: ``active`` writes the path to the cursor. A message list cannot hold
a tree: ``tree`` is refused for a conversation that branches (one that does
not is its own active path), and a file holds one conversation, so writing
several (or ``branches`` of a branching one) is refused too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, overload

from ..errors import FormatError
from ..state import ConversationState
from . import openai as _openai
from ._fields import mode_error
from ._source import BaseReader, Dest, Skipped, Source, iter_objects, write_array

__all__ = ["FORMAT", "ROOT_ID", "conversation_id_for", "from_dict", "looks_like", "read", "write"]

FORMAT = "openai"
ROOT_ID = "root"
"""The id of the message-less root of an imported message list."""


def looks_like(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` (the first item of a top-level array) is a Chat Completions message."""
    return (
        isinstance(obj.get("role"), str)
        and "nodes" not in obj
        and "mapping" not in obj
        and "messages" not in obj
    )


def conversation_id_for(path: str | os.PathLike[str]) -> str:
    """The id a message-list file imports under: ``openai-`` + hash of its absolute path."""
    absolute = os.path.abspath(os.fsdecode(path))
    return "openai-" + hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def from_dict(
    messages: Iterable[Mapping[str, Any]],
    *,
    conversation_id: str | None = None,
    title: str | None = None,
    when: datetime | None = None,
) -> ConversationState:
    """A linear conversation from a message list, with stable node ids and times.

    Args:
        messages: The Chat Completions messages, oldest first.
        conversation_id: Its id (a new UUID when ``None``).
        title: ``metadata["title"]``, when given.
        when: Every timestamp (default: now).

    Raises:
        FormatError: a message does not have the Chat Completions shape (the
            path names it: ``messages[3].role``).
    """
    metadata = {"title": title} if title is not None else None
    state = _openai.from_messages(messages, conversation_id=conversation_id, metadata=metadata)
    doc = state.to_dict()
    stamp = (when or datetime.now(timezone.utc)).isoformat()
    renamed: dict[str, str] = {}
    for i, node in enumerate(doc["nodes"]):
        renamed[node["node_id"]] = ROOT_ID if i == 0 else f"m{i}"
        node["node_id"] = renamed[node["node_id"]]
        node["timestamp"] = stamp
    doc["edges"] = [[renamed[a], renamed[b]] for a, b in doc["edges"]]
    doc["current_node_id"] = renamed[doc["current_node_id"]]
    doc["created_at"] = doc["updated_at"] = stamp
    return ConversationState.from_dict(doc)


@overload
def to_dict(
    state: ConversationState, *, mode: Literal["tree", "active"] = "active"
) -> list[dict[str, Any]]: ...
@overload
def to_dict(
    state: ConversationState, *, mode: Literal["branches"]
) -> list[list[dict[str, Any]]]: ...


def to_dict(
    state: ConversationState, *, mode: Literal["tree", "active", "branches"] = "active"
) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    """The message list of the active path; for ``branches``, one list per leaf.

    Raises:
        FormatError: ``tree`` for a conversation that branches (a list holds one
            path); a node on the path whose role Chat Completions does not have.
    """
    lists = _lists(state, mode)
    return lists if mode == "branches" else lists[0]


def _lists(state: ConversationState, mode: str) -> list[list[dict[str, Any]]]:
    if mode == "branches":
        return [_messages(state, leaf.node_id) for leaf in state.leaves()]
    if mode == "tree" and state.leaf_count > 1:
        raise FormatError(
            f"conversation {state.conversation_id!r} has {state.leaf_count} branches and an "
            "OpenAI message list holds one path: export it with --mode active or branches"
        )
    if mode not in ("tree", "active"):
        raise mode_error(mode)
    return [_messages(state, None)]


def _messages(state: ConversationState, end: str | None) -> list[dict[str, Any]]:
    return [dict(message) for message in _openai.to_messages(state, end)]


class FileReader(BaseReader):
    """The one conversation of a message-list file (what a `Reader` is for the other formats).

    Attributes:
        skipped: The file, when it cannot be imported (not a list of messages).
        count: Conversations yielded so far (0 or 1).
    """

    def __init__(self, source: Source, *, errors: Literal["skip", "raise"] = "skip") -> None:
        """Prepare to read ``source``: a path, or an open binary file that has a ``name``."""
        super().__init__(errors)
        self._source = source
        self._done = False

    def __next__(self) -> ConversationState:
        if self._done:
            raise StopIteration
        self._done = True
        name = _name_of(self._source)
        try:
            state = self._load(name)
        except FormatError as exc:
            if self._raise:
                raise
            self.skipped.append(Skipped(0, None, name, exc))
            raise StopIteration from None
        self.count = 1
        return state

    def _load(self, name: str | None) -> ConversationState:
        if name is None:
            raise FormatError(
                "an OpenAI message list is imported from a file: its id comes from the file's path",
                path="<stream>",
            )
        if not isinstance(self._source, (str, bytes, os.PathLike)):
            raise FormatError("give the path of the file, not an open file", path=name)
        if os.path.isdir(name):
            raise FormatError(
                "a directory: an OpenAI message list is one conversation per file, give the files",
                path=name,
            )
        try:
            when = datetime.fromtimestamp(os.stat(name).st_mtime, timezone.utc)
        except OSError as exc:
            raise FormatError(f"cannot read {name}: {exc.strerror or exc}", path=name) from None
        messages: list[dict[str, Any]] = []
        for _file, index, obj in iter_objects(self._source):
            if not looks_like(obj):
                raise FormatError(
                    "not a Chat Completions message (no 'role')", path=f"{name}[{index}]"
                )
            messages.append(obj)
        try:
            return from_dict(
                messages,
                conversation_id=conversation_id_for(name),
                title=Path(name).stem,
                when=when,
            )
        except FormatError as exc:
            inner = exc.path or ""
            if inner.startswith("messages"):
                inner = inner[len("messages") :]
            raise FormatError(exc.reason, path=f"{name}{inner}", node_id=exc.node_id) from None

    def close(self) -> None:
        """Nothing stays open between items; here for the `Reader` interface."""
        self._done = True


def _name_of(source: Source) -> str | None:
    if isinstance(source, (str, bytes, os.PathLike)):
        return os.fsdecode(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else None


def read(source: Source, *, errors: Literal["skip", "raise"] = "skip") -> FileReader:
    """The conversation of a message-list file (see the module docs for ids and times)."""
    return FileReader(source, errors=errors)


def write(
    states: Iterable[ConversationState],
    dest: Dest,
    *,
    mode: Literal["tree", "active", "branches"] = "active",
) -> int:
    """Write one conversation's message list (a path atomically).

    Returns:
        1: the number of conversations written.

    Raises:
        FormatError: not exactly one conversation (or path) to write, or a
            ``tree`` that branches (see [`to_dict`][convtree.interop._openai_file.to_dict]).
    """
    lists: list[list[dict[str, Any]]] = []
    for state in states:
        lists.extend(_lists(state, mode))
        if len(lists) > 1:
            raise FormatError(
                "an OpenAI message-list file holds one conversation: export one conversation "
                "(and, for a branching one, --mode active), or choose another format"
            )
    if not lists:
        raise FormatError("no conversation to write")
    write_array(lists[0], dest)
    return 1
