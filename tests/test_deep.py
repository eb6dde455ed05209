"""A 100,000-deep chain works in every public function (no RecursionError)."""

from __future__ import annotations

import pytest

from convtree import ConversationState, render_tree

DEPTH = 100_000


@pytest.fixture(scope="module")
def deep() -> ConversationState:
    state = ConversationState("deep")
    for i in range(DEPTH):
        state.add_message("user" if i % 2 else "assistant", f"message {i}")
    return state


def test_navigation(deep: ConversationState) -> None:
    assert len(deep) == DEPTH + 1
    assert deep.depth() == DEPTH
    assert len(deep.get_current_messages()) == DEPTH
    assert len(deep.get_path()) == DEPTH + 1
    assert [n.content for n in deep.leaves()] == [f"message {DEPTH - 1}"]
    assert sum(1 for _ in deep.nodes()) == DEPTH + 1
    assert "100001 nodes" in repr(deep)
    middle = deep.get_path()[DEPTH // 2].node_id
    assert deep.get_node(middle[:10]).node_id == middle
    assert render_tree(deep).count("\n") == DEPTH


def test_serialization(deep: ConversationState) -> None:
    doc = deep.to_dict()
    assert len(doc["nodes"]) == DEPTH + 1
    again = ConversationState.from_dict(doc)
    assert again.depth() == DEPTH
    assert ConversationState.from_json(deep.to_json()) == deep


def test_fork_and_prune(deep: ConversationState) -> None:
    fork = deep.fork()
    assert len(fork) == DEPTH + 1
    first = fork.get_path()[1].node_id
    assert fork.prune(first) == DEPTH
    assert len(fork) == 1
    assert fork.current_node_id == fork.root.node_id
    assert len(deep) == DEPTH + 1
