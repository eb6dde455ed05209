"""Replaying a branch step by step, and re-running it with another model.

[`replay()`][convtree.ConversationState.replay] walks the path to a node and yields, for each
message, what the model saw (the messages before it) and the alternatives at
that point. [`rerun()`][convtree.ConversationState.rerun] walks the same path and asks a
function of yours for a new reply at every assistant turn, storing the new
replies as a sibling branch, so that [`diff()`][convtree.ConversationState.diff] can put the
two side by side.

The walk is written once, as a generator that yields the contexts to answer
and receives the replies (`_rerun_plan()`); `rerun()` and
`arerun()` only drive it, with a plain or an async function.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import FormatError, TreeOperationError
from .message import Message

if TYPE_CHECKING:
    from .node import ConversationNode
    from .state import ConversationState, NodeRef, SiblingPosition

__all__ = ["ReplayStep", "Reply", "Respond", "arerun", "replay", "rerun"]

Reply: TypeAlias = str | Message | Mapping[str, Any] | tuple[Any, Mapping[str, Any]]
"""What ``respond`` returns: text, a [`Message`][convtree.Message], an OpenAI-style message
dict, or ``(one of those, node_metadata)`` to store usage, model name, ... with it."""

Respond: TypeAlias = Callable[[list[dict[str, Any]]], Reply | Awaitable[Reply]]
"""``respond(messages) -> reply``: OpenAI-style message dicts in (the context)."""


@dataclass(frozen=True, eq=False)
class ReplayStep:
    """One message of a replayed branch and what surrounded it.

    Attributes:
        index: The step's number, from 0 (the first message of the path).
        node: The node of this step.
        position: Where it stands among its alternatives (``str()``: ``"2 / 3"``).
        alternatives: All children of its parent, itself included, in sibling order.
    """

    index: int
    node: ConversationNode
    position: SiblingPosition
    alternatives: Sequence[ConversationNode]
    _messages: Sequence[Message] = field(repr=False)

    @property
    def message(self) -> Message:
        """The message of this step."""
        message = self.node._message_object()
        assert message is not None  # replay skips a message-less root
        return message

    @property
    def context(self) -> list[Message]:
        """The messages before this step: what was sent to the model for it.

        Built when read (O(index)), so replaying a long path stays linear.
        """
        return list(self._messages[: self.index])

    def _repr_html_(self) -> str:
        from .render import node_html

        return (
            f'<div class="convtree-step" style="font-family:system-ui,sans-serif">'
            f'<div style="color:#666;font-size:12px">step {self.index} · alternative '
            f"{self.position} · {self.index} message(s) of context</div>"
            f"{node_html(self.node)}</div>"
        )

    def __repr__(self) -> str:
        return (
            f"<ReplayStep {self.index}: {self.node!r}, alternative {self.position}, "
            f"{self.index} message(s) of context>"
        )


def replay(state: ConversationState, ref: NodeRef | None = None) -> Iterator[ReplayStep]:
    """The steps along the path to ``ref`` (default: the cursor), root first.

    A message-less root is not a step. Linear in the path's length.
    """
    nodes = [node for node in state.get_path(ref) if node.has_message]
    messages = [node._message_object() for node in nodes]
    for i, node in enumerate(nodes):
        parent = state.parent(node)
        yield ReplayStep(
            index=i,
            node=node,
            position=state.sibling_position(node),
            alternatives=[node] if parent is None else state.children(parent),
            _messages=messages,  # type: ignore[arg-type]  # these nodes have messages
        )


# ------------------------------------------------------------------- re-running


_Planned = tuple["ConversationNode", list[tuple[Message, dict[str, Any]]]]


def _rerun_plan(
    state: ConversationState, ref: NodeRef | None, start: NodeRef | None
) -> Generator[list[dict[str, Any]], Reply, _Planned]:
    """Yield each assistant turn's context, receive its reply; return where and what to add.

    Nothing is added here: the new branch is attached in one go once every
    reply is in, so a ``respond`` that fails leaves the conversation unchanged.
    """
    path = [node for node in state.get_path(ref) if node.has_message]
    first = 0
    if start is not None:
        start_node = state.get_node(start)
        first = next((i for i, node in enumerate(path) if node is start_node), -1)
        if first < 0:
            raise TreeOperationError(f"node {start_node.node_id!r} is not on that path")
    fork = next((i for i in range(first, len(path)) if path[i].role == "assistant"), None)
    if fork is None:
        raise TreeOperationError("no assistant turn to re-run on that path")
    parent = state.parent(path[fork])
    if parent is None:
        raise TreeOperationError(f"cannot re-run the root {path[fork].node_id!r}")
    context = [_message(node).to_openai() for node in path[:fork]]
    planned: list[tuple[Message, dict[str, Any]]] = []
    calls: dict[str, str] = {}  # original tool call id -> the re-run reply's same call
    for original in path[fork:]:
        metadata: dict[str, Any] = {"rerun_of": original.node_id}
        if original.role == "assistant":
            reply = yield list(context)
            message, extra = _as_message(reply, original.node_id)
            metadata.update(extra)
            calls = _same_calls(_message(original), message)
        else:
            message = _message(original)
            if message.tool_call_id is not None:
                new_id = calls.get(message.tool_call_id)
                if new_id is None:
                    break  # the new reply did not make this call: its result does not apply
                if new_id != message.tool_call_id:
                    message = message.model_copy(update={"tool_call_id": new_id})
        planned.append((message, metadata))
        context.append(message.to_openai())
    return parent, planned


def _same_calls(original: Message, reply: Message) -> dict[str, str]:
    """Original call id -> id of the reply's call with the same function and arguments."""
    offered: dict[tuple[str, str], list[str]] = {}
    for call in reply.tool_calls or ():
        key, call_id = _call_key(call)
        if call_id is not None:
            offered.setdefault(key, []).append(call_id)
    same: dict[str, str] = {}
    for call in original.tool_calls or ():
        key, call_id = _call_key(call)
        ids = offered.get(key)
        if call_id is not None and ids:
            same[call_id] = ids.pop(0)
    return same


