"""Property tests: random operation sequences keep the tree valid and round-trip exactly;
random corruptions of valid documents raise only FormatError."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from convtree import ConversationState, FormatError

TEXT = st.text(max_size=20)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
METADATA = st.none() | st.dictionaries(TEXT, JSON, max_size=3)
ROLES = st.sampled_from(["system", "user", "assistant", "tool"])
CONTENT = (
    TEXT
    | st.none()
    | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2)
)


def check_tree(state: ConversationState) -> None:
    """Index, tree and cursor agree; every node is reachable exactly once."""
    seen: dict[str, Any] = {}
    stack = [state.message_tree]
    while stack:
        tree = stack.pop()
        node_id = tree.data.node_id
        assert node_id not in seen, f"node {node_id} reached twice"
        seen[node_id] = tree
        for kid in tree.children or ():
            assert kid.parent is tree
            stack.append(kid)
    assert set(seen) == {n.node_id for n in state.nodes()}
    assert len(seen) == len(state)
    assert state.current_node_id in seen
    for node_id in seen:
        assert state.get_node(node_id).node_id == node_id
    assert state.get_path()[0] is state.root
    assert state.get_path()[-1] is state.current_node


class Conversation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = ConversationState("prop")
        # shadow model: parent of each node id and children order
        self.parent: dict[str, str | None] = {self.state.root.node_id: None}
        self.kids: dict[str, list[str]] = {self.state.root.node_id: []}
        self.cursor = self.state.root.node_id

    def _added(self, node_id: str, parent: str) -> None:
        self.parent[node_id] = parent
        self.kids[node_id] = []
        self.kids[parent].append(node_id)
        self.cursor = node_id

    def _any(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(list(self.parent)))  # insertion order: replayable

    @rule(data=st.data(), role=ROLES, content=CONTENT, metadata=METADATA, at_cursor=st.booleans())
    def add(
        self, data: st.DataObject, role: str, content: Any, metadata: Any, at_cursor: bool
    ) -> None:
        parent = self.cursor if at_cursor else self._any(data)
        node = self.state.add_message(
            role, content, parent_id=None if at_cursor else parent, metadata=metadata
        )
        self._added(node.node_id, parent)

    @precondition(lambda self: self.parent[self.cursor] is not None)
    @rule(role=ROLES, content=CONTENT, branch=st.none() | st.sampled_from(["b1", "b2"]))
    def alternative(self, role: str, content: Any, branch: str | None) -> None:
        parent = self.parent[self.cursor]
        assert parent is not None
        node = self.state.add_alternative(role, content, branch_name=branch)
        self._added(node.node_id, parent)

    @rule(data=st.data(), content=CONTENT)
    def edit(self, data: st.DataObject, content: Any) -> None:
        target = self._any(data)
        parent = self.parent[target]
        if parent is None:
            return
        node = self.state.edit_message(target, content)
        self._added(node.node_id, parent)

    @rule(data=st.data())
    def switch(self, data: st.DataObject) -> None:
        target = self._any(data)
        self.state.switch_to(target)
        self.cursor = target

    @rule(data=st.data())
    def prune(self, data: st.DataObject) -> None:
        target = self._any(data)
        parent = self.parent[target]
        if parent is None:
            return
        removed = []
        stack = [target]
        while stack:
            node_id = stack.pop()
            removed.append(node_id)
            stack.extend(self.kids[node_id])
        assert self.state.prune(target) == len(removed)
        self.kids[parent].remove(target)
        for node_id in removed:
            del self.parent[node_id]
            del self.kids[node_id]
        if self.cursor in removed:
            self.cursor = parent

    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        target = self._any(data)
        fork = self.state.fork(target)
        check_tree(fork)
        path = [n.node_id for n in self.state.get_path(target)]
        assert [n.node_id for n in fork.nodes()] == path
        assert fork.metadata["forked_from"]["node_id"] == target

    @invariant()
    def matches_the_model(self) -> None:
        check_tree(self.state)
        assert self.state.current_node_id == self.cursor
        for node_id, kids in self.kids.items():
            assert [n.node_id for n in self.state.children(node_id)] == kids
        # The O(1) counters storage reads agree with a full walk.
        assert self.state.leaf_count == len(self.state.leaves())
        path = [n for n in self.state.get_path() if n.has_message]
        summary = self.state.path_summary()
        assert summary.message_count == len(path)
        assert summary.first_user is next((n for n in path if n.role == "user"), None)

    @invariant()
    def round_trips(self) -> None:
        doc = self.state.to_dict()
        again = ConversationState.from_dict(json.loads(json.dumps(doc)))
        assert again == self.state
        assert again.leaf_count == self.state.leaf_count
        assert again.to_dict() == doc


TestConversation = Conversation.TestCase
TestConversation.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ------------------------------------------------------------- corruptions


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    state = ConversationState("doc", draw(METADATA))
    for _ in range(draw(st.integers(0, 8))):
        nodes = list(state.nodes())
        parent = draw(st.sampled_from(nodes))
        state.add_message(
            draw(ROLES),
            draw(CONTENT),
            parent_id=parent.node_id,
            branch_name=draw(st.none() | st.just("b")),
        )
    state.switch_to(draw(st.sampled_from(list(state.nodes()))).node_id)
    return state.to_dict()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def _parent_of(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


ANY_VALUE = JSON | st.sampled_from([float("nan"), float("inf"), -0.0, 2**80, "", "\x00"])


@st.composite
def corrupted(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(documents()))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        kind = draw(st.sampled_from(["replace", "delete", "duplicate", "edge", "version", "swap"]))
        path = draw(st.sampled_from(paths))
        container = _parent_of(doc, path)
        if kind == "replace":
            container[path[-1]] = draw(ANY_VALUE)
        elif kind == "delete":
            del container[path[-1]]
        elif kind == "duplicate" and isinstance(container, list):
            container.append(copy.deepcopy(container[path[-1]]))
        elif (
            kind == "edge"
            and isinstance(doc.get("edges"), list)
            and isinstance(doc.get("nodes"), list)
        ):
            ids = [n.get("node_id") for n in doc["nodes"] if isinstance(n, dict)] + ["ghost"]
            doc["edges"].append([draw(st.sampled_from(ids)), draw(st.sampled_from(ids))])
        elif kind == "version":
            doc["schema_version"] = draw(
                st.sampled_from(
                    ["0.0.0", "1.0.0", "1.1.0", "1.9.0", "2.1.0", "3.0.0", "2", "x", None, 2]
                )
            )
        elif kind == "swap" and isinstance(container, list) and len(container) > 1:
            container.reverse()
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_corrupted_documents_raise_only_format_error(doc: dict[str, Any]) -> None:
    before = copy.deepcopy(doc)
    try:
        state = ConversationState.from_dict(doc)
    except FormatError as exc:
        error: FormatError | None = exc
    else:
        error = None
        check_tree(state)
        ConversationState.from_dict(state.to_dict())
    assert error is None or str(error)
    assert json.dumps(doc, sort_keys=True) == json.dumps(before, sort_keys=True), "input mutated"


@settings(max_examples=200, deadline=None)
@given(documents(), st.data())
def test_truncated_or_garbled_json_raises_only_format_error(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    text = json.dumps(doc)
    cut = data.draw(st.integers(0, len(text) - 1))
    garbage = data.draw(st.binary(max_size=8))
    for broken in (text[:cut], text[:cut].encode() + garbage):
        with contextlib.suppress(FormatError):
            ConversationState.from_json(broken)


@settings(max_examples=200, deadline=None)
@given(documents())
def test_valid_documents_round_trip_through_json(doc: dict[str, Any]) -> None:
    state = ConversationState.from_dict(doc)
    assert state.to_dict() == doc
    assert ConversationState.from_json(state.to_json()) == state
