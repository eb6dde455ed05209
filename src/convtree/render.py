"""Text rendering of a conversation tree (iterative: any depth)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .node import ConversationNode

if TYPE_CHECKING:
    from dataknobs_structures import Tree

    from .state import ConversationState

__all__ = ["render_tree"]


def render_tree(state: ConversationState, *, width: int = 72, ids: bool = True) -> str:
    """Render the tree as text, the active path marked with ``*``.

    A chain of single children stays at one indentation level; only a branch
    point indents its children (``├─`` / ``└─``), so a 100,000-message chain
    renders in 100,000 lines, not in quadratic space.

    Args:
        state: The conversation.
        width: Longest message preview, in characters.
        ids: Whether to show node ids.

    Example output::

        * (root)  3f2a9c01b7d4
        * user: What is a B-tree?  8d1e0c55a2f0
        ├─  assistant: Answer variant 0 [v0]  0b9f...
        ├─* assistant: Answer variant 1 [v1]  51c2...
        │ * user: Shorter please.  e7a0...
        └─  assistant: Answer variant 2 [v2]  93dd...
    """
    active = {node.node_id for node in state.get_path()}
    lines: list[str] = []
    # (tree, prefix of its own line, prefix of its descendants' lines)
    stack: list[tuple[Tree, str, str]] = [(state.message_tree, "", "")]
    while stack:
        tree, lead, rest = stack.pop()
        node: ConversationNode = tree.data
        mark = "*" if node.node_id in active else " "
        lines.append(f"{lead}{mark} {describe_node(node, width=width, ids=ids)}")
        kids = tree.children or []
        if len(kids) == 1:
            stack.append((kids[0], rest, rest))
            continue
        for i in range(len(kids) - 1, -1, -1):
            last = i == len(kids) - 1
            stack.append(
                (kids[i], rest + ("└─" if last else "├─"), rest + ("  " if last else "│ "))
            )
    return "\n".join(lines)


def describe_node(node: ConversationNode, *, width: int = 72, ids: bool = True) -> str:
    """One line about a node: role, a preview of its text, branch name and id."""
    if node.message is None:
        text = "(root)"
    else:
        preview = " ".join(node.message.text.split())
        if not preview and node.message.tool_calls:
            preview = f"<{len(node.message.tool_calls)} tool call(s)>"
        if len(preview) > width:
            preview = preview[: width - 1] + "…"
        text = f"{node.message.role}: {preview}"
    if node.branch_name:
        text += f" [{node.branch_name}]"
    if ids:
        text += "  " + (node.node_id or '""')
    return text
