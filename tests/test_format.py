"""Invalid documents raise FormatError saying what is wrong and where; nothing is dropped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from convtree import ConversationState, FormatError


def valid() -> dict[str, Any]:
    state = ConversationState("doc")
    state.add_message("system", "s", node_id="s")
    state.add_message("user", "u", node_id="u")
    state.add_message("assistant", "a", node_id="a")
    state.add_alternative("assistant", "b", node_id="b")
    return state.to_dict()


ROOT = "<the root's id>"  # an expected node id: the generated id of the root


def root_id(doc: dict[str, Any]) -> str:
    return str(doc["nodes"][0]["node_id"])


def _dup(doc: dict[str, Any]) -> None:
    doc["nodes"].append(dict(doc["nodes"][2]))


def _several_roots(doc: dict[str, Any]) -> None:
    doc["edges"] = [e for e in doc["edges"] if e[1] != "u"]


def _cycle(doc: dict[str, Any]) -> None:
    # u <- a and a <- u: detach u from s and hang it under a
    doc["edges"] = [e for e in doc["edges"] if e[1] != "u"] + [["a", "u"]]


def _second_parent(doc: dict[str, Any]) -> None:
    doc["edges"].append(["s", "a"])


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str | None, str | None]] = [
    # (case, corruption, message fragment, path, node id)
    ("duplicate id", _dup, "duplicate node id (first at nodes[2])", "nodes[5].node_id", "u"),
    (
        "dangling parent",
        lambda d: d["edges"].append(["ghost", "a"]),
        "edge from an unknown node",
        "edges[4][0]",
        "ghost",
    ),
    (
        "dangling child",
        lambda d: d["edges"].append(["a", "ghost"]),
        "edge to an unknown node",
        "edges[4][1]",
        "ghost",
    ),
    ("second parent", _second_parent, "second parent 's'", "edges[4]", "a"),
    ("self loop", lambda d: d["edges"].append(["b", "b"]), "to itself", "edges[4]", "b"),
    ("several roots", _several_roots, "2 root nodes", "nodes[2]", "u"),
    ("cycle", _cycle, "not reachable from the root", "nodes[2]", "u"),
    (
        "no root",
        lambda d: d["edges"].append(["b", d["nodes"][0]["node_id"]]),
        "no root node",
        "edges[4]",
        ROOT,
    ),
    (
        "unknown cursor",
        lambda d: d.update(current_node_id="nope"),
        "cursor names no node",
        "current_node_id",
        "nope",
    ),
    (
        "non-root without message",
        lambda d: d["nodes"][3].update(message=None),
        "only the root may have no message",
        "nodes[3].message",
        "a",
    ),
    ("empty nodes", lambda d: d.update(nodes=[], edges=[]), "at least 1 item", "nodes", None),
    ("missing field", lambda d: d.pop("edges"), "Field required", "edges", None),
    (
        "wrong role type",
        lambda d: d["nodes"][2]["message"].update(role=5),
        "valid string",
        "nodes[2].message.role",
        "u",
    ),
    (
        "wrong content type",
        lambda d: d["nodes"][2]["message"].update(content={"x": 1}),
        "valid string, or input should be a valid list",
        "nodes[2].message.content",
        "u",
    ),
    (
        "naive timestamp",
        lambda d: d["nodes"][1].update(timestamp="2025-01-01T00:00:00"),
        "timezone",
        "nodes[1].timestamp",
        "s",
    ),
    (
        "numeric timestamp",
        lambda d: d.update(updated_at=1700000000),
        "not a number",
        "updated_at",
        None,
    ),
    ("bad edge", lambda d: d["edges"].append(["a"]), "Field required", "edges[4][1]", None),
    ("edge of ints", lambda d: d["edges"].append([1, 2]), "valid string", "edges[4][0]", None),
    ("metadata list", lambda d: d.update(metadata=[1]), "valid dictionary", "metadata", None),
    (
        "node id int",
        lambda d: d["nodes"][1].update(node_id=3),
        "valid string",
        "nodes[1].node_id",
        None,
    ),
    (
        "empty conversation id",
        lambda d: d.update(conversation_id=""),
        "at least 1 character",
        "conversation_id",
        None,
    ),
    (
        "2.x label",
        lambda d: d.update(schema_version="2.0.0-beta"),
        "not a version",
        "schema_version",
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "corrupt", "fragment", "path", "node_id"), CASES, ids=[c[0] for c in CASES]
)
def test_invalid_document(
    case: str,
    corrupt: Callable[[dict[str, Any]], None],
    fragment: str,
    path: str | None,
    node_id: str | None,
) -> None:
    doc = valid()
    if node_id == ROOT:
        node_id = root_id(doc)
    corrupt(doc)
    with pytest.raises(FormatError) as info:
        ConversationState.from_dict(doc)
    error = info.value
    assert isinstance(error, ValueError)
    assert fragment in str(error)
    assert error.path == path
    assert error.node_id == node_id
    if path:
        assert f"at {path}" in str(error)


def test_the_valid_document_loads() -> None:
    state = ConversationState.from_dict(valid())
    assert len(state) == 5


def test_node_and_edge_order_do_not_matter() -> None:
    doc = valid()
    doc["nodes"].reverse()
    # edges of different parents may interleave in any order; siblings keep theirs
    doc["edges"] = [doc["edges"][1], doc["edges"][2], doc["edges"][0], doc["edges"][3]]
    state = ConversationState.from_dict(doc)
    assert [n.node_id for n in state.children("u")] == ["a", "b"]
    assert len(state) == 5


def test_a_message_less_root_round_trips_and_a_root_with_a_message_too() -> None:
    doc = valid()
    assert doc["nodes"][0]["message"] is None
    state = ConversationState.from_dict(doc)
    assert state.root.message is None
    assert [m.content for m in state.get_current_messages()] == ["s", "u", "b"]


def test_a_loaded_tree_is_the_tree_dataknobs_structures_builds() -> None:
    """`from_dict` sets the `Tree` fields itself (`_PLAIN_TREE`, checked against the
    installed dataknobs-structures); the result links, walks and grows as a tree built
    with ``Tree()`` does."""
    from dataknobs_structures import Tree

    from convtree.state import _PLAIN_TREE

    assert _PLAIN_TREE  # else loads take the slower, generic path
    state = ConversationState("t")
    state.add_message("system", "s")
    first = state.add_message("user", "q")
    state.add_message("assistant", "a1")
    state.add_alternative("assistant", "a2")
    state.switch_to(first.node_id)
    state.add_message("assistant", "a3")
    loaded = ConversationState.from_dict(state.to_dict())

    def shape(tree: Tree) -> Any:
        kids = tree.children or []
        assert all(type(k) is Tree and k.parent is tree for k in kids)
        return (tree.data.node_id, [shape(k) for k in kids])

    assert shape(loaded._root) == shape(state._root)
    assert loaded._root.find_nodes(lambda t: t.data.node_id == first.node_id)[0].depth == 2
    leaf = loaded.get_path()[-1].node_id
    loaded.add_message("user", "more")  # grows a node whose children list it built
    assert [n.node_id for n in loaded.get_path()][-2] == leaf
    assert ConversationState.from_dict(loaded.to_dict()) == loaded


def test_node_records_validated_apart_name_their_place_in_the_document() -> None:
    """A store validates only some records (``nodes[k]`` of the document it assembles):
    the error names that place and that node, not the record's index in the batch."""
    from convtree.format import validate_node_records

    stamp = "2025-01-01T00:00:00+00:00"
    records = {
        3: {"node_id": "a", "message": None, "timestamp": stamp},
        7: {"node_id": "b", "message": {"role": 5}, "timestamp": stamp},
    }
    with pytest.raises(FormatError) as err:
        validate_node_records(records, {3: "a", 7: "b"}.__getitem__)
    assert err.value.path == "nodes[7].message.role"
    assert err.value.node_id == "b"
