"""Conversation nodes and their ids."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from ._json import copy_json
from .message import Message, MessageRecord

__all__ = ["NODE_ID_HEX_LENGTH", "ConversationNode", "new_node_id"]

NODE_ID_HEX_LENGTH = 12
"""Length of a generated node id: 12 hex digits (48 random bits)."""

_rng = random.Random(os.urandom(32))


def _reseed_after_fork() -> None:
    _rng.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=_reseed_after_fork)


def new_node_id() -> str:
    """Return a new random node id: 12 lowercase hex digits.

    Ids are opaque: they carry no position, so no operation ever renumbers a
    node, and they stay 12 characters however deep the tree grows. The
    generator is private to convtree, seeded from ``os.urandom`` and reseeded
    in forked children, so independent writers (threads, processes, machines)
    draw independent ids, and ``random.seed()`` in user code cannot make two
    writers collide. [`ConversationState`][convtree.ConversationState] also re-draws on the
    (1 in 2**48) chance of meeting an id already in the conversation.
    """
    return f"{_rng.getrandbits(4 * NODE_ID_HEX_LENGTH):0{NODE_ID_HEX_LENGTH}x}"


class NodeWatch(Protocol):
    """What a conversation does when one of its nodes is read or changed in place."""

    def reading(self, node: ConversationNode) -> None:
        """``node.metadata`` or ``node.message`` is handed out: it may be changed inside."""

    def changed(self, node: ConversationNode) -> None:
        """A field of ``node`` was assigned."""


class ConversationNode:
    """One node of the conversation tree: a message and what is known about it.

    Changing a node in place is saved like any other change: assigning a field
    (``node.branch_name = "b"``, ``node.metadata = {...}``, ``node.message =
    ...``) marks it changed, and a change made inside what ``node.metadata`` or
    ``node.message`` returned (``node.metadata["rating"] = 5``,
    ``node.message.content = "..."``) is found when the conversation is saved.

    Attributes:
        node_id: Stable, opaque id, unique within the conversation.
        message: The message, or ``None`` for a message-less root.
        timestamp: When the node was created (timezone-aware).
        branch_name: Optional human label for the branch this node starts.
        prompt_name: Optional name of the prompt template that produced it.
        metadata: Free JSON metadata (usage, cost, model, ...).
        extra: Fields of a newer format version that this version does not
            know; kept so that a load/save round trip does not drop them.
    """

    __slots__ = (
        "_branch",
        "_message",
        "_meta",
        "_prompt",
        "_stamp",
        "_stamp_text",
        "_watch",
        "extra",
        "node_id",
    )

    def __init__(
        self,
        node_id: str,
        message: Message | None,
        timestamp: datetime,
        *,
        branch_name: str | None = None,
        prompt_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.node_id = node_id
        self._message: Message | MessageRecord | None = message
        self._stamp = timestamp
        self._stamp_text: str | None = None
        self._branch = branch_name
        self._prompt = prompt_name
        self._meta: dict[str, Any] = {} if metadata is None else metadata
        self._watch: NodeWatch | None = None  # the conversation holding the node
        self.extra = extra

    @classmethod
    def _from_record(
        cls,
        node_id: str,
        message: MessageRecord | None,
        timestamp: datetime,
        branch_name: str | None,
        prompt_name: str | None,
        metadata: dict[str, Any] | None,
        extra: dict[str, Any] | None,
    ) -> ConversationNode:
        # A loaded node keeps its validated message record; ``message`` builds
        # the model on first access. Loading 10k nodes without building 10k
        # models is what keeps from_dict within its budget. The slots are set
        # directly: a keyword call per node was a tenth of a load.
        node = cls.__new__(cls)
        node.node_id = node_id
        node._message = message
        node._stamp = timestamp
        node._stamp_text = None
        node._branch = branch_name
        node._prompt = prompt_name
        node._meta = {} if metadata is None else metadata
        node._watch = None
        node.extra = extra
        return node

    @property
    def message(self) -> Message | None:
        """The message, or ``None`` for a message-less root."""
        watch = self._watch
        if watch is not None:
            watch.reading(self)
        return self._message_object()

    @message.setter
    def message(self, value: Message | None) -> None:
        self._message = value
        self._changed()

    def _ref_counts(self) -> tuple[int, int, int]:
        """Reference counts of what ``metadata`` and ``message`` hand out: the metadata
        dict, the message model, and the largest among the dicts and lists inside them.

        `_UNHELD` holds the same counts for a node that nobody else holds, measured
        on a probe node with this very function: a count above it means some caller
        still holds that object and may change it in place.
        """
        count = sys.getrefcount
        meta = count(self._meta)
        nested: list[Any] = [self._meta]
        model = 0
        message = self._message
        if isinstance(message, Message):  # else none, or a record nobody was handed
            model = count(message)
            nested.append(message.__dict__)
            extra = message.__pydantic_extra__
            if extra is not None:
                nested.append(extra)
            del extra
        del message
        inner = 0
        while nested:
            item = nested.pop()
            inner = max(inner, count(item))
            if type(item) is dict:
                nested.extend([v for v in item.values() if type(v) is dict or type(v) is list])
            else:
                nested.extend([v for v in item if type(v) is dict or type(v) is list])
            del item
        return meta, model, inner

    def _unheld(self) -> bool:
        """Whether nothing but this node holds what its ``message`` and ``metadata`` handed
        out, so that nothing can change them unseen (CPython: reference counts)."""
        if _UNHELD is None:
            return False
        meta, model, inner = self._ref_counts()
        return meta <= _UNHELD[0] and model <= _UNHELD[1] and inner <= _UNHELD[2]

    def _message_object(self) -> Message | None:
        """The message, built from its record on first use; not a read that may change it."""
        message = self._message
        if type(message) is dict:
            # Already validated as a MessageRecord, so this cannot fail.
            message = self._message = Message.model_validate(message)
        return message  # type: ignore[return-value]

    @property
    def metadata(self) -> dict[str, Any]:
        """Free JSON metadata (usage, cost, model, a rating, ...); change it in place freely."""
        watch = self._watch
        if watch is not None:
            watch.reading(self)
        return self._meta

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        self._meta = value
        self._changed()

    @property
    def branch_name(self) -> str | None:
        """Optional human label for the branch this node starts."""
        return self._branch

    @branch_name.setter
    def branch_name(self, value: str | None) -> None:
        self._branch = value
        self._changed()

    @property
    def prompt_name(self) -> str | None:
        """Optional name of the prompt template that produced the node."""
        return self._prompt

    @prompt_name.setter
    def prompt_name(self, value: str | None) -> None:
        self._prompt = value
        self._changed()

    def _changed(self) -> None:
        watch = self._watch
        if watch is not None:
            watch.changed(self)

    @property
    def has_message(self) -> bool:
        """Whether the node holds a message (only a root may not)."""
        return self._message is not None

    @property
    def timestamp(self) -> datetime:
        """When the node was created (timezone-aware)."""
        return self._stamp

    @timestamp.setter
    def timestamp(self, value: datetime) -> None:
        self._stamp = value
        self._stamp_text = None
        self._changed()

    def _timestamp_text(self) -> str:
        # isoformat() was a third of to_dict's time; a node's timestamp rarely changes.
        text = self._stamp_text
        if text is None:
            text = self._stamp_text = self._stamp.isoformat()
        return text

    @property
    def role(self) -> str | None:
        """The message's role, or ``None`` for a message-less root."""
        message = self._message
        if message is None:
            return None
        return message["role"] if type(message) is dict else message.role  # type: ignore[union-attr]

    @property
    def content(self) -> Any:
        """The message's content, or ``None`` for a message-less root."""
        message = self._message
        if type(message) is dict:
            return message.get("content")
        return None if message is None else message.content  # type: ignore[union-attr]

    @property
    def text(self) -> str | None:
        """The message's text ([`Message.text`][convtree.Message.text]: the content string,
        or its text parts joined), read without handing the message out (so nothing is
        watched); ``None`` for a message-less root."""
        message = self._message
        if message is None:
            return None
        if type(message) is dict:
            content = message.get("content")
            if content is None or type(content) is str:
                return content or ""
        return self._message_object().text  # type: ignore[union-attr]

    def message_dict(self) -> dict[str, Any] | None:
        """The message as a new JSON-compatible dict ([`to_dict()`][convtree.Message.to_dict]).

        ``None`` for a message-less root.
        """
        message = self._message
        if type(message) is dict and len(message) == 2:
            content = message.get("content")
            if type(content) is str:  # the common {"role", "content": text}: no model needed
                return {"role": message["role"], "content": content}
        message = self._message_object()
        return None if message is None else message.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Return the node as a new JSON-compatible dict (its record in a document)."""
        out: dict[str, Any] = {
            "node_id": self.node_id,
            "message": self.message_dict(),
            "timestamp": self._timestamp_text(),
        }
        if self._branch is not None:
            out["branch_name"] = self._branch
        if self._prompt is not None:
            out["prompt_name"] = self._prompt
        meta = self._meta
        out["metadata"] = copy_json(meta, "metadata") if meta else {}
        if self.extra:
            for key, value in self.extra.items():
                out[key] = copy_json(value, key)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConversationNode):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def _repr_html_(self) -> str:
        from .render import node_html

        return node_html(self)

    def __repr__(self) -> str:
        message = self._message_object()
        if message is None:
            return f"ConversationNode({self.node_id!r}, root)"
        text = message.text
        if len(text) > 40:
            text = text[:37] + "..."
        return f"ConversationNode({self.node_id!r}, {message.role}: {text!r})"


def _measure_unheld() -> tuple[int, int, int] | None:
    """`ConversationNode._ref_counts()` of a node that nobody else holds, or ``None``
    where reference counts cannot tell (no ``sys.getrefcount``, or unstable counts)."""
    if not hasattr(sys, "getrefcount"):  # pragma: no cover - CPython has it
        return None
    from datetime import timezone

    def probe() -> ConversationNode:
        record: Any = {
            "role": "user",
            "content": [{"type": "text", "text": "probe"}],
            "metadata": {"a": {"b": [1]}},
            "extra": {"c": [2]},
        }
        node = ConversationNode._from_record(
            "probe", record, datetime.now(timezone.utc), None, None, {"d": {"e": [3]}}, None
        )
        node._message_object()
        return node

    node = probe()
    unheld = node._ref_counts()
    if probe()._ref_counts() != unheld:  # pragma: no cover - counts should be stable
        return None
    holds: tuple[Callable[[ConversationNode], Any], ...] = (
        lambda n: n._meta,
        lambda n: n._meta["d"]["e"],
        lambda n: n._message,
        lambda n: n._message_object().metadata["a"]["b"],  # type: ignore[union-attr,index,call-overload]
    )
    for hold in holds:
        held = hold(node)  # one value held from outside, nothing else
        shows = any(c > u for c, u in zip(node._ref_counts(), unheld, strict=True))
        del held
        if not shows:  # pragma: no cover - a held value must show
            return None
    return unheld


_UNHELD = _measure_unheld()
