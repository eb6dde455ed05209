"""Odd and deep input is refused at the door, so that whatever is saved loads again."""

from __future__ import annotations

import json
from typing import Any

import pytest

from convtree import ConversationState, FormatError, Message
from convtree._json import MAX_DEPTH


def _deep(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def _deep_list(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


class TestDepth:
    def test_the_deepest_allowed_value_saves_and_loads_everywhere(self) -> None:
        state = ConversationState(metadata={"m": _deep(MAX_DEPTH - 1)})
        state.add_message(
            "user",
            [{"type": "text", "text": "hi", "x": _deep(MAX_DEPTH - 2)}],
            metadata=_deep(MAX_DEPTH),
            tool_calls=[{"id": "c", "x": _deep(MAX_DEPTH - 2)}],
        )
        state.add(
            {
                "role": "assistant",
                "content": "ok",
                "metadata": _deep(MAX_DEPTH),
                "odd": _deep_list(MAX_DEPTH),
            }
        )
        text = state.to_json()
        assert ConversationState.from_json(text) == state
        assert ConversationState.from_dict(json.loads(text)) == state

    @pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 5_000])
    def test_deeper_metadata_is_refused_when_it_enters(self, levels: int) -> None:
        with pytest.raises(FormatError, match=f"nested deeper than {MAX_DEPTH}") as info:
            ConversationState(metadata=_deep(levels))
        assert info.value.path is not None
        assert info.value.path.startswith("metadata.a.a")
        state = ConversationState()
        with pytest.raises(FormatError, match="nested deeper"):
            state.add_message("user", "x", metadata=_deep(levels))
        with pytest.raises(FormatError, match="nested deeper"):
            state.metadata = {"k": _deep(levels)}
        with pytest.raises(FormatError, match="nested deeper"):
            state.add_message("user", [{"type": "text", "text": "x", "y": _deep(levels)}])
        with pytest.raises(FormatError, match="nested deeper"):
            state.add(Message(role="user", content="x", odd=_deep_list(levels)))
        assert len(state) == 1  # nothing half-added

    def test_deep_metadata_set_in_place_is_refused_at_save(self) -> None:
        state = ConversationState()
        node = state.add_message("user", "x")
        node.metadata["k"] = _deep(6_000)
        with pytest.raises(FormatError, match="nested deeper"):
            state.to_dict()
        state.metadata["k"] = _deep(6_000)
        with pytest.raises(FormatError, match="nested deeper"):
            state.head_fields()

    def test_a_document_nesting_deeper_does_not_load(self) -> None:
        state = ConversationState()
        state.add_message("user", "x")
        doc = state.to_dict()
        doc["nodes"][1]["metadata"] = _deep(MAX_DEPTH + 1)
        with pytest.raises(FormatError, match="nested deeper") as info:
            ConversationState.from_dict(doc)
        assert info.value.path is not None
        assert info.value.path.startswith("nodes[1].metadata.a")
        doc["nodes"][1]["metadata"] = _deep(300)  # beyond pydantic's own limit
        with pytest.raises(FormatError):
            ConversationState.from_dict(doc)

    @pytest.mark.parametrize("levels", [1_000, 100_000])
    def test_json_text_nested_too_deeply(self, levels: int) -> None:
        text = '{"a":' * levels + "1" + "}" * levels
        with pytest.raises(FormatError):
            ConversationState.from_json(text)
        doc = ConversationState().to_dict()
        body = json.dumps(doc)[:-1] + ', "extra": ' + "[" * levels + "]" * levels + "}"
        with pytest.raises(FormatError):
            ConversationState.from_json(body)


class TestLoneSurrogates:
    @pytest.mark.parametrize("bad", ["abc\ud800", "\udfff", "a\ud83d"])
    def test_a_conversation_id_must_be_valid_unicode(self, bad: str) -> None:
        with pytest.raises(FormatError, match="lone surrogate") as info:
            ConversationState(bad)
        assert info.value.path == "conversation_id"
        doc = ConversationState("ok").to_dict()
        doc["conversation_id"] = bad
        with pytest.raises(FormatError) as loading:
            ConversationState.from_dict(doc)
        assert loading.value.path == "conversation_id"

    def test_conversation_metadata_must_be_valid_unicode(self) -> None:
        with pytest.raises(FormatError, match="lone surrogate") as info:
            ConversationState(metadata={"tags": ["ok", "bad\ud800"]})
        assert info.value.path == "metadata.tags[1]"
        with pytest.raises(FormatError, match="lone surrogate"):
            ConversationState(metadata={"k\udc00": 1})
        state = ConversationState()
        state.metadata["title"] = "\ud800"
        with pytest.raises(FormatError, match="lone surrogate"):
            state.head_fields()

    def test_a_pair_of_surrogates_is_fine_and_so_are_messages_holding_lone_ones(self) -> None:
        state = ConversationState("emoji \U0001f600", metadata={"t": "\U0001f600"})
        state.add_message("user", "half an emoji: \ud83d", metadata={"k": "\udc00"})
        loaded = ConversationState.from_json(json.dumps(state.to_dict()))
        assert loaded == state
        assert loaded.current_node.content == "half an emoji: \ud83d"

    def test_a_new_node_id_must_be_printable(self) -> None:
        from convtree import TreeOperationError

        with pytest.raises(TreeOperationError):
            ConversationState().add_message("user", "x", node_id="a\ud800")
