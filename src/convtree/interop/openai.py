"""OpenAI message lists and Responses API items, into and out of a conversation.

Two shapes of "the conversation so far" that OpenAI's APIs take:

* Chat Completions **messages** (``client.chat.completions.create(messages=...)``):
  [`from_messages()`][convtree.interop.openai.from_messages] turns such a list into
  a linear conversation, [`to_messages()`][convtree.interop.openai.to_messages]
  gives the path to any node back as a list the client accepts, typed
  ``list[ChatCompletionMessageParam]``.
* Responses API **items** (``client.responses.create(input=...)``, and what the
  OpenAI Agents SDK's sessions store, ``TResponseInputItem``):
  [`from_items()`][convtree.interop.openai.from_items] (a node per item) and
  [`to_items()`][convtree.interop.openai.to_items], typed
  ``list[ResponseInputItemParam]``.

Both round trips are exact: ``to_messages(from_messages(x)) == x`` for every
message shape the Chat Completions API takes, ``to_items(from_items(x)) == x``
for every item. What has no convtree field is kept under ``"openai"`` in the
node's metadata. The ``openai`` package is not needed at run time: its types are
only imported for type checkers, and its pydantic models (a
``ChatCompletionMessage`` from a response) are accepted wherever a dict is.
See docs/import-export/openai.md for the field-by-field mapping.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, cast

from pydantic import BaseModel

from .._json import MAX_DEPTH, copy_json
from ..errors import FormatError
from ..format import CURRENT_SCHEMA_VERSION
from ..node import ConversationNode, new_node_id
from ..state import ConversationState, NodeRef

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.responses import ResponseInputItemParam

__all__ = [
    "CHAT_ROLES",
    "MESSAGE_KEYS",
    "NAMESPACE",
    "from_items",
    "from_messages",
    "to_items",
    "to_messages",
]

NAMESPACE: Final = "openai"
"""The key of node metadata (``node.metadata["openai"]``) holding what has no convtree field.

``{"null_fields": [...]}``: convtree fields the source message gave as ``null``;
``{"content_absent": true}``: the message had no ``content`` key;
``{"item": {...}}``: the Responses item's fields that are not in the message.
"""

CHAT_ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")
"""The roles of Chat Completions messages."""

MESSAGE_KEYS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "system": ("name",),
        "developer": ("name",),
        "user": ("name",),
        "assistant": ("name", "tool_calls", "function_call", "refusal", "audio"),
        "tool": ("tool_call_id",),
        "function": ("name",),
    }
)
"""The keys [`to_messages()`][convtree.interop.openai.to_messages] writes per role,
besides ``role`` and ``content``: those the API's message type for the role has.

