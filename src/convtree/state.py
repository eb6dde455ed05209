"""ConversationState: a tree of message nodes and a cursor."""

from __future__ import annotations

import json
import uuid
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from dataknobs_structures import Tree
from pydantic import ValidationError

from ._branches import BranchMemory
from ._json import (
    MAX_DEPTH,
    check_depth,
    copy_json,
    format_error_from_validation,
    gc_paused,
    json_text,
    valid_text,
)
from .changes import ChangeSet, SavedRevision
from .errors import (
    AmbiguousReferenceError,
    ConflictError,
    FormatError,
    NodeNotFoundError,
    TreeOperationError,
)
from .format import CURRENT_SCHEMA_VERSION, ParsedDocument, parse_document
from .message import Message
from .migrations import parse_schema_version, upgrade_document
from .node import ConversationNode, new_node_id

if TYPE_CHECKING:
    from rich.tree import Tree as RichTree

    from .diff import BranchDiff
    from .replay import ReplayStep, Respond
    from .usage import Usage

__all__ = ["ConversationState", "NodeRef", "PathSummary", "SiblingPosition"]

NodeRef = str | ConversationNode
"""A node reference: an id, a unique id prefix, a branch name, or a node (by its id).

A [`ConversationNode`][convtree.ConversationNode] names the node with its id, so a node of a loaded
copy or of a fork can be used on the other.
"""

_MAX_NODE_ID_LENGTH = 256
_CURRENT = parse_schema_version(CURRENT_SCHEMA_VERSION)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Journal:
    """What changed since the state was last loaded from or saved to a store.

    [`changes()`][convtree.ConversationState.changes] publishes it as a
    [`ChangeSet`][convtree.ChangeSet] .
    """

    base: SavedRevision  # the stored revision this state was loaded at / saved as
    base_metadata: str  # the conversation metadata at that revision, as JSON text
    added: dict[str, None] = field(default_factory=dict)  # new node ids, in order
    changed: set[str] = field(default_factory=set)  # stored nodes marked changed
    removed: set[str] = field(default_factory=set)  # stored nodes pruned
    # Stored nodes whose metadata or message was handed out, as JSON text then:
    # compared when the changes are asked for, to find changes made inside them.
    handed_out: dict[str, str] = field(default_factory=dict)


class _Watch:
    """Hears about reads and assignments of a conversation's nodes (see `NodeWatch`)."""

    __slots__ = ("journal",)

    def __init__(self) -> None:
        self.journal: _Journal | None = None

    def reading(self, node: ConversationNode) -> None:
        journal = self.journal
        if journal is None:
            return  # never saved: the next save writes everything
        node_id = node.node_id
        if node_id in journal.handed_out or node_id in journal.added or node_id in journal.changed:
            return
        journal.handed_out[node_id] = json_text(node.to_dict())

    def changed(self, node: ConversationNode) -> None:
        journal = self.journal
        if journal is not None and node.node_id not in journal.added:
            journal.changed.add(node.node_id)


class SiblingPosition(NamedTuple):
    """Where a node stands among its siblings: ``index`` (from 0) of ``count``.

    ``str()`` gives what a chat UI shows, 1-based: ``"2 / 3"``.
    """

    # These shadow tuple.index/tuple.count on purpose: the pair reads as (index, count).
    index: int  # type: ignore[assignment]
    count: int  # type: ignore[assignment]

    def __str__(self) -> str:
        return f"{self.index + 1} / {self.count}"


@dataclass(frozen=True)
class PathSummary:
    """What a conversation list shows about the active path, kept up to date cheaply."""

    message_count: int  # messages from the root to the cursor
    first_user: ConversationNode | None  # the first user message on the path