def _call_key(call: Mapping[str, Any]) -> tuple[tuple[str, str], str | None]:
    function = call.get("function")
    name = args = ""
    if isinstance(function, Mapping):
        name, args = str(function.get("name", "")), str(function.get("arguments", ""))
    call_id = call.get("id")
    return (name, args), call_id if isinstance(call_id, str) else None


def _apply(
    state: ConversationState, planned: _Planned, branch_name: str | None
) -> ConversationNode:
    node, messages = planned
    for i, (message, metadata) in enumerate(messages):
        node = state.add(
            message, parent_id=node, branch_name=None if i else branch_name, metadata=metadata
        )
    return node


def _message(node: ConversationNode) -> Message:
    message = node._message_object()
    assert message is not None  # only a root may have none, and it is skipped
    return message


def rerun(
    state: ConversationState,
    ref: NodeRef | None,
    respond: Respond,
    *,
    start: NodeRef | None = None,
    branch_name: str | None = None,
) -> ConversationNode:
    """Drive `_rerun_plan()` with a plain function (see
    [`rerun()`][convtree.ConversationState.rerun] )."""
    if _is_async(respond):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(arerun(state, ref, respond, start=start, branch_name=branch_name))
        raise TypeError(
            "respond is async and an event loop is running (a notebook?): "
            "use `await state.arerun(...)`"
        )
    plan = _rerun_plan(state, ref, start)
    try:
        context = next(plan)
        while True:
            reply = respond(context)
            if inspect.isawaitable(reply):
                if inspect.iscoroutine(reply):
                    reply.close()
                raise TypeError("respond returned an awaitable: use `await state.arerun(...)`")
            context = plan.send(reply)
    except StopIteration as done:
        return _apply(state, done.value, branch_name)


async def arerun(
    state: ConversationState,
    ref: NodeRef | None,
    respond: Respond,
    *,
    start: NodeRef | None = None,
    branch_name: str | None = None,
) -> ConversationNode:
    """`rerun()` for a plain or an async ``respond``."""
    plan = _rerun_plan(state, ref, start)
    try:
        context = next(plan)
        while True:
            reply = respond(context)
            if inspect.isawaitable(reply):
                reply = await reply
            context = plan.send(reply)
    except StopIteration as done:
        return _apply(state, done.value, branch_name)


def _is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _as_message(reply: object, replacing: str) -> tuple[Message, dict[str, Any]]:
    """Turn what ``respond`` returned into an assistant message and node metadata."""
    metadata: dict[str, Any] = {}
    if isinstance(reply, tuple):
        pair: tuple[Any, ...] = reply
        if len(pair) != 2 or not isinstance(pair[1], Mapping):
            raise FormatError(
                f"respond returned a tuple for the re-run of {replacing!r}; "
                "return (reply, metadata_dict) or the reply alone"
            )
        reply, metadata = pair[0], dict(pair[1])
    if isinstance(reply, str):
        return Message(role="assistant", content=reply), metadata
    if isinstance(reply, Message):
        return reply, metadata
    if isinstance(reply, Mapping):
        fields = dict(reply)
        fields.setdefault("role", "assistant")
        try:
            return Message.from_dict(fields), metadata
        except FormatError as exc:
            raise FormatError(f"respond's reply for the re-run of {replacing!r}: {exc}") from None
    raise FormatError(
        f"respond returned {type(reply).__name__} for the re-run of {replacing!r}; "
        "return text, a Message, a message dict, or (one of those, metadata)"
    )
