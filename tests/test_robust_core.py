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


class TestChangesInsideNodesAreSaved:
    """No silent loss: every change through the public objects reaches the store."""

    @staticmethod
    def _saved(state: ConversationState, change: Any) -> ConversationState:
        import asyncio

        from convtree import open_storage

        async def run() -> ConversationState | None:
            async with open_storage("memory://") as storage:
                await storage.save_conversation(state)
                loaded = await storage.load_conversation(state.conversation_id)
                assert loaded is not None
                change(loaded)
                await storage.save_conversation(loaded)
                again = await storage.load_conversation(state.conversation_id)
                assert again == loaded
                return again

        result = asyncio.run(run())
        assert result is not None
        return result

    @pytest.fixture
    def state(self) -> ConversationState:
        state = ConversationState("c")
        state.add_message("user", "q", node_id="q")
        state.add_message("assistant", "a", node_id="a", metadata={"usage": {"tokens": 1}})
        return state

    def test_a_thumbs_up(self, state: ConversationState) -> None:
        def change(s: ConversationState) -> None:
            s.get_node("a").metadata["rating"] = 5

        assert self._saved(state, change).get_node("a").metadata["rating"] == 5

    def test_nested_metadata(self, state: ConversationState) -> None:
        def change(s: ConversationState) -> None:
            s.get_node("a").metadata["usage"]["tokens"] = 2

        assert self._saved(state, change).get_node("a").metadata["usage"] == {"tokens": 2}

    def test_a_message_changed_in_place(self, state: ConversationState) -> None:
        def change(s: ConversationState) -> None:
            message = s.get_node("a").message
            assert message is not None
            message.content = "better"
            message.metadata["k"] = "v"

        node = self._saved(state, change).get_node("a")
        assert node.content == "better"
        assert node.message is not None
        assert node.message.metadata == {"k": "v"}

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("branch_name", "b"),
            ("prompt_name", "p"),
            ("metadata", {"new": 1}),
            ("message", Message(role="assistant", content="swapped")),
        ],
    )
    def test_a_field_assigned(self, state: ConversationState, field: str, value: Any) -> None:
        def change(s: ConversationState) -> None:
            setattr(s.get_node("a"), field, value)

        assert getattr(self._saved(state, change).get_node("a"), field) == value

    def test_a_timestamp_assigned(self, state: ConversationState) -> None:
        from datetime import datetime, timezone

        when = datetime(2020, 1, 1, tzinfo=timezone.utc)

        def change(s: ConversationState) -> None:
            s.get_node("a").timestamp = when

        assert self._saved(state, change).get_node("a").timestamp == when

    def test_a_reference_held_across_saves(self) -> None:
        import asyncio

        from convtree import open_storage

        async def run() -> ConversationState | None:
            async with open_storage("memory://") as storage:
                state = ConversationState("held")
                state.add_message("user", "q", node_id="q")
                await storage.save_conversation(state)
                meta = state.get_node("q").metadata  # handed out, then saved
                await storage.save_conversation(state)
                meta["late"] = True  # changed after that save
                await storage.save_conversation(state)
                return await storage.load_conversation("held")

        loaded = asyncio.run(run())
        assert loaded is not None
        assert loaded.get_node("q").metadata == {"late": True}

    def test_a_value_held_inside_metadata_keeps_its_node_watched(self) -> None:
        """Only ``metadata`` was read (the message was never built): a dict held from
        inside it still keeps the node watched, and a change made through it is saved."""
        import asyncio

        from convtree import open_storage

        async def run() -> None:
            async with open_storage("memory://") as storage:
                state = ConversationState("meta")
                state.add_message("user", "q", node_id="q", metadata={"usage": {"tokens": 1}})
                await storage.save_conversation(state)
                loaded = await storage.load_conversation("meta")
                assert loaded is not None
                usage = loaded.get_node("q").metadata["usage"]
                loaded.add_message("user", "next")
                await storage.save_conversation(loaded)
                usage["tokens"] = 2  # after that save
                loaded.add_message("user", "last")
                await storage.save_conversation(loaded)
                again = await storage.load_conversation("meta")
                assert again is not None
                assert again.get_node("q").metadata == {"usage": {"tokens": 2}}

        asyncio.run(run())

    def test_node_text_reads_without_watching(self) -> None:
        from convtree.changes import SavedRevision

        state = ConversationState("t")
        state.add_message("user", "plain", node_id="a")
        state.add_message("user", [{"type": "text", "text": "x"}, {"type": "image"}], node_id="b")
        state.add_message("assistant", None, node_id="c", tool_calls=[{"id": "1"}])
        loaded = ConversationState.from_dict(state.to_dict())
        loaded.mark_saved(SavedRevision("s", 1, 0, 0))
        texts = [loaded.get_node(i).text for i in ("a", "b", "c")]
        assert texts == ["plain", "x", ""]
        assert loaded.root.text is None
        assert loaded._journal is not None
        assert loaded._journal.handed_out == {}  # `text` hands nothing out
        assert texts == [loaded.get_node(i).message.text for i in ("a", "b", "c")]
        assert set(loaded._journal.handed_out) == {"a", "b", "c"}  # `.message` does

    def test_hand_outs_nobody_holds_stop_being_watched_after_a_save(self) -> None:
        """A save compares each handed-out node once; those that nobody holds any more
        (no reference to the message, the metadata or anything inside) are dropped,
        so later saves do not re-encode every node the app ever read."""
        import asyncio

        from convtree import open_storage

        async def run() -> None:
            async with open_storage("memory://") as storage:
                state = ConversationState("many")
                for i in range(50):
                    state.add_message("user", f"m{i}", node_id=f"n{i}", metadata={"u": [i]})
                await storage.save_conversation(state)
                lengths = [len(node.message.content) for node in state.get_path()[1:]]
                assert sum(lengths) > 0
                held_message = state.get_node("n3").message
                held_inner = state.get_node("n7").metadata["u"]
                held_part = state.get_node("n9").metadata
                journal = state._journal
                assert journal is not None
                assert len(journal.handed_out) == 50
                state.add_message("user", "next")
                await storage.save_conversation(state)
                journal = state._journal
                assert journal is not None
                assert set(journal.handed_out) == {"n3", "n7", "n9"}
                held_message.content = "changed through the held message"
                held_inner.append("changed inside")
                held_part["new"] = 1
                await storage.save_conversation(state)
                loaded = await storage.load_conversation("many")
                assert loaded is not None
                assert loaded.get_node("n3").content == "changed through the held message"
                assert loaded.get_node("n7").metadata == {"u": [7, "changed inside"]}
                assert loaded.get_node("n9").metadata == {"u": [9], "new": 1}
                del held_message, held_inner, held_part
                state.add_message("user", "last")
                await storage.save_conversation(state)
                journal = state._journal
                assert journal is not None
                assert journal.handed_out == {}

        asyncio.run(run())

    def test_reading_for_display_or_sending_watches_nothing(self, state: ConversationState) -> None:
        from convtree.changes import SavedRevision

        state.mark_saved(SavedRevision("s", 1, 0, 0))
        state.get_current_messages()
        state.usage(scope="tree")
        state._repr_html_()
        list(state.replay())
        changes = state.changes()
        assert changes.empty
        assert state._journal is not None
        assert state._journal.handed_out == {}

    def test_an_unchanged_read_writes_nothing(self, state: ConversationState) -> None:
        from convtree.changes import SavedRevision

        state.mark_saved(SavedRevision("s", 1, 0, 0))
        assert state.get_node("a").metadata["usage"] == {"tokens": 1}
        assert state.changes().empty