class ConversationState:
    """A conversation: a rooted tree of message nodes and a cursor.

    Every regenerated reply, edited message or alternative is a branch that is
    kept. The cursor (`current_node_id`) selects the active path;
    `get_current_messages()` is that path, the list to send to a model.

    A new conversation has a message-less root, so it can branch at its very
    first message (two alternative system prompts are two children of the root).
    Documents written by dataknobs-llm have a root that holds a message; they
    load as they are.

    Node references (``ref``) accept a node id, a branch name, a unique prefix of
    an id, or a [`ConversationNode`][convtree.ConversationNode] . An exact id wins over a branch
    name,
    which wins over a prefix. Exact ids are O(1); branch names and prefixes are
    O(log n) after an O(n log n) index rebuild following a change.

    Operations are O(depth) or better and iterative: a 100,000-deep chain works
    in every method. ``message_tree`` is the underlying
    `dataknobs_structures.Tree`; read it, but change the conversation only
    through these methods, which keep the id index in step.

    Not thread-safe: guard a state shared between threads with a lock.

    Example:
        ```python
        state = ConversationState(metadata={"user_id": "alice"})
        state.add_message("user", "What is a B-tree?")
        state.add_message("assistant", "A balanced search tree.")
        state.add_alternative("assistant", "A tree for disks.")  # regenerate
        [m.content for m in state.get_current_messages()]
        # ['What is a B-tree?', 'A tree for disks.']
        len(state.leaves())  # 2
        ```
    """

    __slots__ = (
        "_branches",
        "_cursor",
        "_extra",
        "_index",
        "_journal",
        "_leaf_count",
        "_lookup",
        "_metadata",
        "_path_memo",
        "_root",
        "_schema_label",
        "_watch",
        "conversation_id",
        "created_at",
        "updated_at",
    )

    def __init__(
        self,
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Create a new conversation holding only a message-less root.

        Args:
            conversation_id: Id of the conversation; a new UUID4 hex when ``None``.
            metadata: JSON-compatible conversation metadata (copied).

        Raises:
            FormatError: if the id is not a non-empty string or the metadata is
                not JSON-compatible.
        """
        now = _now()
        self.conversation_id = _check_conversation_id(
            uuid.uuid4().hex if conversation_id is None else conversation_id
        )
        self._metadata = _check_metadata(metadata)
        self.created_at = now
        self.updated_at = now
        self._watch = _Watch()
        root = ConversationNode(new_node_id(), None, now)
        root._watch = self._watch
        self._root = Tree(root)
        self._index: dict[str, Tree] = {root.node_id: self._root}
        self._cursor = self._root
        self._branches = BranchMemory()
        self._lookup: tuple[list[str], dict[str, list[str]]] | None = None
        self._extra: dict[str, Any] | None = None
        self._schema_label = CURRENT_SCHEMA_VERSION
        self._journal: _Journal | None = None
        self._leaf_count = 1
        self._path_memo: tuple[Tree, PathSummary] | None = None

    # ------------------------------------------------------------------ basics

    @property
    def metadata(self) -> dict[str, Any]:
        """Conversation metadata (``user_id``, tags, ...); mutable, JSON-compatible."""
        return self._metadata

    @metadata.setter
    def metadata(self, value: Mapping[str, Any]) -> None:
        self._metadata = _check_metadata(value)
        self._touch()

    @property
    def message_tree(self) -> Tree:
        """The root of the underlying tree (its ``data`` are ConversationNodes)."""
        return self._root

    @property
    def root(self) -> ConversationNode:
        """The root node."""
        node: ConversationNode = self._root.data
        return node

    @property
    def current_node_id(self) -> str:
        """Id of the node the cursor is on. Assigning a reference moves the cursor."""
        node_id: str = self._cursor.data.node_id
        return node_id

    @current_node_id.setter
    def current_node_id(self, ref: NodeRef) -> None:
        self.switch_to(ref)

    @property
    def current_node(self) -> ConversationNode:
        """The node the cursor is on."""
        node: ConversationNode = self._cursor.data
        return node

    def get_current_node(self) -> Tree:
        """The cursor's place in `message_tree`: the `dataknobs_structures.Tree` whose
        ``data`` is the current [`ConversationNode`][convtree.ConversationNode].

        dataknobs-llm's name, kept for code written against it (which reads
        ``.data``, ``.children``, ``.parent``); it returned ``None`` for a cursor
        naming no node, which cannot happen here. For the node itself use
        `current_node`. Read the tree; change it only through this class's methods.
        """
        return self._cursor

    def __len__(self) -> int:
        """Number of nodes, the root included."""
        return len(self._index)

    def __contains__(self, node_id: object) -> bool:
        """Whether a node with exactly this id exists."""
        return isinstance(node_id, str) and node_id in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConversationState):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        depth = len(self._cursor.get_path()) - 1
        return (
            f"<ConversationState {self.conversation_id!r}: {len(self._index)} nodes, "
            f"{len(self.leaves())} leaves, cursor {self.current_node_id!r} "
            f"at depth {depth}>"
        )

    # ---------------------------------------------------------------- building

    def add_message(
        self,
        role: str,
        content: Any,
        *,
        parent_id: NodeRef | None = None,
        node_id: str | None = None,
        branch_name: str | None = None,
        prompt_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        function_call: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> ConversationNode:
        """Add a message as a child of ``parent_id`` (default: the cursor); move the cursor to it.

        Args:
            role: ``system``, ``user``, ``assistant``, ``tool``, ...
            content: Text, a list of content parts, or ``None``.
            parent_id: Reference of the parent node; the cursor when ``None``.
            node_id: Your own id for the node; a new random id when ``None``.
            branch_name: Optional label, usable as a reference.
            prompt_name: Optional name of the prompt template used.
            metadata: JSON-compatible node metadata (copied).
            name: Author or tool name.
            tool_calls: Tool calls made by an assistant message.
            tool_call_id: The tool call a ``tool`` message answers.
            function_call: Legacy OpenAI function call.
            timestamp: Creation time (timezone-aware); now when ``None``.

        Returns:
            The new node.

        Raises:
            FormatError: invalid message fields, metadata or timestamp.
            TreeOperationError: ``node_id`` already exists or is not a usable id.
            NodeNotFoundError: ``parent_id`` names no node.
        """
        parent = self._cursor if parent_id is None else self._resolve(parent_id)
        node = self._new_node(
            role,
            content,
            node_id=node_id,
            branch_name=branch_name,
            prompt_name=prompt_name,
            metadata=metadata,
            name=name,
            tool_calls=tool_calls,
            tool_call_id=tool_call_id,
            function_call=function_call,
            timestamp=timestamp,
        )
        return self._attach(parent, node)

    def add(
        self,
        message: Message | Mapping[str, Any],
        *,
        parent_id: NodeRef | None = None,
        node_id: str | None = None,
        branch_name: str | None = None,
        prompt_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> ConversationNode:
        """Add a whole message as a child of ``parent_id`` (default: the cursor); move the cursor.

        Like `add_message()`, but for a [`Message`][convtree.Message] or a message dict
        you already have (an OpenAI-style dict, a message of another node): every
        field is kept, the message's own ``metadata`` and unknown provider
        fields included. The message is copied.

        Raises:
            FormatError: the message is invalid (the path names the field).
        """
        parent = self._cursor if parent_id is None else self._resolve(parent_id)
        fields = message.to_dict() if isinstance(message, Message) else message
        if not isinstance(fields, Mapping):
            raise FormatError(
                f"a message is a Message or a mapping, got {type(message).__name__}",
                path="message",
            )
        node = self._node_for(
            _validated(fields),
            node_id=node_id,
            branch_name=branch_name,
            prompt_name=prompt_name,
            metadata=metadata,
            timestamp=timestamp,
        )
        return self._attach(parent, node)

    def add_alternative(
        self,
        role: str,
        content: Any,
        *,
        node_id: str | None = None,
        branch_name: str | None = None,
        prompt_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        function_call: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> ConversationNode:
        """Add a sibling of the cursor node (a regenerated reply) and move the cursor to it.

        Takes the same keyword arguments as `add_message()`, but no parent.

        Raises:
            TreeOperationError: if the cursor is on the root, which has no siblings.
        """
        if self._cursor.parent is None:
            raise TreeOperationError(
                f"the cursor is on the root {self.current_node_id!r}, which has no siblings; "
                "use add_message to add a child"
            )
        node = self._new_node(
            role,
            content,
            node_id=node_id,
            branch_name=branch_name,
            prompt_name=prompt_name,
            metadata=metadata,
            name=name,
            tool_calls=tool_calls,
            tool_call_id=tool_call_id,
            function_call=function_call,
            timestamp=timestamp,
        )
        return self._attach(self._cursor.parent, node)

    def edit_message(
        self,
        ref: NodeRef,
        content: Any,
        *,
        role: str | None = None,
        name: str | None = None,
        node_id: str | None = None,
        branch_name: str | None = None,
        prompt_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        tool_call_id: str | None = None,
        function_call: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> ConversationNode:
        """Edit a message: add a sibling of ``ref`` with new content; move the cursor to it.

        The original stays in the tree as an alternative. The edit keeps the
        original's ``role`` and ``name`` unless given; other fields start fresh.

        Raises:
            TreeOperationError: if ``ref`` is the root.
        """
        target = self._resolve(ref)
        original: ConversationNode = target.data
        message = original._message_object()
        if target.parent is None or message is None:
            raise TreeOperationError(
                f"cannot edit the root {original.node_id!r}: it has no siblings"
            )
        node = self._new_node(
            message.role if role is None else role,
            content,
            node_id=node_id,
            branch_name=branch_name,
            prompt_name=prompt_name,
            metadata=metadata,
            name=message.name if name is None else name,
            tool_calls=tool_calls,
            tool_call_id=tool_call_id,
            function_call=function_call,
            timestamp=timestamp,
        )
        return self._attach(target.parent, node)

    # -------------------------------------------------------------- navigating

    def switch_to(self, ref: NodeRef, *, descend: bool = False) -> ConversationNode:
        """Move the cursor to ``ref`` (an id, a unique id prefix, or a branch name).

        Args:
            ref: The node to move to.
            descend: Go on to the end of ``ref``'s branch, as a chat UI does
                when the user picks an alternative: at each branch point below
                ``ref``, follow the child that was active the last time the
                cursor was in that subtree, else the newest (the last in
                sibling order). Those choices are saved with the conversation.

        Returns:
            The node the cursor is now on.

        Example:
            ```python
            state.switch_to(question.node_id)             # stops at the question
            state.switch_to(question.node_id, descend=True)  # its branch's last reply
            ```
        """
        target = self._resolve(ref)
        if descend:
            target = self._branches.end_of_branch(target, self._cursor, self._index)
        self._move(target)
        self._touch()
        return self.current_node

    def sibling_position(self, ref: NodeRef | None = None) -> SiblingPosition:
        """Where ``ref`` (default: the cursor) stands among its parent's children.

        ``SiblingPosition(index, count)``; ``str()`` of it is ``"2 / 3"``, what
        a "previous / next alternative" switcher shows. The root is ``(0, 1)``.
        O(number of siblings).
        """
        tree = self._cursor if ref is None else self._resolve(ref)
        parent = tree.parent
        if parent is None:
            return SiblingPosition(0, 1)
        kids = parent.children
        assert kids  # tree is one of them
        for i, kid in enumerate(kids):
            if kid is tree:
                return SiblingPosition(i, len(kids))
        raise AssertionError("a node is missing from its parent's children")  # pragma: no cover

    def switch_sibling(
        self, step: int = 1, ref: NodeRef | None = None, *, descend: bool = True
    ) -> ConversationNode:
        """Move the cursor to another alternative of ``ref`` (default: the cursor's node).

        ``step=1`` is the next sibling, ``-1`` the previous. With ``descend``
        (the default) the cursor lands at the end of that alternative's branch,
        as in `switch_to()`. Use `sibling_position()` to know whether
        there is one.

        Raises:
            TreeOperationError: there is no sibling ``step`` places away (the
                message says the position, e.g. ``3 / 3``).
        """
        tree = self._cursor if ref is None else self._resolve(ref)
        position = self.sibling_position(tree.data)
        target = position.index + step
        if not 0 <= target < position.count:
            raise TreeOperationError(
                f"node {tree.data.node_id!r} is alternative {position}; "
                f"there is none {step:+d} from it"
            )
        kids = tree.parent.children if tree.parent is not None else None
        assert kids  # position.count > 1
        return self.switch_to(kids[target].data, descend=descend)

    def get_node(self, ref: NodeRef) -> ConversationNode:
        """The node ``ref`` names.

        Raises:
            NodeNotFoundError: no node matches.
            AmbiguousReferenceError: a prefix or branch name matches several nodes.
        """
        node: ConversationNode = self._resolve(ref).data
        return node

    def parent(self, ref: NodeRef | None = None) -> ConversationNode | None:
        """The parent of ``ref`` (default: the cursor); ``None`` for the root."""
        tree = self._cursor if ref is None else self._resolve(ref)
        return None if tree.parent is None else tree.parent.data

    def children(self, ref: NodeRef | None = None) -> list[ConversationNode]:
        """The children of ``ref`` (default: the cursor), in sibling order."""
        tree = self._cursor if ref is None else self._resolve(ref)
        return [child.data for child in tree.children or ()]

    def siblings(self, ref: NodeRef | None = None) -> list[ConversationNode]:
        """The other children of ``ref``'s parent (default: the cursor's), in order.

        ``ref`` itself is not included; the root has none.
        """
        tree = self._cursor if ref is None else self._resolve(ref)
        if tree.parent is None:
            return []
        return [child.data for child in tree.parent.children or () if child is not tree]

    def leaves(self) -> list[ConversationNode]:
        """Every node without children, in depth-first sibling order."""
        return [tree.data for tree in _preorder(self._root) if not tree.children]

    def nodes(self) -> Iterator[ConversationNode]:
        """Iterate over every node, depth-first in sibling order, the root first."""
        return (tree.data for tree in _preorder(self._root))

    def get_path(self, ref: NodeRef | None = None) -> list[ConversationNode]:
        """The nodes from the root to ``ref`` (default: the cursor), both included."""
        tree = self._cursor if ref is None else self._resolve(ref)
        return [t.data for t in tree.get_path()]

    def get_current_messages(self) -> list[Message]:
        """The messages on the path from the root to the cursor: what to send to a model.

        A message-less root contributes nothing.
        """
        messages = [t.data._message_object() for t in self._cursor.get_path()]
        return [m for m in messages if m is not None]

    def depth(self, ref: NodeRef | None = None) -> int:
        """Number of edges from the root to ``ref`` (default: the cursor)."""
        tree = self._cursor if ref is None else self._resolve(ref)
        return len(tree.get_path()) - 1

    # ---------------------------------------------------------------- changing

    def prune(self, ref: NodeRef) -> int:
        """Remove ``ref`` and everything below it; return how many nodes were removed.

        A cursor inside the removed subtree moves to the pruned node's parent.
        Removed ids are never reused: generated ids are random, and an explicit
        id is checked only against the nodes present.

        Raises:
            TreeOperationError: if ``ref`` is the root.
        """
        tree = self._resolve(ref)
        parent = tree.parent
        if parent is None:
            raise TreeOperationError(f"cannot prune the root {tree.data.node_id!r}")
        cursor: Tree | None = self._cursor
        while cursor is not None and cursor is not tree:
            cursor = cursor.parent
        leaves = 0
        journal = self._journal
        removed_ids: list[str] = []
        for sub in _preorder(tree):
            node_id = sub.data.node_id
            del self._index[node_id]
            removed_ids.append(node_id)
            if not sub.children:
                leaves += 1
            if journal is not None:
                if node_id in journal.added:
                    del journal.added[node_id]
                else:
                    journal.removed.add(node_id)
                    journal.changed.discard(node_id)
                    journal.handed_out.pop(node_id, None)
        self._branches.pruned(tree, removed_ids, cursor_inside=cursor is tree)
        tree.prune()
        self._leaf_count -= leaves
        if not parent.children:
            self._leaf_count += 1
        if cursor is tree:
            self._cursor = parent
        self._lookup = None
        self._touch()
        return len(removed_ids)

    def fork(
        self, ref: NodeRef | None = None, conversation_id: str | None = None
    ) -> ConversationState:
        """A new conversation holding the path from the root to ``ref`` (default: the cursor).

        Node ids, messages, timestamps and metadata are copied unchanged; the
        cursor of the fork is on ``ref``. The fork's metadata is a copy of this
        conversation's with ``forked_from = {"conversation_id", "node_id"}``.
        """
        tree = self._cursor if ref is None else self._resolve(ref)
        fork = ConversationState(conversation_id, self._metadata)
        fork._metadata["forked_from"] = {
            "conversation_id": self.conversation_id,
            "node_id": tree.data.node_id,
        }
        path = tree.get_path()
        root = _copy_node(path[0].data)
        root._watch = fork._watch
        fork._root = Tree(root)
        fork._index = {root.node_id: fork._root}
        parent = fork._root
        with gc_paused():
            for t in path[1:]:
                node = _copy_node(t.data)
                node._watch = fork._watch
                parent = Tree(node, parent)
                fork._index[node.node_id] = parent
        fork._cursor = parent
        return fork

    def mark_changed(self, ref: NodeRef) -> ConversationNode:
        """Record that a node was changed in place, so that the next save writes it.

        Saving writes only what changed since the state was loaded or last
        saved. Every change is found without this: nodes added, edited (as
        siblings) or pruned, node fields assigned, and changes made inside what
        ``node.metadata`` or ``node.message`` handed out. Call it for a change
        made inside a message obtained another way (from
        `get_current_messages()`, which does not watch, to stay fast on
        every chat turn), or save with ``full=True``.
        """
        tree = self._resolve(ref)
        journal = self._journal
        node: ConversationNode = tree.data
        if journal is not None and node.node_id not in journal.added:
            journal.changed.add(node.node_id)
        self._path_memo = None
        self._touch()
        return node

    @property
    def leaf_count(self) -> int:
        """Number of leaves (branch ends), kept up to date in O(1)."""
        return self._leaf_count

    def path_summary(self) -> PathSummary:
        """Message count and first user message of the active path.

        O(1) after an append at the cursor; O(depth) after the cursor jumps.
        """
        memo = self._path_memo
        if memo is not None and memo[0] is self._cursor:
            return memo[1]
        count, first_user = 0, None
        tree: Tree | None = self._cursor
        while tree is not None:
            node: ConversationNode = tree.data
            if node.has_message:
                count += 1
                if node.role == "user":
                    first_user = node
            tree = tree.parent
        summary = PathSummary(count, first_user)
        self._path_memo = (self._cursor, summary)
        return summary

    # ------------------------------------------------------ comparing, replaying

    def diff(
        self, a: NodeRef, b: NodeRef | None = None, *, other: ConversationState | None = None
    ) -> BranchDiff:
        """Compare the branch ending at ``a`` with the one ending at ``b`` (default: the cursor).

        ``other``: the conversation ``b`` is in, when it is not this one (a fork
        and its source share the node ids of the forked path, so their common
        ancestor is found the same way). The result holds the common ancestor,
        the shared prefix, the two tails, and per step a text diff; ``str()``
        is a text rendering and notebooks show it side by side.

        Example:
            ```python
            d = state.diff("first-try", "regenerated")
            d.ancestor.content   # the question both answer
            print(d)             # the two replies, a unified diff between them
            ```
        """
        from .diff import diff_branches

        if b is None:
            b = self.current_node if other is None else other.current_node
        return diff_branches(self, a, b, other=other)

    def replay(self, ref: NodeRef | None = None) -> Iterator[ReplayStep]:
        """Step through the path to ``ref`` (default: the cursor), first message first.

        Each `ReplayStep` has the node and message, the
        context (the messages before it, what the model was sent), and the
        alternatives at that point with its position among them ("2 / 3").
        """
        from .replay import replay

        return replay(self, ref)

    def rerun(
        self,
        ref: NodeRef | None,
        respond: Respond,
        *,
        start: NodeRef | None = None,
        branch_name: str | None = None,
    ) -> ConversationNode:
        """Re-run the branch ending at ``ref`` (``None``: the cursor) with another model or prompt.

        Walks the path to ``ref``. From the first assistant turn (at or after
        ``start``, if given) it builds a new sibling branch: at each assistant
        turn it calls ``respond(messages)`` with the OpenAI-style messages of
        the new branch so far and stores the reply; user turns are copied as
        they were. A tool result is copied only when the new reply made the
        same call (same function, same arguments; its id is mapped to the new
        call's): otherwise the new branch ends at that reply, whose calls you
        run yourself. Tools are never called here.
        Each new node's metadata has ``rerun_of`` (the node it re-does) plus
        whatever metadata ``respond`` returned.

        ``respond`` returns text, a [`Message`][convtree.Message], a message dict, or
        ``(reply, metadata)`` (e.g. ``{"model": ..., "usage": {...}}``). It may be
        async; inside a running event loop (a notebook) use `arerun()`.
        The branch is added once every reply is in: if ``respond`` raises,
        the conversation is unchanged. The cursor moves to the new branch's end.

        Args:
            ref: The end of the branch to re-run.
            respond: Your model call.
            start: Re-run only from this node of the path on.
            branch_name: A name for the new branch (on its first node).

        Returns:
            The last node of the new branch.

        Raises:
            TreeOperationError: no assistant turn to re-run, or ``start`` is
                not on the path.
            FormatError: ``respond`` returned something that is not a message.
        """
        from .replay import rerun

        return rerun(self, ref, respond, start=start, branch_name=branch_name)

    async def arerun(
        self,
        ref: NodeRef | None,
        respond: Respond,
        *,
        start: NodeRef | None = None,
        branch_name: str | None = None,
    ) -> ConversationNode:
        """`rerun()`, awaiting ``respond`` when it is async."""
        from .replay import arerun

        return await arerun(self, ref, respond, start=start, branch_name=branch_name)

    def usage(
        self, ref: NodeRef | None = None, *, scope: Literal["path", "tree"] = "path"
    ) -> Usage:
        """Token and cost totals from node metadata (see `usage` for the keys).

        Args:
            ref: With ``scope="path"``, the end of the path (default: the
                cursor); with ``scope="tree"``, the top of the subtree
                (default: the root, so the whole tree, discarded branches too).
            scope: ``"path"`` or ``"tree"``.
        """
        from .usage import sum_usage

        if scope == "path":
            return sum_usage(self.get_path(ref))
        if scope == "tree":
            top = self._root if ref is None else self._resolve(ref)
            return sum_usage(tree.data for tree in _preorder(top))
        raise ValueError(f"scope is 'path' or 'tree', got {scope!r}")

    # --------------------------------------------------------------- rendering

    def _repr_html_(self) -> str:
        from .render import to_html

        return to_html(self)

    def __rich__(self) -> RichTree:
        from .render import rich_tree

        return rich_tree(self)

    # ------------------------------------------------------------------ saving

    @property
    def saved_revision(self) -> SavedRevision | None:
        """The stored revision this state was loaded at or last saved as (``None``: never)."""
        journal = self._journal
        return None if journal is None else journal.base

    def changes(self, *, full: bool = False) -> ChangeSet:
        """What changed since `saved_revision`, as a value a store can write.

        O(number of changes) (plus the conversation metadata); the whole tree
        when the state was never saved, or with ``full=True``.

        Raises:
            FormatError: metadata added since holds a value JSON cannot represent.
        """
        journal = self._journal
        head = self.head_fields()
        if journal is not None:
            self._find_changes_inside(journal)
        if journal is None or full:
            doc = self.to_dict()
            return ChangeSet(
                conversation_id=self.conversation_id,
                base=None if journal is None else journal.base,
                full=True,
                nodes=tuple(doc["nodes"]),
                edges=tuple(doc["edges"]),
                added=(),
                changed=(),
                removed=(),
                metadata_changed=True,
                head=head,
            )
        index = self._index
        added = tuple(journal.added)
        changed = tuple(sorted(i for i in journal.changed if i in index))
        nodes = [index[i].data.to_dict() for i in added]
        nodes.extend(index[i].data.to_dict() for i in changed)
        return ChangeSet(
            conversation_id=self.conversation_id,
            base=journal.base,
            full=False,
            nodes=tuple(nodes),
            edges=tuple([index[i].parent.data.node_id, i] for i in added),  # type: ignore[union-attr]
            added=added,
            changed=changed,
            removed=tuple(sorted(journal.removed)),
            metadata_changed=json_text(self._metadata) != journal.base_metadata,
            head=head,
        )

    def mark_saved(self, revision: SavedRevision) -> None:
        """Record that the state is stored as ``revision``: nothing is pending any more.

        Stores call this after loading a state and after writing its changes.
        Nodes whose metadata or message was handed out before stay watched
        while a caller may still hold what was handed out: O(those nodes).
        """
        if not isinstance(revision, SavedRevision):
            raise TypeError(f"mark_saved takes a SavedRevision, got {type(revision).__name__}")
        old = self._journal
        journal = _Journal(revision, json_text(self._metadata))
        if old is not None:
            index = self._index
            # A handed-out node keeps the text it had when handed out: if it changed
            # since (even while this save was being written), the next save sees it.
            for node_id, before in old.handed_out.items():
                if node_id in index:
                    journal.handed_out[node_id] = before
            for node_id in old.changed:
                tree = index.get(node_id)
                if tree is not None:
                    journal.handed_out[node_id] = json_text(tree.data.to_dict())
        self._journal = journal
        self._watch.journal = journal

    def _find_changes_inside(self, journal: _Journal) -> None:
        """Mark changed the handed-out nodes whose JSON differs from when they were handed out."""
        index = self._index
        for node_id, before in list(journal.handed_out.items()):
            tree = index.get(node_id)
            if tree is None:
                del journal.handed_out[node_id]
            elif json_text(tree.data.to_dict()) != before:
                journal.changed.add(node_id)
                del journal.handed_out[node_id]
            elif tree.data._unheld():
                # Unchanged, and no caller holds what was handed out any more: nothing
                # can change it unseen. Stop watching (a later read watches it again).
                del journal.handed_out[node_id]

    def rebase(self, upstream: ConversationState, *, full: bool = False) -> None:
        """Put this state's pending changes on top of ``upstream``, a newer stored revision.

        ``upstream`` is the same conversation as another writer saved it (loaded
        from the store, so its `saved_revision` is set); it is consumed.
        Afterwards this state holds upstream's tree plus the nodes this state
        added, its cursor, and its metadata if it changed them; its pending
        changes are those appends, based on upstream's revision. Changes that
        upstream already holds (a save retried after its outcome was unknown)
        are not applied twice.

        Raises:
            ConflictError: the changes cannot merge: this state pruned or changed
                existing nodes (or ``full``), the other writer did, or both
                changed the conversation metadata. This state is unchanged.
            TreeOperationError: ``upstream`` is another conversation, or either
                state has no revision in the same store.
        """
        journal = self._journal
        theirs = upstream.saved_revision
        if (
            upstream.conversation_id != self.conversation_id
            or journal is None
            or theirs is None
            or theirs.store != journal.base.store
        ):
            raise TreeOperationError(
                "rebase needs this conversation as stored in the store this state was loaded from"
            )
        self._find_changes_inside(journal)
        base = journal.base
        mine = json_text(self._metadata)
        metadata_changed = mine != journal.base_metadata
        reason = None
        if full:
            reason = "a full save would replace their changes"
        elif journal.removed:
            reason = "this state pruned nodes"
        elif journal.changed:
            reason = "this state changed existing nodes"
        elif theirs.destructive_at > base.number:
            reason = "the other writer pruned or changed existing nodes"
        elif (
            metadata_changed
            and theirs.metadata_at > base.number
            and json_text(upstream._metadata) != mine
        ):
            reason = "both changed the conversation metadata"
        pending: dict[str, None] = {}
        if reason is None:
            theirs_index = upstream._index
            for node_id in journal.added:
                tree = self._index[node_id]
                assert tree.parent is not None  # only the root has no parent
                parent_id = tree.parent.data.node_id
                stored = theirs_index.get(node_id)
                if stored is not None:
                    same = (
                        stored.parent is not None
                        and stored.parent.data.node_id == parent_id
                        and json_text(stored.data.to_dict()) == json_text(tree.data.to_dict())
                    )
                    if not same:
                        reason = f"node {node_id!r} cannot be merged (its id is taken)"
                        break
                elif parent_id not in theirs_index and parent_id not in pending:
                    reason = f"node {node_id!r} cannot be merged (its parent is gone)"
                    break
                else:
                    pending[node_id] = None
        if reason is not None:
            if json_text(upstream.to_dict()) == json_text(self.to_dict()):
                self._take(upstream)  # already stored: a retried save
                return
            raise ConflictError(
                f"conversation {self.conversation_id!r} was saved by another writer "
                f"(revision {theirs.number}; this state has revision {base.number}) and "
                f"{reason}; load it again and redo the change",
                conversation_id=self.conversation_id,
            )
        for node_id in pending:
            tree = self._index[node_id]
            assert tree.parent is not None
            upstream._attach(upstream._index[tree.parent.data.node_id], tree.data)
        upstream._move(upstream._index[self.current_node_id])
        upstream._branches.choices.update(self._branches.choices)
        upstream._path_memo = None
        upstream.updated_at = max(upstream.updated_at, self.updated_at)
        if metadata_changed:
            upstream._metadata = self._metadata
        self._take(upstream)

    # ------------------------------------------------------------- serializing

    def to_dict(self) -> dict[str, Any]:
        """The conversation as a new JSON-compatible document (schema 2.0.0).

        Nodes are listed depth-first, the root first; each parent's edges are in
        sibling order. The result shares nothing mutable with the state.

        Raises:
            FormatError: if metadata added since holds a value JSON cannot
                represent (a datetime, a set, ...), naming its path.
        """
        nodes: list[dict[str, Any]] = []
        edges: list[list[str]] = []
        stack = [self._root]
        pop, push = stack.pop, stack.extend
        with gc_paused():
            while stack:
                tree = pop()
                node = tree.data
                nodes.append(node.to_dict())
                kids = tree.children
                if kids:
                    parent_id = node.node_id
                    edges.extend([parent_id, kid.data.node_id] for kid in kids)
                    push(reversed(kids))
        doc = self.head_fields()
        doc["nodes"] = nodes
        doc["edges"] = edges
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ConversationState:
        """Load a document of any known version (migrating it; ``doc`` is not changed).

        Raises:
            FormatError: the document is invalid; the message names the JSON
                path and node id.
            SchemaVersionError: its version is newer than this library reads, or unknown.
        """
        with gc_paused():
            return cls.from_parsed(parse_document(upgrade_document(doc)))

    @classmethod
    def from_parsed(cls, parsed: ParsedDocument) -> ConversationState:
        """Build the conversation a document checked by `parse_document` describes.

        The conversation takes the parsed document's nodes (do not reuse them). A store
        that holds a document in parts builds one this way without writing it out
        whole first; [`from_dict()`][convtree.ConversationState.from_dict] is
        `parse_document` followed by this.
        """
        with gc_paused():
            watch = _Watch()
            root, index, leaf_count = _build_tree(parsed, watch)
        state = cls.__new__(cls)
        state.conversation_id = parsed.conversation_id
        state._metadata = parsed.metadata
        state.created_at = parsed.created_at
        state.updated_at = parsed.updated_at
        state._extra = parsed.extra
        label = parse_schema_version(parsed.schema_version)
        state._schema_label = parsed.schema_version if label > _CURRENT else CURRENT_SCHEMA_VERSION
        state._root = root
        state._index = index
        state._cursor = index[parsed.current_node_id]
        state._branches = BranchMemory(parsed.active_children)
        state._watch = watch
        state._lookup = None
        state._journal = None
        state._leaf_count = leaf_count
        state._path_memo = None
        return state

    def head_fields(self) -> dict[str, Any]:
        """The document without ``nodes`` and ``edges``: O(1) in the tree's size.

        Storage keeps these in a small head record beside the node segments.
        """
        doc: dict[str, Any] = {
            "schema_version": self._schema_label,
            "conversation_id": self.conversation_id,
            "current_node_id": self.current_node_id,
            "metadata": copy_json(self._metadata, "metadata", unicode=True),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }
        if self._branches.choices:
            doc["active_children"] = dict(self._branches.choices)
        if self._extra:
            for key, value in self._extra.items():
                doc.setdefault(key, copy_json(value, key))
        return doc

    def to_json(self, *, indent: int | None = None) -> str:
        """The document as JSON text (UTF-8 characters kept; NaN/Infinity as Python writes them)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> ConversationState:
        """Load a document from JSON text.

        Raises:
            FormatError: the text is not JSON (with line and column), or the
                document is invalid.
        """
        try:
            with gc_paused():
                doc = json.loads(text)
        except RecursionError:
            raise FormatError(
                f"not a readable document: JSON nested too deeply (the limit is {MAX_DEPTH})"
            ) from None
        except json.JSONDecodeError as exc:
            raise FormatError(
                f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        except (TypeError, UnicodeDecodeError) as exc:
            raise FormatError(f"not valid JSON text: {exc}") from None
        return cls.from_dict(doc)

    # ---------------------------------------------------------------- internal

    def _take(self, other: ConversationState) -> None:
        """Take ``other``'s tree, fields and journal (``other`` is consumed)."""
        for name in (
            "_root",
            "_index",
            "_cursor",
            "_branches",
            "_watch",
            "_metadata",
            "_extra",
            "_schema_label",
            "_journal",
            "_leaf_count",
            "updated_at",
        ):
            setattr(self, name, getattr(other, name))
        self._lookup = None
        self._path_memo = None

    def _move(self, tree: Tree) -> None:
        """Put the cursor on ``tree``, remembering the branch choices it leaves."""
        self._branches.moved(self._cursor, tree)
        self._cursor = tree

    def _touch(self, when: datetime | None = None) -> None:
        self.updated_at = _now() if when is None else when

    def _attach(self, parent: Tree, node: ConversationNode) -> ConversationNode:
        if parent.children:
            self._leaf_count += 1
        memo = self._path_memo
        summary = None
        if memo is not None and memo[0] is parent:  # appending below a known path
            first_user = memo[1].first_user
            if first_user is None and node.role == "user":
                first_user = node
            summary = PathSummary(memo[1].message_count + 1, first_user)
        node._watch = self._watch
        tree = Tree(node, parent)
        self._index[node.node_id] = tree
        self._move(tree)
        self._path_memo = None if summary is None else (tree, summary)
        if self._journal is not None:
            self._journal.added[node.node_id] = None
        self._lookup = None
        self._touch(node.timestamp if node.timestamp > self.updated_at else None)
        return node

    def _new_node(
        self,
        role: str,
        content: Any,
        *,
        node_id: str | None,
        branch_name: str | None,
        prompt_name: str | None,
        metadata: Mapping[str, Any] | None,
        name: str | None,
        tool_calls: list[dict[str, Any]] | None,
        tool_call_id: str | None,
        function_call: dict[str, Any] | None,
        timestamp: datetime | None,
    ) -> ConversationNode:
        fields: dict[str, Any] = {"role": role, "content": content}
        if name is not None:
            fields["name"] = name
        if tool_calls is not None:
            fields["tool_calls"] = tool_calls
        if tool_call_id is not None:
            fields["tool_call_id"] = tool_call_id
        if function_call is not None:
            fields["function_call"] = function_call
        return self._node_for(
            _validated(fields),
            node_id=node_id,
            branch_name=branch_name,
            prompt_name=prompt_name,
            metadata=metadata,
            timestamp=timestamp,
        )

    def _node_for(
        self,
        message: Message,
        *,
        node_id: str | None,
        branch_name: str | None,
        prompt_name: str | None,
        metadata: Mapping[str, Any] | None,
        timestamp: datetime | None,
    ) -> ConversationNode:
        if node_id is None:
            node_id = new_node_id()
            while node_id in self._index:  # pragma: no cover - 1 in 2**48
                node_id = new_node_id()
        else:
            _check_new_node_id(node_id, self._index)
        for label, value in (("branch_name", branch_name), ("prompt_name", prompt_name)):
            if value is not None and not isinstance(value, str):
                raise FormatError(
                    f"{label} must be a string, got {type(value).__name__}", path=label
                )
        if timestamp is None:
            timestamp = _now()
        elif not isinstance(timestamp, datetime) or timestamp.utcoffset() is None:
            raise FormatError("timestamp must be a timezone-aware datetime", path="timestamp")
        return ConversationNode(
            node_id,
            message,
            timestamp,
            branch_name=branch_name,
            prompt_name=prompt_name,
            metadata=None if metadata is None else _check_metadata(metadata, unicode=False),
        )

    def _resolve(self, ref: NodeRef) -> Tree:
        if isinstance(ref, ConversationNode):
            # By id: a node of a loaded copy or of a fork names the same node here.
            tree = self._index.get(ref.node_id)
            if tree is None:
                raise NodeNotFoundError(
                    f"no node with id {ref.node_id!r} in conversation {self.conversation_id!r}",
                    ref=ref.node_id,
                )
            return tree
        if not isinstance(ref, str):
            raise NodeNotFoundError(
                f"a node reference is an id, id prefix, branch name or ConversationNode, "
                f"got {type(ref).__name__}",
                ref=ref,
            )
        tree = self._index.get(ref)
        if tree is not None:
            return tree
        if not ref:
            raise NodeNotFoundError(
                f"no node with the empty id in conversation {self.conversation_id!r}", ref=ref
            )
        if self._lookup is None:
            branches: dict[str, list[str]] = {}
            for node in self.nodes():
                if node.branch_name is not None:
                    branches.setdefault(node.branch_name, []).append(node.node_id)
            self._lookup = (sorted(self._index), branches)
        sorted_ids, branches = self._lookup
        named = branches.get(ref)
        if named is not None:
            if len(named) > 1:
                raise AmbiguousReferenceError(
                    f"branch name {ref!r} is on {len(named)} nodes ({_show(named)}); use a node id",
                    ref=ref,
                    candidates=named,
                )
            return self._index[named[0]]
        i = bisect_left(sorted_ids, ref)
        matches: list[str] = []
        while i < len(sorted_ids) and sorted_ids[i].startswith(ref) and len(matches) < 6:
            matches.append(sorted_ids[i])
            i += 1
        if len(matches) == 1:
            return self._index[matches[0]]
        if matches:
            raise AmbiguousReferenceError(
                f"id prefix {ref!r} matches several nodes ({_show(matches)}); give more characters",
                ref=ref,
                candidates=matches,
            )
        raise NodeNotFoundError(
            f"no node with id, id prefix or branch name {ref!r} "
            f"in conversation {self.conversation_id!r}",
            ref=ref,
        )


def _plain_tree() -> bool:
    """Whether a `Tree` is exactly ``_data``, ``_children`` (``None`` or a list) and
    ``_parent``, as dataknobs-structures 1.x builds it: then `_build_tree` sets them
    itself (a tenth of a load went to ``Tree()`` and ``add_child`` checks)."""
    root = Tree("r")
    child = Tree("c", root)
    return (
        vars(root) == {"_data": "r", "_children": [child], "_parent": None}
        and vars(child) == {"_data": "c", "_children": None, "_parent": root}
        and root.children == [child]
        and child.parent is root
    )


_PLAIN_TREE = _plain_tree()


def _build_tree(parsed: ParsedDocument, watch: _Watch) -> tuple[Tree, dict[str, Tree], int]:
    nodes, children = parsed.nodes, parsed.children
    for node in nodes.values():
        node._watch = watch
    root = Tree(nodes[parsed.root_id])
    index = {parsed.root_id: root}
    stack = [parsed.root_id]
    parents = 0
    new = Tree.__new__
    while stack:
        parent_id = stack.pop()
        kids = children.get(parent_id)
        if kids:
            parents += 1
            parent = index[parent_id]
            if _PLAIN_TREE:
                built = []
                for kid in kids:
                    tree = index[kid] = new(Tree)
                    tree._data = nodes[kid]
                    tree._children = None
                    tree._parent = parent
                    built.append(tree)
                parent._children = built
            else:  # pragma: no cover - another dataknobs-structures layout
                for kid in kids:
                    index[kid] = Tree(nodes[kid], parent)
            stack.extend(kids)
    return root, index, len(index) - parents


def _preorder(top: Tree) -> Iterator[Tree]:
    """Depth-first, sibling order, without recursion."""
    stack = [top]
    while stack:
        tree = stack.pop()
        yield tree
        kids = tree.children
        if kids:
            stack.extend(reversed(kids))


def _show(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:5])
    return shown + (", ..." if len(ids) > 5 else "")


def _copy_node(node: ConversationNode) -> ConversationNode:
    return ConversationNode(
        node.node_id,
        None if not node.has_message else Message.model_validate(node.message_dict()),
        node.timestamp,
        branch_name=node.branch_name,
        prompt_name=node.prompt_name,
        metadata=copy_json(node._meta, "metadata"),
        extra=copy_json(node.extra, "extra") if node.extra else None,
    )


def _validated(fields: Mapping[str, Any]) -> Message:
    for key, value in fields.items():  # what could not be saved: nesting deeper than MAX_DEPTH
        if isinstance(value, (dict, list, tuple)):
            check_depth(value, key)
    try:
        return Message.model_validate(fields)
    except ValidationError as exc:
        raise format_error_from_validation(exc, what="message", data=fields) from None


def _check_conversation_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise FormatError(
            f"conversation_id must be a non-empty string, got {value!r}", path="conversation_id"
        )
    return valid_text(value, "conversation_id")  # it becomes a key in every store


def _check_metadata(value: object, *, unicode: bool = True) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FormatError(
            f"metadata must be a mapping, got {type(value).__name__}", path="metadata"
        )
    copied: dict[str, Any] = copy_json(dict(value), "metadata", unicode=unicode)
    return copied


def _check_new_node_id(node_id: object, index: Mapping[str, Tree]) -> None:
    if not isinstance(node_id, str) or not node_id:
        raise TreeOperationError(f"node_id must be a non-empty string, got {node_id!r}")
    if len(node_id) > _MAX_NODE_ID_LENGTH:
        raise TreeOperationError(
            f"node_id is {len(node_id)} characters long; at most {_MAX_NODE_ID_LENGTH}"
        )
    if not node_id.isprintable() or node_id != node_id.strip():
        raise TreeOperationError(
            f"node_id {node_id!r} has control characters or surrounding whitespace"
        )
    if node_id in index:
        raise TreeOperationError(f"a node with id {node_id!r} already exists")
