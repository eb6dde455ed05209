"""The message a conversation node holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ._json import copy_json, format_error_from_validation

__all__ = ["ContentPart", "Message"]

ContentPart = dict[str, JsonValue]
"""One part of multi-part content, e.g. ``{"type": "text", "text": "hi"}``."""


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
        json_schema_extra={"description": "An LLM message; unknown provider fields are kept."},
    )

    role: str = Field(min_length=1, description="system, user, assistant, tool, ...")
    content: str | list[ContentPart] | None = Field(
        default=None, description="Text, a list of content parts, or null."
    )
    name: str | None = Field(default=None, description="Author name, or the tool's name.")
    tool_calls: list[dict[str, JsonValue]] | None = Field(
        default=None,
        description="Tool calls made by an assistant message, as the provider wrote them.",
    )
    tool_call_id: str | None = Field(
        default=None, description="The tool call a tool message answers."
    )
    function_call: dict[str, JsonValue] | None = Field(
        default=None, description="Legacy OpenAI function call."
    )
    metadata: dict[str, JsonValue] = Field(
        default_factory=dict, description="Free metadata about the message."
    )

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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """Build a message from a dict, raising :class:`~convtree.FormatError` if invalid."""
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
