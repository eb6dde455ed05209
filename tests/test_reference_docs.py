"""Every document the reference (dataknobs-llm) wrote loads with its tree, path and leaves."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest

from convtree import CURRENT_SCHEMA_VERSION, ConversationState

from .conftest import load_json, reference_documents, role_content

DOCS = reference_documents()


def test_fixtures_cover_every_reference_version() -> None:
    names = {path.name for _, path in DOCS}
    assert {"v0.0.0.json", "v1.0.0.json", "v1.1.0.json", "v1.1.0-shuffled-edges.json"} <= names
    assert len({name for name, _ in DOCS}) == 3


@pytest.mark.parametrize(("name", "path"), DOCS, ids=[f"{n}/{p.name}" for n, p in DOCS])
def test_reference_document_loads_as_the_reference_reported(name: str, path: Path) -> None:
    expected = load_json(path.parent / "expected.json")
    doc = load_json(path)
    original = copy.deepcopy(doc)

    state = ConversationState.from_dict(doc)

    assert doc == original, "loading must not mutate the caller's document"
    assert state.conversation_id == expected["conversation_id"]
    assert len(state) == expected["node_count"]
    assert state.metadata == expected["metadata"]
    assert role_content(state) == expected["current_path"]
    assert [role_content(state, leaf.node_id) for leaf in state.leaves()] == expected["leaf_paths"]
    # ids are kept as the reference wrote them
    assert {n.node_id for n in state.nodes()} == {n["node_id"] for n in doc["nodes"]}
    assert state.current_node_id == doc["current_node_id"]


@pytest.mark.parametrize(("name", "path"), DOCS, ids=[f"{n}/{p.name}" for n, p in DOCS])
def test_reference_document_round_trips_at_the_current_version(name: str, path: Path) -> None:
    state = ConversationState.from_dict(load_json(path))
    doc = state.to_dict()
    assert doc["schema_version"] == CURRENT_SCHEMA_VERSION
    again = ConversationState.from_json(state.to_json())
    assert again == state
    assert again.to_dict() == doc


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("name", sorted({n for n, _ in DOCS}))
def test_any_order_of_nodes_and_edges_gives_the_same_tree(name: str, seed: int) -> None:
    """Reference defect 5: edge order must not change (or shrink) the tree."""
    folder = DOCS[0][1].parent.parent / name
    doc = load_json(folder / "v1.1.0.json")
    expected = load_json(folder / "expected.json")
    rng = random.Random(seed)
    rng.shuffle(doc["edges"])
    rng.shuffle(doc["nodes"])
    state = ConversationState.from_dict(doc)
    assert len(state) == expected["node_count"]
    assert [role_content(state, leaf.node_id) for leaf in state.leaves()] == expected["leaf_paths"]


def test_tool_calls_are_restored_into_the_message_from_1_0_0() -> None:
    folder = DOCS[0][1].parent.parent / "tool_calls"
    for version in ("v0.0.0.json", "v1.0.0.json", "v1.1.0.json"):
        state = ConversationState.from_dict(load_json(folder / version))
        call = state.get_node("0.0").message
        assert call is not None
        assert call.tool_calls == [
            {"name": "get_weather", "parameters": {"city": "Tallinn", "unit": "C"}, "id": "call_1"}
        ], version
        tool = state.get_node("0.0.0").message
        assert tool is not None
        assert (tool.name, tool.tool_call_id) == ("get_weather", "call_1")


def test_naive_reference_timestamps_are_read_as_utc() -> None:
    state = ConversationState.from_dict(load_json(DOCS[0][1]))
    for node in state.nodes():
        assert node.timestamp.utcoffset() is not None
        assert node.timestamp.isoformat() == "2025-03-01T12:00:00+00:00"
    assert state.created_at.isoformat() == "2025-03-01T12:00:00+00:00"


def test_node_metadata_and_branch_names_survive_migration() -> None:
    folder = DOCS[0][1].parent.parent / "regenerated"
    state = ConversationState.from_dict(load_json(folder / "v0.0.0.json"))
    node = state.get_node("v1")  # a branch name works as a reference
    assert node.node_id == "0.1"
    assert node.metadata == {
        "usage": {"prompt_tokens": 12, "completion_tokens": 31},
        "cost_usd": 0.0002,
    }
