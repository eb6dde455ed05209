"""Navigating like a chat UI: switch_to(descend=True), sibling positions, remembered choices."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convtree import (
    ConversationState,
    FormatError,
    SiblingPosition,
    TreeOperationError,
    open_storage,
)


@pytest.fixture
def chat() -> ConversationState:
    """q -> a1 -> u1 -> {r1, r1b}; q -> a2 -> u2 -> r2 (regenerated a1 into a2)."""
    state = ConversationState("chat")
    state.add_message("user", "question", node_id="q")
    state.add_message("assistant", "answer 1", node_id="a1")
    state.add_message("user", "more?", node_id="u1")
    state.add_message("assistant", "reply 1", node_id="r1")
    state.add_alternative("assistant", "reply 1b", node_id="r1b")
    state.switch_to("r1")  # the user prefers the first reply
    state.switch_to("a1")
    state.add_alternative("assistant", "answer 2", node_id="a2")
    state.add_message("user", "more?", node_id="u2")
    state.add_message("assistant", "reply 2", node_id="r2")
    return state


class TestDescend:
    def test_switching_back_lands_where_the_user_was(self, chat: ConversationState) -> None:
        assert chat.switch_to("a1", descend=True).node_id == "r1"  # not the newer r1b
        assert chat.switch_to("a2", descend=True).node_id == "r2"

    def test_without_descend_the_cursor_stops_at_the_node(self, chat: ConversationState) -> None:
        assert chat.switch_to("a1").node_id == "a1"

    def test_a_branch_never_visited_ends_at_its_newest_child(self) -> None:
        state = ConversationState()
        q = state.add_message("user", "q")
        for i in range(3):
            state.add_message("assistant", f"a{i}", parent_id=q, node_id=f"a{i}")
        state.switch_to(state.root)
        state.prune("a2")
        assert state.switch_to(q, descend=True).node_id == "a1"

    def test_descending_from_an_ancestor_of_the_cursor_follows_the_cursor(
        self, chat: ConversationState
    ) -> None:
        chat.switch_to("u1")
        assert chat.switch_to("q", descend=True).node_id == "r1"
        chat.switch_to("r1b")
        assert chat.switch_to(chat.root, descend=True).node_id == "r1b"

    def test_descend_from_the_cursor_goes_on_to_the_end(self, chat: ConversationState) -> None:
        chat.switch_to("a2")
        assert chat.switch_to("a2", descend=True).node_id == "r2"

    def test_branches_at_the_root(self) -> None:
        state = ConversationState()
        state.add_message("system", "be brief", node_id="s1")
        state.add_message("user", "hi", node_id="h1")
        state.add_message("system", "be verbose", parent_id=state.root, node_id="s2")
        assert state.sibling_position("s2") == (1, 2)
        assert state.switch_sibling(-1).node_id == "h1"
        assert state.switch_to(state.root, descend=True).node_id == "h1"

    def test_an_edit_remembers_the_branch_it_left(self, chat: ConversationState) -> None:
        chat.switch_to("r1")
        chat.edit_message("q", "a better question", node_id="q2")
        chat.add_message("assistant", "better answer", node_id="b")
        assert chat.switch_to("q", descend=True).node_id == "r1"
        assert chat.switch_sibling(1, "q").node_id == "b"

    def test_pruning_the_remembered_child_falls_back_to_the_newest(
        self, chat: ConversationState
    ) -> None:
        chat.switch_to("a2", descend=True)
        chat.prune("r1")
        assert chat.switch_to("a1", descend=True).node_id == "r1b"
        assert "u1" not in chat.to_dict().get("active_children", {})

    def test_pruning_below_the_cursor_path_keeps_navigation_working(
        self, chat: ConversationState
    ) -> None:
        chat.switch_to("r1")
        chat.prune("u1")
        assert chat.current_node_id == "a1"
        assert chat.switch_to("q", descend=True).node_id == "a1"
        chat.add_message("user", "again", node_id="u3")
        assert chat.switch_to("a2", descend=True).node_id == "r2"
        assert chat.switch_to("q", descend=True).node_id == "r2"
        chat.switch_to("a1", descend=True)
        assert chat.current_node_id == "u3"


class TestSiblings:
    def test_position_and_its_text(self, chat: ConversationState) -> None:
        assert chat.sibling_position("a2") == SiblingPosition(1, 2)
        assert str(chat.sibling_position("a2")) == "2 / 2"
        index, count = chat.sibling_position("a1")
        assert (index, count) == (0, 2)
        assert chat.sibling_position(chat.root) == (0, 1)
        assert chat.sibling_position() == (0, 1)  # the cursor r2 has no siblings

    def test_previous_and_next(self, chat: ConversationState) -> None:
        assert chat.switch_sibling(-1, "a2").node_id == "r1"
        assert chat.switch_sibling(1, "a1", descend=False).node_id == "a2"

    def test_no_sibling_there(self, chat: ConversationState) -> None:
        with pytest.raises(TreeOperationError, match=r"alternative 2 / 2; there is none \+1"):
            chat.switch_sibling(1, "a2")
        with pytest.raises(TreeOperationError, match="1 / 1"):
            chat.switch_sibling(-1, chat.root)

    def test_a_wide_fan_out(self) -> None:
        state = ConversationState()
        q = state.add_message("user", "q")
        for i in range(5000):
            state.add_message("assistant", f"a{i}", parent_id=q, node_id=f"a{i}")
        assert state.sibling_position("a4999") == (4999, 5000)
        assert state.switch_sibling(-4999, "a4999").node_id == "a0"
        assert state.switch_to(q, descend=True).node_id == "a0"


class TestPersisted:
    def test_choices_survive_a_round_trip(self, chat: ConversationState) -> None:
        chat.switch_to("a2", descend=True)
        doc = chat.to_dict()
        assert doc["active_children"]["u1"] == "r1"
        loaded = ConversationState.from_dict(doc)
        assert loaded.switch_to("a1", descend=True).node_id == "r1"

    def test_a_state_without_choices_writes_no_field(self) -> None:
        state = ConversationState()
        state.add_message("user", "hi")
        assert "active_children" not in state.to_dict()

    def test_a_2_0_document_loads_and_descends_to_the_newest(self) -> None:
        state = ConversationState()
        q = state.add_message("user", "q", node_id="q")
        state.add_message("assistant", "a", node_id="a")
        state.add_message("assistant", "b", parent_id=q, node_id="b")
        state.switch_to("q")
        doc = state.to_dict()
        doc.pop("active_children", None)
        doc["schema_version"] = "2.0.0"
        assert ConversationState.from_dict(doc).switch_to("q", descend=True).node_id == "b"

    @pytest.mark.parametrize(
        ("choices", "where"),
        [({"q": "zzz"}, "active_children.q"), ({"nope": "a"}, "active_children.nope")],
    )
    def test_a_choice_naming_no_child_is_refused(self, choices: dict[str, str], where: str) -> None:
        state = ConversationState()
        state.add_message("user", "q", node_id="q")
        state.add_message("assistant", "a", node_id="a")
        doc = state.to_dict()
        doc["active_children"] = choices
        with pytest.raises(FormatError, match="is not a child") as info:
            ConversationState.from_dict(doc)
        assert info.value.path == where

    def test_choices_survive_a_store(self, chat: ConversationState) -> None:
        async def run() -> ConversationState | None:
            async with open_storage("memory://") as storage:
                await storage.save_conversation(chat)
                loaded = await storage.load_conversation("chat")
                assert loaded is not None
                loaded.switch_to("a2", descend=True)  # only the head changes
                await storage.save_conversation(loaded)
                return await storage.load_conversation("chat")

        loaded = asyncio.run(run())
        assert loaded is not None
        assert loaded.current_node_id == "r2"
        assert loaded.switch_to("a1", descend=True).node_id == "r1"


class TestDeep:
    def test_a_100_000_deep_chain(self) -> None:
        state = ConversationState()
        first = state.add_message("user", "0")
        for i in range(1, 100_000):
            state.add_message("user" if i % 2 == 0 else "assistant", str(i))
        end = state.current_node_id
        state.switch_to(first)
        assert state.switch_to(state.root, descend=True).node_id == end
        state.switch_to(first)
        state.add_alternative("assistant", "other start", node_id="other")  # sibling of `first`
        assert state.switch_sibling(-1).node_id == end
        assert state.sibling_position(first) == (0, 2)
        assert (
            ConversationState.from_dict(state.to_dict()).switch_to("other", descend=False).node_id
            == "other"
        )

    def test_a_comb_built_depth_first_jumps_cheaply(self) -> None:
        """A 100,000-deep chain with a leaf beside every node, built by jumping back up."""
        state = ConversationState()
        spine = state.add_message("user", "0")
        for i in range(1, 100_000):
            state.add_message("assistant", f"leaf {i}", parent_id=spine)  # cursor to the leaf
            state.add_message("assistant", f"x {i}")  # one step down
            spine = state.add_message("user", str(i), parent_id=spine)  # a jump up two levels
        assert state.depth() == 100_000
        state.switch_to(state.root, descend=True)
        assert state.current_node_id == spine.node_id


# --- a model of the rule: the active child is the one whose subtree holds the
# --- cursor's most recent position, else the last child.


def _model_end(state: ConversationState, start: str, visits: dict[str, int]) -> str:
    children = {n.node_id: [c.node_id for c in state.children(n)] for n in state.nodes()}
    latest: dict[str, int] = {}
    for node in reversed(list(state.nodes())):  # children before parents
        best = visits.get(node.node_id, -1)
        for kid in children[node.node_id]:
            best = max(best, latest[kid])
        latest[node.node_id] = best
    node_id = start
    while children[node_id]:
        kids = children[node_id]
        if len(kids) == 1:
            node_id = kids[0]
            continue
        best = max(kids, key=lambda k: latest[k])
        node_id = best if latest[best] >= 0 else kids[-1]
    return node_id


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["append", "append_at", "alternative", "edit", "switch", "descend"]),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_descend_follows_the_most_recent_position(ops: list[tuple[str, int]]) -> None:
    state = ConversationState()
    visits: dict[str, int] = {}
    for tick, (op, pick) in enumerate(ops):
        ids = [n.node_id for n in state.nodes()]
        some = ids[pick % len(ids)]
        non_root = ids[1:]
        if op == "append":
            state.add_message("user", "m")
        elif op == "append_at":
            state.add_message("user", "m", parent_id=some)
        elif op == "alternative" and state.current_node_id != state.root.node_id:
            state.add_alternative("assistant", "alt")
        elif op == "edit" and non_root:
            state.edit_message(non_root[pick % len(non_root)], "edited")
        elif op == "switch":
            state.switch_to(some)
        elif op == "descend":
            state.switch_to(some, descend=True)
        visits[state.current_node_id] = tick
    doc = state.to_dict()
    for node in list(state.nodes()):
        expected = _model_end(state, node.node_id, visits)
        loaded = ConversationState.from_dict(doc)  # what a later session sees
        assert loaded.switch_to(node.node_id, descend=True).node_id == expected
    last = ops[-1][1] % len(state)
    node_id = [n.node_id for n in state.nodes()][last]
    expected = _model_end(state, node_id, visits)
    assert state.switch_to(node_id, descend=True).node_id == expected
