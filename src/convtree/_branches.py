"""Which child is active at each branch point: the cursor's path plus remembered choices.

A chat UI that shows "2 / 3" at a branch point and lets the user switch to
another alternative lands, like ChatGPT's, at the *end* of that alternative's
branch, following below it the children that were active the last time the
user was there. `BranchMemory` keeps what that takes:

* the cursor's path (root .. cursor), which is authoritative: at a branch point
  on it, the active child is the one on the path;
* ``choices``, ``{parent id: child id}``, recorded when the cursor *leaves*
  a child: when it moves elsewhere, each branch point on the part of the old
  path it left remembers the child the cursor was in.

Anywhere else the active child is the newest: the last child in sibling order,
the one added last. ``choices`` is what the document stores (``active_children``);
the path is derived from the cursor.

Moves are O(distance in the tree between the old and the new cursor): an
append, a regenerated sibling and an edit one level up are O(1) and do not
even build the path. The path is built (O(depth)) on the first real jump and
then kept up to date, so an importer that builds a tree depth-first pays O(1)
per node, not O(depth).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataknobs_structures import Tree

__all__ = ["BranchMemory"]


class BranchMemory:
    """The cursor path and the remembered active child of each branch point left."""

    __slots__ = ("_path", "_pos", "choices")

    def __init__(self, choices: dict[str, str] | None = None) -> None:
        self.choices: dict[str, str] = {} if choices is None else choices
        self._path: list[Tree] | None = None  # root .. cursor, once built
        self._pos: dict[str, int] = {}  # node id -> index in _path

    def forget_path(self) -> None:
        """Drop the cached path (the tree objects were replaced)."""
        self._path = None
        self._pos = {}

    def moved(self, old: Tree, new: Tree) -> None:
        """The cursor moved from ``old`` to ``new``: remember the branch choices it left.

        Every node the cursor's path no longer holds is remembered by its parent,
        when that parent is a branch point: the child the cursor was last in.
        """
        if new is old:
            return
        path = self._path
        parent = new.parent
        if path is None or path[-1] is not old:
            if parent is old:  # one step down leaves nothing
                self.forget_path()
                return
            if parent is not None and parent is old.parent:  # to a sibling
                self.forget_path()
                self.choices[parent.data.node_id] = old.data.node_id
                return
            path = self._build(old)
        if parent is old:  # one step down: the common case (an append)
            self._push(new)
            return
        pos = self._pos
        climbed: list[Tree] = []
        tree: Tree | None = new
        while tree is not None:
            i = pos.get(tree.data.node_id)
            if i is not None and path[i] is tree:
                break
            climbed.append(tree)
            tree = tree.parent
        if tree is None:  # pragma: no cover - both are in one tree
            raise AssertionError("the new cursor is not in the tree of the old one")
        keep = pos[tree.data.node_id]
        choices = self.choices
        for j in range(len(path) - 1, keep, -1):
            left = path[j]
            del pos[left.data.node_id]
            above = path[j - 1]
            kids = above.children
            if kids is not None and len(kids) > 1:
                choices[above.data.node_id] = left.data.node_id
        del path[keep + 1 :]
        for tree in reversed(climbed):
            self._push(tree)

    def pruned(self, top: Tree, removed_ids: list[str], cursor_inside: bool) -> None:
        """``top`` and its subtree (``removed_ids``) were removed; ``top.parent`` remains."""
        choices = self.choices
        for node_id in removed_ids:
            choices.pop(node_id, None)
        parent = top.parent
        if parent is not None and choices.get(parent.data.node_id) == top.data.node_id:
            del choices[parent.data.node_id]
        path = self._path
        if path is not None and cursor_inside:
            keep = self._pos.get(top.data.node_id)
            if keep is None or path[keep] is not top:  # pragma: no cover - kept in step
                self.forget_path()
                return
            for left in path[keep:]:
                del self._pos[left.data.node_id]
            del path[keep:]

    def end_of_branch(self, start: Tree, cursor: Tree, index: dict[str, Tree]) -> Tree:
        """Follow the active child at each branch point below ``start`` to a leaf.

        Iterative, O(length of the branch followed) plus O(depth) once to build
        the cursor path.
        """
        tree = start
        path: list[Tree] | None = None
        while True:
            kids = tree.children
            if not kids:
                return tree
            if len(kids) == 1:
                tree = kids[0]
                continue
            if path is None:
                path = self.sync(cursor)
            node_id = tree.data.node_id
            i = self._pos.get(node_id)
            if i is not None and i + 1 < len(path) and path[i] is tree:
                tree = path[i + 1]
                continue
            chosen = self.choices.get(node_id)
            following = index.get(chosen) if chosen is not None else None
            tree = following if following is not None and following.parent is tree else kids[-1]

    def sync(self, cursor: Tree) -> list[Tree]:
        """Make sure the path is known and ends at ``cursor``; return it."""
        path = self._path
        if path is None or path[-1] is not cursor:
            path = self._build(cursor)
        return path

    def _build(self, cursor: Tree) -> list[Tree]:
        path: list[Tree] = []
        tree: Tree | None = cursor
        while tree is not None:
            path.append(tree)
            tree = tree.parent
        path.reverse()
        self._path = path
        self._pos = {t.data.node_id: i for i, t in enumerate(path)}
        return path

    def _push(self, tree: Tree) -> None:
        path = self._path
        assert path is not None
        self._pos[tree.data.node_id] = len(path)
        path.append(tree)
