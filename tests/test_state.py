"""Building, navigating and changing a conversation tree."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from convtree import (
    CURRENT_SCHEMA_VERSION,
    AmbiguousReferenceError,
    ConversationNode,
    ConversationState,
    FormatError,
    Message,
    NodeNotFoundError,
    TreeOperationError,
)


def contents(nodes: list[ConversationNode]) -> list[object]:
    return [n.content for n in nodes]


class TestNewConversation:
    def test_starts_with_a_message_less_root_under_the_cursor(self) -> None:
        state = ConversationState()
        assert len(state) == 1
        assert state.current_node_id == state.root.node_id
        assert state.root.message is None
        assert state.get_current_messages() == []
        assert len(state.conversation_id) == 32
        assert state.created_at.tzinfo is not None
        assert state.metadata == {}

    def test_metadata_is_copied(self) -> None:
        meta = {"user_id": "alice", "tags": ["a"]}
        state = ConversationState("c", meta)
        meta["tags"].append("b")
        assert state.metadata == {"user_id": "alice", "tags": ["a"]}

    @pytest.mark.parametrize("bad", ["", 5])
    def test_rejects_a_bad_conversation_id(self, bad: object) -> None:
        with pytest.raises(FormatError, match="conversation_id"):
            ConversationState(bad)  # type: ignore[arg-type]

    def test_rejects_metadata_json_cannot_hold(self) -> None:
        with pytest.raises(FormatError, match=r"metadata\.when"):
            ConversationState("c", {"when": datetime.now(timezone.utc)})

    def test_can_branch_at_the_first_message(self) -> None:
        state = ConversationState()
        state.add_message("system", "be brief")
        state.add_alternative("system", "be thorough")
        assert len(state.children(state.root.node_id)) == 2
        assert [m.content for m in state.get_current_messages()] == ["be thorough"]


class TestBuilding:
    def test_add_message_appends_at_the_cursor_and_moves_it(self) -> None:
        state = ConversationState()
        a = state.add_message("user", "hi")
        b = state.add_message("assistant", "hello")
        assert state.current_node_id == b.node_id
        assert state.parent(b.node_id) is a
        assert [m.content for m in state.get_current_messages()] == ["hi", "hello"]

    def test_add_message_with_parent_id(self, branching: ConversationState) -> None:
        node = branching.add_message("assistant", "answer 4", parent_id="q")
        assert branching.parent(node.node_id).node_id == "q"  # type: ignore[union-attr]
        assert branching.current_node_id == node.node_id

    def test_message_fields_are_kept(self) -> None:
        state = ConversationState()
        calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
        node = state.add_message(
            "assistant",
            None,
            name="bot",
            tool_calls=calls,
            metadata={"usage": {"total_tokens": 3}},
            prompt_name="p",
            branch_name="b",
        )
        calls[0]["id"] = "changed"  # the caller's list is not shared
        assert node.message == Message(
            role="assistant",
            content=None,
            name="bot",
            tool_calls=[
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        )
        assert (node.prompt_name, node.branch_name) == ("p", "b")
        assert node.metadata == {"usage": {"total_tokens": 3}}

    def test_content_parts(self) -> None:
        state = ConversationState()
        parts = [
            {"type": "text", "text": "look: "},
            {"type": "image_url", "image_url": {"url": "x"}},
        ]
        node = state.add_message("user", parts)
        assert node.content == parts
        assert node.message is not None
        assert node.message.text == "look: "

    def test_timestamps_are_aware_and_updated_at_moves(self) -> None:
        state = ConversationState()
        before = state.updated_at
        node = state.add_message("user", "hi")
        assert node.timestamp.utcoffset() == timedelta(0)
        assert state.updated_at >= before

    def test_explicit_timestamp_must_be_aware(self) -> None:
        state = ConversationState()
        when = datetime(2025, 1, 1, tzinfo=timezone.utc)
        assert state.add_message("user", "x", timestamp=when).timestamp == when
        with pytest.raises(FormatError, match="timezone-aware"):
            state.add_message("user", "x", timestamp=datetime(2025, 1, 1))

    @pytest.mark.parametrize(
        ("kwargs", "where"),
        [
            ({"role": "", "content": "x"}, "role"),
            ({"role": 3, "content": "x"}, "role"),
            ({"role": "user", "content": 3}, "content"),
            ({"role": "user", "content": "x", "tool_calls": "nope"}, "tool_calls"),
            ({"role": "user", "content": "x", "metadata": {"s": {1, 2}}}, "metadata.s"),
            ({"role": "user", "content": "x", "branch_name": 7}, "branch_name"),
        ],
    )
    def test_invalid_message_fields_raise_format_error(self, kwargs: dict, where: str) -> None:
        state = ConversationState()
        with pytest.raises(FormatError) as info:
            state.add_message(**kwargs)
        assert where in str(info.value)
        assert len(state) == 1, "a failed add changes nothing"

    def test_add_alternative_adds_a_sibling_of_the_cursor(
        self, branching: ConversationState
    ) -> None:
        branching.switch_to("a0")
        alt = branching.add_alternative("assistant", "answer 5")
        assert branching.current_node_id == alt.node_id
        assert contents(branching.children("q")) == ["answer 0", "answer 1", "answer 3", "answer 5"]

    def test_add_alternative_on_the_root_is_refused(self) -> None:
        with pytest.raises(TreeOperationError, match="root"):
            ConversationState().add_alternative("user", "x")

    def test_edit_message_adds_a_sibling_with_new_content(
        self, branching: ConversationState
    ) -> None:
        edited = branching.edit_message("q", "better question")
        assert edited.message is not None
        assert edited.message.role == "user"
        assert branching.parent(edited.node_id).node_id == "sys"  # type: ignore[union-attr]
        assert contents(branching.children("sys")) == ["question", "better question"]
        assert branching.get_node("q").content == "question", "the original is kept"
        assert branching.current_node_id == edited.node_id

    def test_edit_of_the_root_is_refused(self, branching: ConversationState) -> None:
        with pytest.raises(TreeOperationError):
            branching.edit_message(branching.root.node_id, "x")

    def test_explicit_ids(self) -> None:
        state = ConversationState()
        state.add_message("user", "x", node_id="mine")
        with pytest.raises(TreeOperationError, match="already exists"):
            state.add_message("user", "y", node_id="mine")
        for bad in ["", " padded", "tab\there", "x" * 300]:
            with pytest.raises(TreeOperationError):
                state.add_message("user", "y", node_id=bad)
        assert len(state) == 2


class TestIds:
    def test_generated_ids_are_short_opaque_and_unique(self) -> None:
        state = ConversationState()
        ids = {state.root.node_id}
        for i in range(2000):
            ids.add(state.add_message("user", str(i)).node_id)
        assert len(ids) == 2001
        assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)

    def test_no_operation_renumbers_a_node(self, branching: ConversationState) -> None:
        before = {n.node_id: n for n in branching.nodes()}
        branching.prune("a0")
        branching.add_message("user", "x", parent_id="q")
        branching.edit_message("q2", "y")
        after = {n.node_id: n for n in branching.nodes()}
        for node_id, node in after.items():
            if node_id in before:
                assert node is before[node_id]
        reloaded = ConversationState.from_dict(branching.to_dict())
        assert {n.node_id for n in reloaded.nodes()} == set(after)


class TestReferences:
    def test_exact_id_prefix_and_branch_name(self, branching: ConversationState) -> None:
        node = branching.add_message("user", "x", node_id="abcdef123456")
        assert branching.get_node("abcdef123456") is node
        assert branching.get_node("abcd") is node
        assert branching.get_node("second").node_id == "a1"
        assert branching.get_node(node) is node

    def test_exact_id_beats_branch_name_beats_prefix(self) -> None:
        state = ConversationState()
        state.add_message("user", "1", node_id="alpha")
        state.add_message("user", "2", node_id="al", branch_name="alpha2")
        state.add_message("user", "3", node_id="alpha2x")
        assert state.get_node("al").content == "2"  # exact id, though also a prefix
        assert state.get_node("alpha2").content == "2"  # branch name, though also a prefix

    def test_ambiguous_prefix(self) -> None:
        state = ConversationState()
        state.add_message("user", "1", node_id="abc1")
        state.add_message("user", "2", node_id="abc2")
        with pytest.raises(AmbiguousReferenceError, match=r"abc1.*abc2") as info:
            state.get_node("abc")
        assert info.value.candidates == ["abc1", "abc2"]

    def test_ambiguous_branch_name(self) -> None:
        state = ConversationState()
        state.add_message("user", "1", branch_name="b")
        state.add_message("user", "2", branch_name="b")
        with pytest.raises(AmbiguousReferenceError, match="branch name 'b'"):
            state.switch_to("b")

    @pytest.mark.parametrize("ref", ["nope", "", 3, None])
    def test_unknown_reference(self, branching: ConversationState, ref: object) -> None:
        with pytest.raises(NodeNotFoundError) as info:
            branching.get_node(ref)  # type: ignore[arg-type]
        assert isinstance(info.value, KeyError)
        assert "branching" in str(info.value) or "reference" in str(info.value)

    def test_a_node_names_the_node_with_its_id(self, branching: ConversationState) -> None:
        """A node of a loaded copy or a fork works on the other; an unknown id does not."""
        copy = ConversationState.from_dict(branching.to_dict())
        assert branching.get_node(copy.get_node("q")) is branching.get_node("q")
        other = ConversationState()
        foreign = other.add_message("user", "x", node_id="not-here")
        with pytest.raises(NodeNotFoundError, match="no node with id 'not-here'"):
            branching.get_node(foreign)

    def test_prefix_index_follows_changes(self) -> None:
        state = ConversationState()
        state.add_message("user", "1", node_id="xyz1")
        assert state.get_node("xyz").node_id == "xyz1"
        state.add_message("user", "2", node_id="xyz2")
        with pytest.raises(AmbiguousReferenceError):
            state.get_node("xyz")
        state.prune("xyz2")
        assert state.get_node("xyz").node_id == "xyz1"


class TestNavigating:
    def test_switch_to_moves_the_cursor(self, branching: ConversationState) -> None:
        node = branching.switch_to("a0")
        assert branching.current_node_id == "a0"
        assert branching.current_node is node
        assert [m.content for m in branching.get_current_messages()] == [
            "sys",
            "question",
            "answer 0",
        ]
        branching.current_node_id = "first"
        assert branching.current_node_id == "a0"

    def test_parent_children_siblings(self, branching: ConversationState) -> None:
        assert branching.parent("a1").node_id == "q"  # type: ignore[union-attr]
        assert branching.parent(branching.root.node_id) is None
        assert [n.node_id for n in branching.children("q")] == ["a0", "a1", "a3"]
        assert [n.node_id for n in branching.siblings("a1")] == ["a0", "a3"]
        assert branching.siblings(branching.root.node_id) == []
        assert [n.node_id for n in branching.children()] == []  # cursor a2 is a leaf

    def test_leaves_nodes_path_depth(self, branching: ConversationState) -> None:
        assert [n.node_id for n in branching.leaves()] == ["a0", "a2", "a3"]
        ids = [n.node_id for n in branching.nodes()]
        assert ids[1:] == ["sys", "q", "a0", "a1", "q2", "a2", "a3"]
        assert [n.node_id for n in branching.get_path("a2")][1:] == ["sys", "q", "a1", "q2", "a2"]
        assert branching.depth() == 5
        assert branching.depth(branching.root) == 0
        assert "q2" in branching
        assert "nope" not in branching

    def test_repr_is_short(self, branching: ConversationState) -> None:
        text = repr(branching)
        assert "'branching'" in text
        assert "8 nodes" in text
        assert "3 leaves" in text
        assert "'a2'" in text


class TestPrune:
    def test_prune_removes_the_subtree_and_counts_it(self, branching: ConversationState) -> None:
        branching.switch_to("a0")
        assert branching.prune("a1") == 3
        assert len(branching) == 5
        assert "q2" not in branching
        assert "a2" not in branching
        assert branching.current_node_id == "a0"
        with pytest.raises(NodeNotFoundError):
            branching.get_node("second")

    def test_a_cursor_inside_moves_to_the_parent(self, branching: ConversationState) -> None:
        branching.prune("q2")
        assert branching.current_node_id == "a1"

    def test_the_root_cannot_be_pruned(self, branching: ConversationState) -> None:
        with pytest.raises(TreeOperationError, match="root"):
            branching.prune(branching.root.node_id)

    def test_a_pruned_id_is_free_for_nothing_else(self, branching: ConversationState) -> None:
        branching.prune("a1")
        ids = {branching.add_message("user", str(i)).node_id for i in range(500)}
        assert not ids & {"a1", "q2", "a2"}


class TestFork:
    def test_fork_holds_the_path_with_ids_kept(self, branching: ConversationState) -> None:
        fork = branching.fork("q2", conversation_id="forked")
        assert fork.conversation_id == "forked"
        assert [n.node_id for n in fork.nodes()] == [n.node_id for n in branching.get_path("q2")]
        assert fork.current_node_id == "q2"
        assert fork.metadata == {
            "user_id": "alice",
            "forked_from": {"conversation_id": "branching", "node_id": "q2"},
        }
        assert "forked_from" not in branching.metadata

    def test_fork_is_independent(self, branching: ConversationState) -> None:
        fork = branching.fork()
        assert fork.current_node_id == "a2"
        fork.get_node("q").metadata["x"] = 1
        fork.get_node("q").message.content = "changed"  # type: ignore[union-attr]
        fork.add_message("user", "only in the fork")
        assert branching.get_node("q").metadata == {}
        assert branching.get_node("q").content == "question"
        assert len(branching) == 8
        assert len(fork.conversation_id) == 32


class TestSerializing:
    def test_round_trip(self, branching: ConversationState) -> None:
        doc = branching.to_dict()
        assert doc["schema_version"] == CURRENT_SCHEMA_VERSION
        assert doc["edges"][:2] == [[branching.root.node_id, "sys"], ["sys", "q"]]
        assert [e for e in doc["edges"] if e[0] == "q"] == [["q", "a0"], ["q", "a1"], ["q", "a3"]]
        again = ConversationState.from_dict(doc)
        assert again == branching
        assert again.to_dict() == doc
        assert ConversationState.from_json(branching.to_json(indent=2)) == branching

    def test_to_dict_shares_nothing(self, branching: ConversationState) -> None:
        branching.get_node("q").metadata["tags"] = ["x"]
        doc = branching.to_dict()
        doc["metadata"]["user_id"] = "mallory"
        next(n for n in doc["nodes"] if n["node_id"] == "q")["metadata"]["tags"].append("y")
        assert branching.metadata["user_id"] == "alice"
        assert branching.get_node("q").metadata == {"tags": ["x"]}

    def test_from_dict_shares_nothing(self, branching: ConversationState) -> None:
        doc = branching.to_dict()
        doc["metadata"]["nested"] = {"a": [1]}
        state = ConversationState.from_dict(doc)
        doc["metadata"]["nested"]["a"].append(2)
        assert state.metadata["nested"] == {"a": [1]}

    def test_unjsonable_metadata_added_later_is_named(self, branching: ConversationState) -> None:
        branching.metadata["when"] = datetime.now(timezone.utc)
        with pytest.raises(FormatError, match=r"metadata\.when"):
            branching.to_dict()

    def test_unicode_nan_big_ints_and_nul_survive_json(self) -> None:
        state = ConversationState("u", {"big": 2**70, "nan": float("inf"), "neg0": -0.0})
        state.add_message("user", "héllo \x00 wörld 🌳", metadata={"k": [1.5, None, True]})
        again = ConversationState.from_json(state.to_json())
        assert again == state
        assert again.metadata["big"] == 2**70
        assert str(again.metadata["neg0"]) == "-0.0"

    def test_from_json_reports_bad_json(self) -> None:
        with pytest.raises(FormatError, match="line 1, column"):
            ConversationState.from_json("{nope")
        with pytest.raises(FormatError):
            ConversationState.from_json(b"\xff\xfe\x00")


def test_setting_a_timestamp_changes_the_document() -> None:
    state = ConversationState()
    node = state.add_message("user", "x")
    state.to_dict()  # caches the node's ISO text
    node.timestamp = datetime(2020, 1, 1, tzinfo=timezone.utc)
    saved = next(n for n in state.to_dict()["nodes"] if n["node_id"] == node.node_id)
    assert saved["timestamp"] == "2020-01-01T00:00:00+00:00"


class TestLoadedMessages:
    """A loaded node keeps its message as a validated record until it is asked for."""

    MESSAGES: ClassVar[list[dict[str, Any]]] = [
        {"content": "text first", "role": "user"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function"}]},
        {"role": "tool", "content": "42", "tool_call_id": "t1", "name": None},
        {"role": "user", "content": [{"type": "text", "text": "hi"}], "metadata": {}},
        {"role": "assistant", "content": "x", "refusal": None, "metadata": {"k": 1}},
    ]

    def loaded(self) -> ConversationState:
        state = ConversationState("c")
        for _ in self.MESSAGES:
            state.add_message("user", "placeholder")
        doc = state.to_dict()
        by_id = {n["node_id"]: n for n in doc["nodes"]}
        for node, message in zip(state.get_path()[1:], self.MESSAGES, strict=True):
            by_id[node.node_id]["message"] = message
        return ConversationState.from_dict(doc)

    def test_records_give_what_models_give(self) -> None:
        original = [Message.model_validate(m) for m in self.MESSAGES]
        state = self.loaded()
        path = state.get_path()[1:]
        assert [n.role for n in path] == [m.role for m in original]
        assert [n.content for n in path] == [m.content for m in original]
        assert [n.message_dict() for n in path] == [m.to_dict() for m in original]
        assert all(n.has_message for n in path)
        assert not state.root.has_message
        assert state.get_current_messages() == original

    def test_a_change_to_the_built_message_is_saved(self) -> None:
        state = self.loaded()
        node = state.get_path()[1]
        message = node.message
        assert message is not None
        assert message is node.message  # built once, then kept
        message.content = "changed"
        assert node.content == "changed"
        again = ConversationState.from_dict(state.to_dict())
        assert again.get_node(node.node_id).content == "changed"

    def test_a_record_is_as_strict_as_the_model(self) -> None:
        doc = self.loaded().to_dict()
        doc["nodes"][1]["message"]["role"] = ""
        with pytest.raises(FormatError, match=r"nodes\[1\]\.message\.role"):
            ConversationState.from_dict(doc)