Other fields a message holds (``annotations`` of a response, a ``name`` on a
tool message, fields of other providers) stay in the conversation but are not
sent; ``audio`` is sent as ``{"id": ...}``, all the API takes back.
"""

_KNOWN_OPTIONAL = ("name", "tool_calls", "tool_call_id", "function_call", "metadata")
# Responses item types that become a message with a Chat Completions form.
_CALL_TYPES = {"function_call": "function", "custom_tool_call": "custom"}
_OUTPUT_TYPES = ("function_call_output", "custom_tool_call_output")
_ITEM_ROLES = ("user", "assistant", "system", "developer")


# --------------------------------------------------------------------- Chat Completions


def from_messages(
    messages: Iterable[Mapping[str, Any] | BaseModel],
    *,
    conversation_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ConversationState:
    """A linear conversation holding Chat Completions messages, the cursor on the last.

    Accepts what the ``openai`` package works with: plain dicts, its typed
    dicts (``ChatCompletionMessageParam``) and its pydantic models
    (``ChatCompletionMessage`` from ``completion.choices[0].message``: the
    fields the API sent are kept, the ones it did not are not invented). Every
    field is kept: ``role``, ``content`` (text or content parts), ``name``,
    ``tool_calls``, ``tool_call_id``, ``function_call`` in their convtree
    fields; ``refusal``, ``audio``, ``annotations`` and any other field on the
    [`Message`][convtree.Message] as it is, ``null`` values included.

    Args:
        messages: The messages, oldest first.
        conversation_id: Id of the new conversation; a new UUID4 hex when ``None``.
        metadata: Conversation metadata; ``source`` is ``"openai"`` unless given.

    Returns:
        A conversation: a message-less root, then one node per message, each
        with a new random id and the time of the import as its timestamp.

    Raises:
        FormatError: a message does not have the Chat Completions shape; the
            path names it, e.g. ``messages[3].tool_calls[0].function.arguments``.

    Example:
        ```python
        state = from_messages([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ])
        state.add_message("assistant", "Hello!")
        to_messages(state)[-1]  # {'role': 'assistant', 'content': 'Hello!'}
        ```
    """
    records: list[tuple[str | None, dict[str, Any], dict[str, Any]]] = []
    for i, raw in enumerate(_sequence(messages, "messages")):
        path = f"messages[{i}]"
        message = _as_dict(raw, path, "a message")
        _check_chat_message(message, path)
        records.append((None, *_message_record(message, path)))
    return _build(records, "messages", conversation_id, metadata)


def to_messages(
    state: ConversationState, ref: NodeRef | None = None, *, include_metadata: bool = False
) -> list[ChatCompletionMessageParam]:
    """The path to ``ref`` (default: the cursor) as Chat Completions messages.

    The result type-checks as the ``messages`` argument of
    ``client.chat.completions.create()`` (mypy --strict, no cast). Each message
    has ``role``, ``content``, and those keys of
    [`MESSAGE_KEYS`][convtree.interop.openai.MESSAGE_KEYS] for its role that it
    holds. A message imported by
    [`from_messages()`][convtree.interop.openai.from_messages] comes back as it
    was given (a ``null`` field stays ``null``, a missing ``content`` stays missing).
    Nodes imported from Responses items: a message item gives its role and
    content (``input_text``/``output_text`` parts become ``text`` parts,
    ``input_image`` ``image_url``, ``input_file`` ``file``), a function call an
    assistant ``tool_calls`` message, its output a ``tool`` message; items that
    Chat Completions cannot carry (reasoning, web search calls, ...) are left out.
    The message-less root contributes nothing. Nothing is shared with the state.

    Args:
        state: The conversation.
        ref: The last node of the path; the cursor when ``None``.
        include_metadata: Also write each message's convtree ``metadata`` (when
            non-empty). The API does not take that key: for your own storage only.

    Raises:
        FormatError: a node on the path has a role that is not a Chat
            Completions role, or is a tool message without ``tool_call_id`` (as
            ChatGPT's tool outputs are); the error names the node.
        NodeNotFoundError: ``ref`` names no node.
    """
    out: list[dict[str, Any]] = []
    for node in state.get_path(ref):
        message = node.message_dict()
        if message is None:
            continue
        info = _openai_info(node)
        item = info.get("item")
        if isinstance(item, dict):
            converted = _chat_from_item_node(node, message, item)
            if converted is not None:
                out.append(converted)
            continue
        out.append(_chat_message(node, message, info, include_metadata))
    return cast("list[ChatCompletionMessageParam]", out)


def _chat_message(
    node: ConversationNode, message: dict[str, Any], info: dict[str, Any], include_metadata: bool
) -> dict[str, Any]:
    role = message["role"]
    keys = MESSAGE_KEYS.get(role)
    if keys is None:
        raise FormatError(
            f"role {role!r} is not a Chat Completions role ({', '.join(CHAT_ROLES)})",
            path="message.role",
            node_id=node.node_id,
        )
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        # A tool message answers a call by its id (ChatGPT's browser and code outputs
        # have none): the API refuses one without it.
        raise FormatError(
            "a tool message without tool_call_id has no Chat Completions form "
            "(a tool message answers an assistant's tool call by its id)",
            path="message.tool_call_id",
            node_id=node.node_id,
        )
    nulls = info.get("null_fields")
    nulls = nulls if isinstance(nulls, list) else ()
    out: dict[str, Any] = {"role": role}
    content = message.get("content")
    if content is not None or info.get("content_absent") is not True:
        out["content"] = content
    for key in keys:
        if key in message:
            value = message[key]
            if key == "audio" and isinstance(value, dict):
                if "id" not in value:
                    continue
                value = {"id": value["id"]}
            out[key] = value
        elif key in nulls:
            out[key] = None
    if include_metadata and message.get("metadata"):
        out["metadata"] = message["metadata"]
    return out


def _check_chat_message(message: dict[str, Any], path: str) -> None:
    role = message.get("role")
    if "role" not in message:
        raise FormatError("a message needs a role", path=f"{path}.role")
    if role not in CHAT_ROLES:
        raise FormatError(
            f"role must be one of {', '.join(CHAT_ROLES)}, got {_show(role)}", path=f"{path}.role"
        )
    if "content" not in message:
        if role != "assistant":
            raise FormatError(f"a {role} message needs content", path=f"{path}.content")
    else:
        content = message["content"]
        if content is None:
            if role not in ("assistant", "function"):
                raise FormatError(
                    f"a {role} message needs content, got null", path=f"{path}.content"
                )
        elif role == "function":
            _need(message, "content", str, path, "a string or null")
        elif not isinstance(content, str):
            _check_chat_parts(content, f"{path}.content")
    for key in ("name", "tool_call_id", "refusal"):
        if message.get(key) is not None:
            _need(message, key, str, path, "a string")
    if role == "function":
        _need(message, "name", str, path, "a string")
    if role == "tool":
        _need(message, "tool_call_id", str, path, "a string")
    if message.get("tool_calls") is not None:
        calls = message["tool_calls"]
        if not isinstance(calls, list):
            raise FormatError(
                f"tool_calls must be a list, got {_show(calls)}", path=f"{path}.tool_calls"
            )
        for j, call in enumerate(calls):
            _check_tool_call(call, f"{path}.tool_calls[{j}]")
    if message.get("function_call") is not None:
        call = _need(message, "function_call", dict, path, "an object")
        _need(call, "name", str, f"{path}.function_call", "a string")
        _need(call, "arguments", str, f"{path}.function_call", "a string")
    if message.get("audio") is not None:
        audio = _need(message, "audio", dict, path, "an object")
        _need(audio, "id", str, f"{path}.audio", "a string")
    if message.get("metadata") is not None:
        _need(message, "metadata", dict, path, "an object")


def _check_tool_call(call: Any, path: str) -> None:
    if not isinstance(call, dict):
        raise FormatError(f"a tool call must be an object, got {_show(call)}", path=path)
    _need(call, "id", str, path, "a string")
    kind = _need(call, "type", str, path, "a string")
    if kind == "function":
        function = _need(call, "function", dict, path, "an object")
        _need(function, "name", str, f"{path}.function", "a string")
        _need(function, "arguments", str, f"{path}.function", "a string")
    elif kind == "custom":
        custom = _need(call, "custom", dict, path, "an object")
        _need(custom, "name", str, f"{path}.custom", "a string")
        _need(custom, "input", str, f"{path}.custom", "a string")


def _check_chat_parts(content: Any, path: str) -> None:
    if not isinstance(content, list):
        raise FormatError(
            f"content must be a string or a list of content parts, got {_show(content)}",
            path=path,
        )
    for j, part in enumerate(content):
        where = f"{path}[{j}]"
        if not isinstance(part, dict):
            raise FormatError(f"a content part must be an object, got {_show(part)}", path=where)
        kind = _need(part, "type", str, where, "a string")
        if kind in ("text", "refusal"):
            _need(part, kind, str, where, "a string")
        elif kind == "image_url":
            image = _need(part, "image_url", dict, where, "an object")
            _need(image, "url", str, f"{where}.image_url", "a string")
        elif kind == "input_audio":
            audio = _need(part, "input_audio", dict, where, "an object")
            _need(audio, "data", str, f"{where}.input_audio", "a string")
            _need(audio, "format", str, f"{where}.input_audio", "a string")
        elif kind == "file":
            _need(part, "file", dict, where, "an object")


def _message_record(message: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The convtree message record of a checked message, and the node metadata it needs."""
    record: dict[str, Any] = copy_json(message, path)
    info: dict[str, Any] = {}
    if "content" not in record:
        record["content"] = None
        info["content_absent"] = True
    nulls = [key for key in _KNOWN_OPTIONAL if key in record and record[key] is None]
    for key in nulls:
        del record[key]
    if nulls:
        info["null_fields"] = nulls
    return record, ({NAMESPACE: info} if info else {})


# ------------------------------------------------------------------- Responses items


def from_items(
    items: Iterable[Mapping[str, Any] | BaseModel],
    *,
    conversation_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ConversationState:
    """A linear conversation of Responses API items, a node per item, the cursor on the last.

    For what an OpenAI Agents SDK session stores (``await session.get_items()``)
    or what ``client.responses.create(input=...)`` takes; dicts or the
    ``openai`` package's models. How each item becomes a message:

    | item | role | content | other message fields |
    |---|---|---|---|
    | ``message`` (or no ``type``, with a ``role``) | its role | its content, as it is | |
    | ``function_call`` | ``assistant`` | ``None`` | ``tool_calls``: one ``function`` call |
    | ``custom_tool_call`` | ``assistant`` | ``None`` | ``tool_calls``: one ``custom`` call |
    | ``function_call_output``, ``custom_tool_call_output`` | ``tool`` | output | ``tool_call_id`` |
    | ``reasoning`` | ``reasoning`` | its ``summary`` parts | |
    | any other type | the type | ``None`` | |

    The item's other fields (``type``, ``id``, ``status``, ...; the whole item
    for the last row) are kept under ``node.metadata["openai"]["item"]``. A
    node's id is the item's ``id`` when it has a usable one, else a new id.

    Raises:
        FormatError: an item is malformed; the path names it (``items[2].call_id``).
    """
    records: list[tuple[str | None, dict[str, Any], dict[str, Any]]] = []
    for i, raw in enumerate(_sequence(items, "items")):
        path = f"items[{i}]"
        item: dict[str, Any] = copy_json(_as_dict(raw, path, "an item"), path)
        message, rest = _item_message(item, path)
        item_id = item.get("id")
        records.append(
            (item_id if isinstance(item_id, str) else None, message, {NAMESPACE: {"item": rest}})
        )
    return _build(records, "items", conversation_id, metadata)


def to_items(state: ConversationState, ref: NodeRef | None = None) -> list[ResponseInputItemParam]:
    """The path to ``ref`` (default: the cursor) as Responses API input items.

    Type-checks as ``client.responses.create(input=...)`` and as the items of an
    Agents SDK session. A node imported by
    [`from_items()`][convtree.interop.openai.from_items] gives back its item
    exactly (its message's current role, content and call fields, the rest as
    imported). Any other node is converted: a ``user``/``system``/``developer``/
    ``assistant`` message becomes ``{"role", "content"}`` (Chat Completions
    parts become ``input_text``, ``output_text`` with no annotations,
    ``input_image``, ``input_file``; others stay as they are), each assistant
    tool call a ``function_call`` or ``custom_tool_call`` item after it, a
    ``tool`` message a ``function_call_output``.

    Raises:
        FormatError: a node cannot be an item: a legacy ``function`` message or
            ``function_call`` (no call id), a ``tool`` message without
            ``tool_call_id``, an unknown role (the error names the node).
        NodeNotFoundError: ``ref`` names no node.
    """
    out: list[dict[str, Any]] = []
    for node in state.get_path(ref):
        message = node.message_dict()
        if message is None:
            continue
        rest = _openai_info(node).get("item")
        if isinstance(rest, dict):
            item = _item_again(message, rest)
            if item is not None:
                out.append(item)
                continue
        out.extend(_items_of_message(node, message))
    return cast("list[ResponseInputItemParam]", out)


def _item_message(item: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The message a checked item becomes, and the item's fields the message does not hold."""
    kind = item.get("type")
    if kind is None and "role" not in item:
        raise FormatError("an item needs a type (or a role, for a message)", path=f"{path}.type")
    if kind is not None and not isinstance(kind, str):
        raise FormatError(f"type must be a string, got {_show(kind)}", path=f"{path}.type")
    rest = dict(item)
    if kind is None or kind == "message":
        role = _need(item, "role", str, path, "a string")
        if role not in _ITEM_ROLES:
            raise FormatError(
                f"a message item's role is one of {', '.join(_ITEM_ROLES)}, got {role!r}",
                path=f"{path}.role",
            )
        content = item.get("content")
        if "content" not in item:
            raise FormatError("a message item needs content", path=f"{path}.content")
        if not isinstance(content, str):
            _check_item_parts(content, f"{path}.content")
        del rest["role"], rest["content"]
        return {"role": role, "content": content}, rest
    if kind in _CALL_TYPES:
        call_type = _CALL_TYPES[kind]
        arg = "arguments" if call_type == "function" else "input"
        call_id = _need(item, "call_id", str, path, "a string")
        name = _need(item, "name", str, path, "a string")
        argument = _need(item, arg, str, path, "a string")
        del rest["call_id"], rest["name"], rest[arg]
        call = {"id": call_id, "type": call_type, call_type: {"name": name, arg: argument}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, rest
    if kind in _OUTPUT_TYPES:
        if "output" not in item:
            raise FormatError(f"a {kind} item needs an output", path=f"{path}.output")
        output = item["output"]
        if not isinstance(output, str):
            _check_item_parts(output, f"{path}.output")
        message: dict[str, Any] = {"role": "tool", "content": output}
        del rest["output"]
        call_id = item.get("call_id")
        if isinstance(call_id, str):
            message["tool_call_id"] = call_id
            del rest["call_id"]
        elif call_id is not None:
            raise FormatError(
                f"call_id must be a string, got {_show(call_id)}", path=f"{path}.call_id"
            )
        return message, rest
    if kind == "reasoning":
        summary = item.get("summary")
        if not isinstance(summary, list):
            raise FormatError(
                f"a reasoning item's summary must be a list, got {_show(summary)}",
                path=f"{path}.summary",
            )
        _check_item_parts(summary, f"{path}.summary")
        del rest["summary"]
        return {"role": "reasoning", "content": summary}, rest
    return {"role": kind, "content": None}, rest


def _check_item_parts(parts: Any, path: str) -> None:
    if not isinstance(parts, list):
        raise FormatError(
            f"content must be a string or a list of content parts, got {_show(parts)}", path=path
        )
    for j, part in enumerate(parts):
        where = f"{path}[{j}]"
        if not isinstance(part, dict):
            raise FormatError(f"a content part must be an object, got {_show(part)}", path=where)
        kind = _need(part, "type", str, where, "a string")
        if kind in ("input_text", "output_text", "summary_text", "reasoning_text"):
            _need(part, "text", str, where, "a string")
        elif kind == "refusal":
            _need(part, "refusal", str, where, "a string")


def _item_again(message: dict[str, Any], rest: dict[str, Any]) -> dict[str, Any] | None:
    """The item a node imported by from_items came from; ``None`` if its message changed shape."""
    kind = rest.get("type")
    role, content = message["role"], message.get("content")
    if kind is None or kind == "message":
        if role in _ITEM_ROLES and (isinstance(content, (str, list))):
            return {**rest, "role": role, "content": content}
        return None
    if kind in _CALL_TYPES:
        call_type = _CALL_TYPES[kind]
        arg = "arguments" if call_type == "function" else "input"
        calls = message.get("tool_calls")
        if role != "assistant" or content is not None or not isinstance(calls, list):
            return None
        if len(calls) != 1 or calls[0].get("type") != call_type:
            return None
        call = calls[0]
        spec = call.get(call_type)
        if not isinstance(spec, dict) or "name" not in spec or arg not in spec:
            return None
        return {**rest, "call_id": call.get("id"), "name": spec["name"], arg: spec[arg]}
    if kind in _OUTPUT_TYPES:
        if role != "tool" or not isinstance(content, (str, list)):
            return None
        item = {**rest, "output": content}
        if message.get("tool_call_id") is not None:
            item["call_id"] = message["tool_call_id"]
        return item
    if kind == "reasoning":
        if role != "reasoning" or not isinstance(content, list):
            return None
        return {**rest, "summary": content}
    return rest  # kept whole; the message is a stand-in


def _items_of_message(node: ConversationNode, message: dict[str, Any]) -> list[dict[str, Any]]:
    """The Responses items of a message that was not imported from items."""
    role = message["role"]
    content = message.get("content")
    if role == "tool":
        call_id = message.get("tool_call_id")
        if call_id is None:
            raise _no_item(node, "a tool message without tool_call_id")
        output = "" if content is None else _item_parts(content, "tool")
        return [{"type": "function_call_output", "call_id": call_id, "output": output}]
    if role not in _ITEM_ROLES:
        raise _no_item(node, f"role {role!r}")
    if message.get("function_call") is not None:
        raise _no_item(node, "a legacy function_call (it has no call id)")
    calls = message.get("tool_calls") or []
    out: list[dict[str, Any]] = []
    if content is not None or not calls:
        text = "" if content is None else _item_parts(content, role)
        out.append({"role": role, "content": text})
    for call in calls:
        kind = call.get("type")
        found = call.get(kind) if isinstance(kind, str) else None
        spec: dict[str, Any] = found if isinstance(found, dict) else {}
        shaped = isinstance(call.get("id"), str)
        if kind == "function" and shaped and "name" in spec and "arguments" in spec:
            out.append(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": spec["name"],
                    "arguments": spec["arguments"],
                }
            )
        elif kind == "custom" and shaped and "name" in spec and "input" in spec:
            out.append(
                {
                    "type": "custom_tool_call",
                    "call_id": call["id"],
                    "name": spec["name"],
                    "input": spec["input"],
                }
            )
        else:
            raise _no_item(
                node, f"a tool call that is not an OpenAI function or custom call ({_show(call)})"
            )
    return out


def _item_parts(content: Any, role: str) -> Any:
    """Chat Completions content parts as Responses parts (others unchanged)."""
    if not isinstance(content, list):
        return content
    out = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            new = {k: v for k, v in part.items() if k != "type"}
            if role == "assistant":
                new = {"type": "output_text", **new}
                new.setdefault("annotations", [])
            else:
                new = {"type": "input_text", **new}
            out.append(new)
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            image = part["image_url"]
            new = {k: v for k, v in part.items() if k not in ("type", "image_url")}
            out.append(
                {
                    "type": "input_image",
                    "image_url": image.get("url"),
                    "detail": image.get("detail", "auto"),
                    **new,
                }
            )
        elif kind == "file" and isinstance(part.get("file"), dict):
            new = {k: v for k, v in part.items() if k not in ("type", "file")}
            out.append({"type": "input_file", **part["file"], **new})
        else:
            out.append(part)
    return out


def _chat_from_item_node(
    node: ConversationNode, message: dict[str, Any], rest: dict[str, Any]
) -> dict[str, Any] | None:
    """The Chat Completions message of a node imported from an item (``None``: it has none)."""
    role = message["role"]
    if role not in MESSAGE_KEYS:
        return None  # reasoning, web search calls, ...: nothing Chat Completions takes
    out = _chat_message(node, message, {}, False)
    if "content" in out:
        out["content"] = _chat_parts(out["content"])
    return out


def _chat_parts(content: Any) -> Any:
    """Responses content parts as Chat Completions parts (others unchanged)."""
    if not isinstance(content, list):
        return content
    out = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            out.append({"type": "text", "text": part.get("text")})
        elif kind == "input_image" and part.get("image_url") is not None:
            image = {"url": part["image_url"]}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            out.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            keys = ("file_data", "file_id", "filename")
            out.append(
                {"type": "file", "file": {k: part[k] for k in keys if part.get(k) is not None}}
            )
        else:
            out.append(part)
    return out


def _no_item(node: ConversationNode, what: str) -> FormatError:
    return FormatError(f"{what} has no Responses item form", path="message", node_id=node.node_id)


# --------------------------------------------------------------------------- shared


def _build(
    records: list[tuple[str | None, dict[str, Any], dict[str, Any]]],
    label: str,
    conversation_id: str | None,
    metadata: Mapping[str, Any] | None,
) -> ConversationState:
    """A chain of nodes below a message-less root, built as a document (ids kept)."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise FormatError(
            f"metadata must be a mapping, got {type(metadata).__name__}", path="metadata"
        )
    now = datetime.now(timezone.utc).isoformat()
    root_id = new_node_id()
    used = {root_id}
    nodes: list[dict[str, Any]] = [
        {"node_id": root_id, "message": None, "timestamp": now, "metadata": {}}
    ]
    edges: list[list[str]] = []
    parent = root_id
    for wanted, message, node_metadata in records:
        node_id = wanted if wanted is not None and _usable_id(wanted, used) else None
        while node_id is None or node_id in used:
            node_id = new_node_id()
        used.add(node_id)
        nodes.append(
            {"node_id": node_id, "message": message, "timestamp": now, "metadata": node_metadata}
        )
        edges.append([parent, node_id])
        parent = node_id
    doc = {
        "schema_version": CURRENT_SCHEMA_VERSION,
        "conversation_id": uuid.uuid4().hex if conversation_id is None else conversation_id,
        "nodes": nodes,
        "edges": edges,
        "current_node_id": parent,
        "metadata": {"source": NAMESPACE, **(metadata or {})},
        "created_at": now,
        "updated_at": now,
    }
    try:
        return ConversationState.from_dict(doc)
    except FormatError as exc:
        raise _source_error(exc, label) from None


def _usable_id(node_id: str, used: set[str]) -> bool:
    return (
        bool(node_id)
        and len(node_id) <= 256
        and node_id.isprintable()
        and node_id == node_id.strip()
        and node_id not in used
    )


def _source_error(exc: FormatError, label: str) -> FormatError:
    """A document error about ``nodes[k]`` said about ``messages[k-1]`` (``items``)."""
    path = exc.path or ""
    if path.startswith("nodes["):
        index, _, tail = path[len("nodes[") :].partition("]")
        if index.isdigit() and int(index) > 0:
            tail = tail[len(".message") :] if tail.startswith(".message") else tail
            return FormatError(exc.reason, path=f"{label}[{int(index) - 1}]{tail}")
    return FormatError(exc.reason, path=path or None)


def _sequence(values: Any, label: str) -> Iterable[Any]:
    if isinstance(values, (str, bytes, Mapping, BaseModel)) or not isinstance(values, Iterable):
        raise FormatError(f"{label} must be a list, got {type(values).__name__}", path=label)
    return values


def _as_dict(value: Any, path: str, what: str) -> dict[str, Any]:
    """A message or item as a plain dict: pydantic models (the openai package's) dumped."""
    plain = _plain(value, 0)
    if not isinstance(plain, dict):
        raise FormatError(f"{what} must be an object, got {_show(value)}", path=path)
    return plain


def _plain(value: Any, depth: int) -> Any:
    """``value`` with every pydantic model in it replaced by the fields it was given."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if depth > MAX_DEPTH:
        return value  # copy_json refuses it, naming the path
    if isinstance(value, Mapping):
        return {key: _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, depth + 1) for item in value]
    return value


def _openai_info(node: ConversationNode) -> dict[str, Any]:
    info = node._meta.get(NAMESPACE)  # an internal read: the node is not watched
    return info if isinstance(info, dict) else {}


def _need(obj: dict[str, Any], key: str, kind: type, path: str, expected: str) -> Any:
    if key not in obj:
        raise FormatError(f"missing {key} ({expected})", path=f"{path}.{key}")
    value = obj[key]
    if not isinstance(value, kind):
        raise FormatError(f"{key} must be {expected}, got {_show(value)}", path=f"{path}.{key}")
    return value


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (str, int, float)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return type(value).__name__
