"""The message a conversation node holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from ._json import copy_json, format_error_from_validation

__all__ = ["ContentPart", "Message", "MessageRecord"]

ContentPart = dict[str, JsonValue]
"""One part of multi-part content, e.g. ``{"type": "text", "text": "hi"}``."""

_DESCRIPTION = "An LLM message; unknown provider fields are kept."

# The field types, shared by the model (what users hold) and the record (what a
# document holds), so that both accept exactly the same messages.
_Role = Annotated[str, Field(min_length=1, description="system, user, assistant, tool, ...")]
_Content = Annotated[
    str | list[ContentPart] | None, Field(description="Text, a list of content parts, or null.")
]
_Name = Annotated[str | None, Field(description="Author name, or the tool's name.")]
_ToolCalls = Annotated[
    list[dict[str, JsonValue]] | None,
    Field(description="Tool calls made by an assistant message, as the provider wrote them."),
]
_ToolCallId = Annotated[str | None, Field(description="The tool call a tool message answers.")]
_FunctionCall = Annotated[
    dict[str, JsonValue] | None, Field(description="Legacy OpenAI function call.")
]
_Metadata = Annotated[dict[str, JsonValue], Field(description="Free metadata about the message.")]


class Message(BaseModel):
    """One LLM message: who said it and what.

    ``content`` is text, a list of content parts (images, audio, ... as the
    provider shapes them), or ``None`` (an assistant turn that only calls
    tools). Fields a provider adds that convtree does not know (``refusal``,
    ``audio``, ...) are kept as they are and written back on save.

    Example:
        ```python
        Message(role="user", content="Hello").to_dict()
        # {'role': 'user', 'content': 'Hello'}
        ```
    """

    model_config = ConfigDict(
        extra="allow",
        validate_assignment=True,
        json_schema_extra={"description": _DESCRIPTION},
    )

    role: _Role
    content: _Content = None
    name: _Name = None
    tool_calls: _ToolCalls = None
    tool_call_id: _ToolCallId = None
    function_call: _FunctionCall = None
    metadata: _Metadata = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the message as a new JSON-compatible dict.

        ``role`` and ``content`` are always present; other fields only when set
        (``metadata`` when non-empty). Unknown provider fields are included.
        """
        out: dict[str, Any] = {"role": self.role}
        content = self.content
        out["content"] = content if type(content) is str else copy_json(content, "content")
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls is not None:
            out["tool_calls"] = copy_json(self.tool_calls, "tool_calls")
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.function_call is not None:
            out["function_call"] = copy_json(self.function_call, "function_call")
        if self.metadata:
            out["metadata"] = copy_json(self.metadata, "metadata")
        extra = self.__pydantic_extra__
        if extra:
            for key, value in extra.items():
                out[key] = copy_json(value, key)
        return out

    def to_openai(self) -> dict[str, Any]:
        """The message as an OpenAI Chat Completions message dict.

        ``role`` and ``content`` always; ``name``, ``tool_calls``,
        ``tool_call_id`` and ``function_call`` when set. convtree's
        ``metadata`` and unknown provider fields are left out.
        """
        out: dict[str, Any] = {"role": self.role}
        content = self.content
        out["content"] = content if type(content) is str else copy_json(content, "content")
        for key in ("name", "tool_calls", "tool_call_id", "function_call"):
            value = getattr(self, key)
            if value is not None:
                out[key] = copy_json(value, key)
        return out

    def _repr_html_(self) -> str:
        from .render import message_html

        return message_html(self)

    def __repr_args__(self) -> Any:
        # A list of messages in a notebook shows what is set, not every None.
        for key, value in super().__repr_args__():
            if key in ("role", "content") or value not in (None, {}, []):
                yield key, value

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """Build a message from a dict, raising [`FormatError`][convtree.FormatError] if invalid."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise format_error_from_validation(exc, what="message", data=data) from None

    @property
    def text(self) -> str:
        """The text of the content: the string itself, or the text parts joined."""
        content = self.content
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join(
            str(part.get("text", "")) for part in content if part.get("type", "text") == "text"
        )


@with_config(
    ConfigDict(extra="allow", title="Message", json_schema_extra={"description": _DESCRIPTION})
)
class MessageRecord(TypedDict):
    """A message as a document stores it: validated like [`Message`][convtree.Message], kept a dict.

    Loading validates each node's message into this plain dict (several times
    cheaper than building a model); a node builds its [`Message`][convtree.Message] from it
    on first access.
    """

    role: _Role
    content: NotRequired[_Content]
    name: NotRequired[_Name]
    tool_calls: NotRequired[_ToolCalls]
    tool_call_id: NotRequired[_ToolCallId]
    function_call: NotRequired[_FunctionCall]
    metadata: NotRequired[_Metadata]
