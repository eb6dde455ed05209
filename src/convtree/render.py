"""Rendering of a conversation tree: text, notebook HTML, Mermaid and rich.

Every function here is iterative (explicit stacks, no recursion) and linear in
the number of nodes, so a 100,000-deep chain and a 20,000-wide fan-out render
as easily as a short chat.

The bounded renderers (`to_html()`, `to_mermaid()`, `rich_tree()`)
share one layout and one budget rule:

* A chain of single children stays at one level; only a branch point nests its
  children, each child's subtree under a "k of n" heading.
* A run of more than 40 single children is folded: its first 10 and last 10
  messages are shown, with one "… N more messages" line between them.
* At most ``max_nodes`` message rows are shown. The active path (root to
  cursor) is chosen first; if even the folded path does not fit, its two ends
  (the cursor, then alternately the root's end and the cursor's) are kept and
  its middle is folded, side branches included. What remains of the budget
  then goes breadth-first outward from the path: the first message of every
  alternative hanging off the path (root side first), then the rest of those
  alternatives' chains (folded if long), then the alternatives hanging off
  those chains, and so on, until a row does not fit. Subtrees left out are
  summed up in one line per branch point, e.g. "… 3 more branches (1,240
  messages) not shown"; a chain cut short ends in "… N more messages not
  shown".
"""

from __future__ import annotations

import html
import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .node import ConversationNode

if TYPE_CHECKING:
    from dataknobs_structures import Tree
    from rich.tree import Tree as RichTree

    from .message import Message
    from .state import ConversationState

__all__ = [
    "describe_node",
    "escape",
    "message_html",
    "message_text",
    "node_html",
    "render_tree",
    "rich_tree",
    "to_html",
    "to_mermaid",
]


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
    """One line about a node: role, a preview of its text, branch name and id.

    The line [`render_tree()`][convtree.render_tree] prints for each node: whitespace collapsed,
    the text parts of the content only, ``<n tool call(s)>`` for a message
    that only calls tools.

    Args:
        node: The node.
        width: Longest preview of the message text, in characters.
        ids: Whether to end the line with the node id.

    Returns:
        The line.

    Example:
        ```python
        node = state.add_message("assistant", "A balanced search tree.", branch_name="v1")
        describe_node(node)  # 'assistant: A balanced search tree. [v1]  51c2a0e9d3f1'
        ```
    """
    message = node._message_object()
    if message is None:
        text = "(root)"
    else:
        text = f"{message.role}: {_one_line(message, width, detailed=False)}"
    if node.branch_name:
        text += f" [{node.branch_name}]"
    if ids:
        text += "  " + (node.node_id or '""')
    return text


# ======================================================= message summaries
#
# The one place that turns a message into words: the text renderer, HTML,
# Mermaid and rich all go through these helpers.

_FOLD_MIN = 40  # a run of more single-child rows than this is folded ...
_FOLD_KEEP = 10  # ... to its first and last _FOLD_KEEP rows
_ARGS_PREVIEW = 120  # characters of tool-call arguments shown
_CALLS_SHOWN = 8  # tool calls listed per message
_ID_SHOWN = 64  # characters of an id shown as text
_ID_MAX = 256  # characters of an id kept in attributes (longer ones are cut)
_LABEL_MAX = 64  # characters of a branch name, role or tool name shown
_META_PREVIEW = 200  # characters of metadata JSON in tooltips
_SUMMARY_PREVIEW = 80  # characters of the one-line preview in a branch heading

_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
_END = object()

# Characters that may not appear in HTML text (controls other than tab, line
# feed and carriage return; lone surrogates; noncharacters) nor in a terminal.
_INVALID = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
    + "".join(
        chr(plane * 0x10000 + 0xFFFE) + chr(plane * 0x10000 + 0xFFFF) for plane in range(1, 17)
    )
    + "]"
)


def _clean(text: str) -> str:
    """``text`` with invalid characters replaced by U+FFFD (always encodable as UTF-8)."""
    return _INVALID.sub("\ufffd", text)


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in ``…`` when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _squeeze(text: str, width: int) -> str:
    """Whitespace collapsed to single spaces, cut to ``width`` characters with ``…``.

    Reads only a prefix of ``text`` (about four times ``width``, more if that
    prefix is mostly whitespace), so a megabyte-long message costs no more than
    a short one; the result is the same as squeezing all of it.
    """
    if width < 1:
        flat = " ".join(text.split())
        return flat[: width - 1] + "…" if len(flat) > width else flat
    size = max(4 * width, 64)
    while True:
        flat = " ".join(text[:size].split())
        if len(flat) > width:
            return flat[: width - 1] + "…"
        if size >= len(text):
            return flat
        size *= 4


class _Cursor:
    """A JSON container being written by `_json_preview()`."""

    __slots__ = ("close", "first", "items", "keyed")

    def __init__(self, items: Any, keyed: bool, close: str) -> None:
        self.items = items
        self.keyed = keyed
        self.close = close
        self.first = True


def _json_preview(value: Any, limit: int) -> str:
    """JSON text of ``value``, cut at ``limit`` characters with ``…``.

    Iterative, and stops writing once ``limit`` characters are out, so neither
    a huge nor a deeply nested value costs more than its first ``limit``
    characters.
    """
    out: list[str] = []
    size = 0
    stack: list[Any] = [value]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, _Cursor):
            entry: Any = next(item.items, _END)
            if entry is _END:
                piece = item.close
            else:
                stack.append(item)
                piece = "" if item.first else ", "
                item.first = False
                if item.keyed:
                    key, entry = entry
                    piece += json.dumps(str(key)[: limit + 1], ensure_ascii=False) + ": "
                stack.append(entry)
        elif isinstance(item, str):
            piece = json.dumps(item[: limit + 1], ensure_ascii=False)
        elif isinstance(item, Mapping):
            stack.append(_Cursor(iter(item.items()), True, "}"))
            piece = "{"
        elif isinstance(item, (list, tuple)):
            stack.append(_Cursor(iter(item), False, "]"))
            piece = "["
        elif item is None or isinstance(item, (bool, int, float)):
            try:
                piece = json.dumps(item)
            except ValueError:  # an int too long to convert
                piece = "<int>"
        else:
            piece = f"<{type(item).__name__}>"
        out.append(piece)
        size += len(piece)
    return _clip("".join(out), limit)


def _placeholder(kind: object) -> str:
    """How a non-text content part shows: ``[image]``, ``[audio]``, ``[file]``, ``[<type>]``."""
    name = kind.lower() if isinstance(kind, str) else "?"
    if "image" in name:
        return "[image]"
    if "audio" in name:
        return "[audio]"
    if "file" in name or name == "document":
        return "[file]"
    return f"[{_clip(name, 32)}]"


def _content_text(content: Any, limit: int) -> tuple[str, int]:
    """The text of message content, non-text parts as placeholders.

    Args:
        content: ``Message.content``: text, a list of content parts, or ``None``.
        limit: How many characters of the text to return at most.

    Returns:
        ``(first characters, total length)``: at most ``limit`` characters
        (more are not built) and the length of the whole text.
    """
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content[:limit], len(content)
    if not isinstance(content, list):
        text = _json_preview(content, limit)
        return text, len(text)
    pieces: list[str] = []
    built = 0
    total = 0
    last = ""  # the last character of the text so far
    after_placeholder = False
    for part in content:
        kind = part.get("type", "text") if isinstance(part, Mapping) else None
        if isinstance(part, Mapping) and isinstance(kind, str) and kind in _TEXT_PART_TYPES:
            value = part.get("text", "")
            piece = value if isinstance(value, str) else _json_preview(value, limit)
            placeholder = False
        else:
            piece = _placeholder(kind) if isinstance(part, Mapping) else "[?]"
            placeholder = True
        if not piece:
            continue
        if (
            total
            and (placeholder or after_placeholder)
            and not (last.isspace() or piece[0].isspace())
        ):
            piece = " " + piece
        after_placeholder = placeholder
        total += len(piece)
        last = piece[-1]
        if built < limit:
            piece = piece[: limit - built]
            pieces.append(piece)
            built += len(piece)
    return "".join(pieces), total


def _call_text(call: Mapping[str, Any], limit: int) -> str:
    """``name(arguments)`` of an OpenAI-style tool call or legacy function call.

    The arguments (a JSON string, or an object) are cut to ``limit`` characters.
    """
    function = call.get("function")
    if isinstance(function, Mapping):
        name, args = function.get("name"), function.get("arguments")
    else:
        name = call.get("name")
        args = call.get("arguments", call.get("input"))
    if name is None and not isinstance(function, Mapping):
        kind = call.get("type")
        name = f"[{kind}]" if isinstance(kind, str) else "?"
    name_text = _clip(name if isinstance(name, str) else _json_preview(name, 32), _LABEL_MAX)
    if args is None:
        args_text = ""
    elif isinstance(args, str):
        args_text = _clip(args[: limit + 1], limit)
    else:
        args_text = _json_preview(args, limit)
    return f"{name_text}({args_text})"


def _calls(message: Message, limit: int) -> tuple[list[str], int]:
    """Up to `_CALLS_SHOWN` calls a message makes, as text, and how many it makes."""
    calls: list[str] = []
    count = 0
    for call in message.tool_calls or ():
        if len(calls) < _CALLS_SHOWN:
            calls.append(_call_text(call, limit))
        count += 1
    if isinstance(message.function_call, Mapping):
        if len(calls) < _CALLS_SHOWN:
            calls.append(_call_text(message.function_call, limit))
        count += 1
    return calls, count


def message_text(message: Message, *, limit: int = 100_000) -> str:
    """The words of a message as one text: its text, ``[image]``-like placeholders
    for other parts, and a ``[calls name(arguments)]`` line per call it makes.

    What `BranchDiff` compares. At most ``limit``
    characters of the content and of each call's arguments are kept.
    """
    text, _ = _content_text(message.content, limit)
    calls, _ = _calls(message, limit)
    lines = [text] if text else []
    lines.extend(f"[calls {call}]" for call in calls)
    return "\n".join(lines)


def escape(text: str) -> str:
    """``text`` safe anywhere in HTML: invalid characters replaced, ``&<>"'`` escaped."""
    return html.escape(_clean(text), quote=True)


def _one_line(message: Message, width: int, *, detailed: bool) -> str:
    """A one-line preview of a message, at most ``width`` characters.

    Args:
        message: The message.
        width: Longest preview, in characters.
        detailed: ``False`` gives the classic `describe_node()` preview
            (the text parts only; ``<n tool call(s)>`` when there is no text).
            ``True`` also shows non-text parts (``[image]``), the calls made
            (``calls search_docs({...})``) and ``(no content)``.

    Returns:
        The preview, whitespace collapsed.
    """
    if not detailed:
        preview = _squeeze(message.text, width)
        if not preview and message.tool_calls:
            preview = f"<{len(message.tool_calls)} tool call(s)>"
            if len(preview) > width:
                preview = preview[: width - 1] + "…"
        return preview
    content = message.content
    if isinstance(content, str) or content is None:
        preview = _squeeze(content or "", width)
    else:  # build as much of the text as the preview needs (whitespace collapses)
        limit = 4 * width + 64
        while True:
            text, total = _content_text(content, limit)
            if len(text) >= total or len(" ".join(text.split())) > width:
                break
            limit *= 4
        preview = _squeeze(text, width)
    if preview:
        return preview
    calls, count = _calls(message, width)
    if calls:
        more = f" +{count - 1} more" if count > 1 else ""
        return _squeeze(f"calls {calls[0]}{more}", width)
    return "(no content)"


def _role_of(node: ConversationNode) -> str:
    """The role as shown: the message's role, clipped, or ``(root)``."""
    message = node._message_object()
    return "(root)" if message is None else _clip(message.role, _LABEL_MAX)


def _node_label(node: ConversationNode, width: int) -> str:
    """``role: preview [branch]`` in one line (Mermaid labels)."""
    message = node._message_object()
    text = (
        "(root)"
        if message is None
        else f"{_role_of(node)}: {_one_line(message, width, detailed=True)}"
    )
    if node.branch_name:
        text += f" [{_clip(node.branch_name, _LABEL_MAX)}]"
    return _clean(text)


def _count(n: int, word: str, words: str = "") -> str:
    """``1 message``, ``9,800 messages`` (``words``: the plural, if not ``word + "s"``)."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {words or word + 's'}"


# ================================================================ the layout

_ROW, _BRANCH, _FOLD, _CUT, _MORE = range(5)


class _Item:
    """One line of a bounded rendering, in display order.

    ``depth`` is the number of branch headings around it. ``parent`` is the
    index of the item it hangs from: the previous item of its chain, the
    heading of its branch, or (for a heading or a "more branches" line) the
    branch point's row; -1 for the first.
    """

    __slots__ = ("branches", "count", "depth", "kind", "open", "parent", "position", "tree")

    def __init__(
        self,
        kind: int,
        depth: int,
        parent: int,
        *,
        tree: Tree | None = None,
        count: int = 0,
        branches: int = 0,
        position: tuple[int, int] = (0, 0),
        open: bool = False,
    ) -> None:
        self.kind = kind
        self.depth = depth
        self.parent = parent
        self.tree = tree  # _ROW, _BRANCH: the node (for _BRANCH, the first of the branch)
        self.count = count  # _FOLD, _CUT, _MORE: messages left out
        self.branches = branches  # _FOLD, _CUT, _MORE: side branches among them
        self.position = position  # _BRANCH: (k, n), the branch is child k of n
        self.open = open  # _BRANCH: the active path runs through it

    def fold_text(self) -> str:
        """The words of a fold line."""
        if self.kind == _MORE:
            more = _count(self.branches, "more branch", "more branches")
            return f"… {more} ({_count(self.count, 'message')}) not shown"
        text = f"… {_count(self.count, 'more message')}"
        if self.branches:
            text += f" (with {_count(self.branches, 'side branch', 'side branches')})"
        return text + (" not shown" if self.kind == _CUT else "")


class _Layout:
    """What a bounded rendering shows: items in display order, and some counts."""

    __slots__ = ("cursor", "items", "leaves", "on_path")

    def __init__(
        self, items: list[_Item], leaves: int, on_path: dict[int, int], cursor: Tree
    ) -> None:
        self.items = items
        self.leaves = leaves  # nodes without children, in the whole tree
        self.on_path = on_path  # id() of each tree on the active path -> its depth
        self.cursor = cursor


def _fold_run(chain: list[Tree]) -> list[Tree]:
    """The rows of a chain that stay visible when long runs are folded."""
    if len(chain) > _FOLD_MIN:
        return chain[:_FOLD_KEEP] + chain[-_FOLD_KEEP:]
    return chain


def _subtree_size(top: Tree) -> tuple[int, int]:
    """``(nodes, leaves)`` of the subtree under ``top``, ``top`` included."""
    nodes = leaves = 0
    stack = [top]
    while stack:
        tree = stack.pop()
        nodes += 1
        kids = tree.children
        if kids:
            stack.extend(kids)
        else:
            leaves += 1
    return nodes, leaves


def _layout(
    state: ConversationState,
    max_rows: int,
    weigh: Callable[[Tree, bool], int] | None = None,
    max_weight: int = 0,
    path_nodes: list[ConversationNode] | None = None,
) -> _Layout:
    """Choose the rows to show (see the module docstring) and lay them out.

    Args:
        state: The conversation.
        max_rows: At most this many rows (the cursor's row is always shown).
        weigh: Optional cost of showing a node's row (bytes of HTML), given the
            node's tree and whether it is on the active path; rows are then
            also chosen only while their costs add up to at most ``max_weight``.
        max_weight: The budget for ``weigh``.
        path_nodes: ``state.get_path()``, if the caller has it already.

    Returns:
        The layout. Visits every node once; no recursion.
    """
    if max_rows < 1:
        raise ValueError(f"max_nodes must be at least 1, got {max_rows}")
    if path_nodes is None:
        path_nodes = state.get_path()
    root = state.message_tree
    path: list[Tree] = [root]
    path_kids: list[list[Tree] | None] = []  # the children of each node of the path
    for node in path_nodes[1:]:
        kids = path[-1].children
        path_kids.append(kids)
        if kids is not None and len(kids) == 1:  # a chain: the path goes on
            path.append(kids[0])
            continue
        for child in kids or ():
            if child.data is node:
                path.append(child)
                break
        else:  # pragma: no cover - get_path() follows the tree
            raise RuntimeError(f"node {node.node_id!r} of the active path is not in the tree")
    cursor = path[-1]
    path_kids.append(cursor.children)
    on_path = {id(tree): i for i, tree in enumerate(path)}
    root_has_message = path_nodes[0].has_message

    # ---------------------------------------------------------- choose rows
    shown: set[int] = set()
    rows = 0
    weight = 0

    def take(tree: Tree, forced: bool = False) -> bool:
        nonlocal rows, weight
        if rows >= max_rows and not forced:
            return False
        cost = 0 if weigh is None else weigh(tree, id(tree) in on_path)
        if weigh is not None and weight + cost > max_weight and not forced:
            return False
        rows += 1
        weight += cost
        shown.add(id(tree))
        return True

    # The active path, its runs folded; the chain is cut after the cursor.
    wanted: list[Tree] = []
    chain: list[Tree] = []
    for tree, kids in zip(path, path_kids, strict=True):
        chain.append(tree)
        if tree is cursor or kids is None or len(kids) != 1:
            wanted.extend(_fold_run(chain))
            chain = []
    take(cursor, forced=True)
    low, high = 0, len(wanted) - 2  # wanted[-1] is the cursor
    from_root = True
    complete = True
    while low <= high:
        if not take(wanted[low] if from_root else wanted[high]):
            complete = False
            break
        if from_root:
            low += 1
        else:
            high -= 1
        from_root = not from_root

    # Then breadth-first outward from the path: the first message of each
    # alternative (a branch's heading needs it), later the rest of its chain,
    # later the alternatives below that chain.
    queue: deque[Tree | tuple[list[Tree], list[Tree] | None]] = deque()
    if complete:
        for tree, kids in zip(path, path_kids, strict=True):
            if kids and id(tree) in shown:
                queue.extend(kid for kid in kids if id(kid) not in on_path)
    while queue:
        entry = queue.popleft()
        if isinstance(entry, tuple):  # the rest of a chain whose first row is shown
            rest, kids = entry
            if not all(take(tree) for tree in rest):
                break
            if kids:
                queue.extend(kids)
            continue
        if not take(entry):
            break
        chain = [entry]
        kids = entry.children
        while kids and len(kids) == 1:
            chain.append(kids[0])
            kids = kids[0].children
        if len(chain) > 1:
            queue.append((_fold_run(chain)[1:], kids))
        elif kids:
            queue.extend(kids)

    # ------------------------------------------------------------ lay out
    items: list[_Item] = []
    leaves = 0
    # A chain to lay out: (first node, depth, parent item, (k, n) or None), or a
    # "more branches" line that waits for the branches before it.
    stack: list[tuple[Tree, int, int, tuple[int, int] | None] | _Item] = [(root, 0, -1, None)]
    while stack:
        task = stack.pop()
        if isinstance(task, _Item):
            items.append(task)
            continue
        tree, depth, prev, position = task
        if position is not None:
            items.append(
                _Item(_BRANCH, depth, prev, tree=tree, position=position, open=id(tree) in on_path)
            )
            prev = len(items) - 1
            depth += 1
        hidden = 0  # messages of the current fold
        hidden_branches = 0
        while True:
            key = id(tree)
            step = on_path.get(key)
            kids = tree.children if step is None else path_kids[step]
            if key in shown:
                if hidden:
                    items.append(_Item(_FOLD, depth, prev, count=hidden, branches=hidden_branches))
                    prev = len(items) - 1
                    hidden = hidden_branches = 0
                items.append(_Item(_ROW, depth, prev, tree=tree))
                prev = len(items) - 1
                if not kids:
                    leaves += 1
                    break
                if len(kids) == 1:
                    tree = kids[0]
                    continue
                # A branch point: its shown branches, then one line for the rest.
                more = more_messages = 0
                branches: list[tuple[Tree, int, int, tuple[int, int] | None]] = []
                for k, kid in enumerate(kids, 1):
                    if id(kid) in shown or id(kid) in on_path:
                        branches.append((kid, depth, prev, (k, len(kids))))
                    else:
                        size, ends = _subtree_size(kid)
                        more += 1
                        more_messages += size
                        leaves += ends
                if more:
                    stack.append(_Item(_MORE, depth, prev, count=more_messages, branches=more))
                stack.extend(reversed(branches))
                break
            if step is not None:  # the folded middle of the active path
                hidden += 1 if step or root_has_message else 0
                follow = path[step + 1]
                for kid in kids or ():
                    if kid is not follow:
                        size, ends = _subtree_size(kid)
                        hidden += size
                        hidden_branches += 1
                        leaves += ends
                tree = follow
            elif kids and len(kids) == 1:  # a folded run, or a chain cut by the budget
                hidden += 1
                tree = kids[0]
            else:  # the end of a chain cut by the budget
                size, ends = _subtree_size(tree)
                leaves += ends
                items.append(
                    _Item(_CUT, depth, prev, count=hidden + size, branches=hidden_branches)
                )
                break
    return _Layout(items, leaves, on_path, cursor)


# ====================================================================== HTML

_HTML_MAX_BYTES = 1_000_000  # default ceiling of to_html's output
_HTML_MAX_NESTING = 64  # <details> nested deeper than this continue unindented

_ROLE_COLOURS = {
    "system": "#8e44ad",
    "developer": "#8e44ad",
    "user": "#1f6fb2",
    "assistant": "#2e7d32",
    "tool": "#c05a00",
    "function": "#c05a00",
}
_OTHER_COLOUR = "#757575"
_ROLE_CLASS = re.compile(r"[a-z0-9_-]{1,40}")

_S_FRAME = (
    "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;line-height:1.45"
)
_S_HEADER = "color:#777;margin:0 0 4px 0"
_S_ROW = (
    "margin:1px 0;padding:2px 8px;border-left:3px solid {colour};"
    "white-space:pre-wrap;overflow-wrap:anywhere"
)
_S_ACTIVE = ";background-color:#ffc10724;border-left-width:6px"
_S_CURSOR = ";outline:1px solid #e0a800"
_S_ROLE = "font-weight:600;color:{colour}"
_S_ID = "float:right;margin-left:8px;color:#999;font:85% monospace"
_S_TAG = "background:#7e57c224;color:#6a46b0;border-radius:3px;padding:0 4px;font-size:85%"
_S_CURSOR_TAG = "background:#e0a800;color:#fff;border-radius:3px;padding:0 4px;font-size:80%"
_S_RESULT = "background:#c05a0020;color:#c05a00;border-radius:3px;padding:0 4px;font:85% monospace"
_S_NOTE = "color:#888;font-style:italic"
_S_CALL = "font:90% monospace;color:#c05a00"
_S_DETAILS = "margin:0 0 0 12px;padding-left:6px;border-left:1px dotted #9e9e9e"
_S_SUMMARY = "cursor:pointer;color:#777"
_S_SUMMARY_ACTIVE = "cursor:pointer;color:#8a6d00;font-weight:600"
_S_FLAT_BRANCH = "color:#777;margin-top:2px;border-top:1px dotted #9e9e9e"
_S_FOLD = "color:#888;font-style:italic;padding:0 8px"

# Bytes that the budget charges per row for the lines that may follow it (a
# fold of its chain and, at a branch point, "… more branches"), and per branch
# heading for its markup (the longest variant, with 9-digit "k of n").
_FOLD_LINE_MAX = len(f'<div class="ct-fold" style="{_S_FOLD}"></div>') + 100
_HTML_ROW_EXTRA = 2 * _FOLD_LINE_MAX
_HEADING_EXTRA = len(
    f'<details class="ct-branch-group" open style="{_S_DETAILS}">'
    f'<summary style="{_S_SUMMARY_ACTIVE}"><b>123456789 of 123456789</b> · </summary></details>'
)


def _role_style(role: str | None) -> tuple[str, str]:
    """``(css class suffix, colour)`` of a role."""
    if role is None:
        return "root", _OTHER_COLOUR
    lowered = role.lower()
    name = lowered if _ROLE_CLASS.fullmatch(lowered) else "other"
    return name, _ROLE_COLOURS.get(lowered, _OTHER_COLOUR)


def _message_label_html(message: Message) -> str:
    """The role label (and author name) of a message, as HTML."""
    _, colour = _role_style(message.role)
    role = escape(_clip(message.role, _LABEL_MAX))
    out = f'<b class="ct-role" style="{_S_ROLE.format(colour=colour)}">{role}</b>'
    if message.name:
        name = escape(_clip(message.name, _LABEL_MAX))
        out += f'<span class="ct-name" style="color:#888"> ({name})</span>'
    return out


def _message_text_html(message: Message, preview: int) -> str:
    """The content, tool result and calls of a message, as HTML (after the labels)."""
    out: list[str] = []
    text, total = _content_text(message.content, preview)
    calls, count = _calls(message, _ARGS_PREVIEW)
    out.append(" ")
    if message.tool_call_id is not None:
        out.append(
            f'<span class="ct-result" style="{_S_RESULT}">result of '
            f"{escape(_clip(message.tool_call_id, _ID_SHOWN))}</span> "
        )
    if total:
        more = ""
        if total > len(text):
            more = (
                f'<span class="ct-more" style="{_S_NOTE}">… '
                f"({_count(total - len(text), 'more character')})</span>"
            )
        out.append(f'<span class="ct-text">{escape(text)}{more}</span>')
    elif not count:
        out.append(f'<span class="ct-text" style="{_S_NOTE}">(no content)</span>')
    for call in calls:
        out.append(f'<div class="ct-call" style="{_S_CALL}">⚙ calls {escape(call)}</div>')
    if count > len(calls):
        more_calls = _count(count - len(calls), "more call")
        out.append(f'<div class="ct-call" style="{_S_NOTE}">… {more_calls}</div>')
    return "".join(out)


def _branch_tag_html(branch_name: str) -> str:
    """A branch name as a small tag."""
    name = escape(_clip(branch_name, _LABEL_MAX))
    return f'<span class="ct-branch" style="{_S_TAG}">{name}</span>'


def _tooltip(node: ConversationNode) -> str:
    """The ``title`` of a node's row: id, time, prompt name, metadata."""
    lines = [f"{_clip(node.node_id, _ID_MAX)} · {node.timestamp.isoformat()}"]
    if node.prompt_name:
        lines.append(f"prompt: {_clip(node.prompt_name, _LABEL_MAX)}")
    if node._meta:
        lines.append(f"metadata: {_json_preview(node._meta, _META_PREVIEW)}")
    return escape("\n".join(lines))


def _row_html(
    node: ConversationNode, *, preview: int, ids: bool, active: bool = False, cursor: bool = False
) -> str:
    """One node as a ``<div class="ct-node ...">`` row."""
    message = node._message_object()
    role, colour = _role_style(None if message is None else message.role)
    classes = "ct-node ct-root" if message is None else f"ct-node ct-role-{role}"
    style = _S_ROW.format(colour=colour)
    if active:
        classes += " ct-active"
        style += _S_ACTIVE
    if cursor:
        classes += " ct-cursor"
        style += _S_CURSOR
    out = [
        f'<div class="{classes}" data-node-id="{escape(_clip(node.node_id, _ID_MAX))}" '
        f'title="{_tooltip(node)}" style="{style}">'
    ]
    if ids:
        out.append(
            f'<span class="ct-id" style="{_S_ID}">{escape(_clip(node.node_id, _ID_SHOWN))}</span>'
        )
    if message is None:
        out.append(f'<span style="{_S_NOTE}">(root)</span>')
    else:
        out.append(_message_label_html(message))
    if node.branch_name:
        out.append(" " + _branch_tag_html(node.branch_name))
    if cursor:
        out.append(f' <span class="ct-cursor-tag" style="{_S_CURSOR_TAG}">cursor</span>')
    if message is not None:
        out.append(_message_text_html(message, preview))
    out.append("</div>")
    return "".join(out)


def _summary_html(node: ConversationNode) -> str:
    """What a branch heading says after "k of n": branch name, role, one-line preview."""
    message = node._message_object()
    out = []
    if node.branch_name:
        out.append(_branch_tag_html(node.branch_name) + " ")
    if message is None:
        out.append("(root)")
    else:
        _, colour = _role_style(message.role)
        out.append(
            f'<span style="color:{colour}">{escape(_clip(message.role, _LABEL_MAX))}</span>: '
            f"{escape(_one_line(message, _SUMMARY_PREVIEW, detailed=True))}"
        )
    return "".join(out)


def node_html(node: ConversationNode, *, preview: int = 300) -> str:
    """One node as an HTML block (``ConversationNode._repr_html_``).

    Same look and escaping as a row of `to_html()`: role, text (the first
    ``preview`` characters), tool calls, branch name and node id.

    Args:
        node: The node.
        preview: Longest text shown, in characters.

    Returns:
        A ``<div class="convtree">`` holding one ``ct-node`` row.

    Raises:
        ValueError: if ``preview`` is negative.

    Example:
        ```python
        node = state.add_message("user", "<b>hi</b>")
        node_html(node)  # '<div class="convtree" ...>...&lt;b&gt;hi&lt;/b&gt;...</div>'
        ```
    """
    if preview < 0:
        raise ValueError(f"preview must not be negative, got {preview}")
    row = _row_html(node, preview=preview, ids=True)
    return f'<div class="convtree" style="{_S_FRAME}">{row}</div>'


def message_html(message: Message, *, preview: int = 300) -> str:
    """One message as an HTML block (for lists of messages in a notebook).

    Args:
        message: The message.
        preview: Longest text shown, in characters.

    Returns:
        A ``<div class="ct-message ct-role-...">`` block: role, name, text,
        tool calls or tool result, everything escaped.

    Raises:
        ValueError: if ``preview`` is negative.

    Example:
        ```python
        from IPython.display import HTML
        HTML("".join(message_html(m) for m in state.get_current_messages()))
        ```
    """
    if preview < 0:
        raise ValueError(f"preview must not be negative, got {preview}")
    role, colour = _role_style(message.role)
    return (
        f'<div class="ct-message ct-role-{role}" style="{_S_FRAME};{_S_ROW.format(colour=colour)}">'
        f"{_message_label_html(message)}{_message_text_html(message, preview)}</div>"
    )


def to_html(
    state: ConversationState, *, max_nodes: int = 1000, preview: int = 300, ids: bool = True
) -> str:
    """The tree as self-contained HTML, for Jupyter, VS Code and GitHub notebooks.

    Plain HTML with inline ``style`` attributes: no script, no ``<style>``
    block, no external resource, so untrusted notebooks and GitHub's viewer
    show it as it is. A chain of single children is a flat list of rows; at a
    branch point each child's subtree is a ``<details>`` headed "k of n"
    (open for the branch holding the active path). Rows on the active path
    have the class ``ct-active``, the cursor's row also ``ct-cursor``; every
    row is ``<div class="ct-node ct-role-<role>" data-node-id="..." title="id ·
    time">`` (the role reduced to ``[a-z0-9_-]``, else ``other``; a
    message-less root's row is ``ct-node ct-root``). Everything taken from the
    conversation is escaped, and characters invalid in HTML are replaced by
    U+FFFD, so the result is always valid UTF-8 text.

    Bounded whatever the tree: at most ``max_nodes`` rows, chosen and folded
    by the rule of this module's docstring (the active path first, then
    breadth-first outward from it; runs of more than 40 single children show
    their first and last 10 rows); at most max(1 MB, ``max_nodes`` KB) of
    output, rows beyond that being left out like rows beyond ``max_nodes``
    (only the cursor's row is always shown, so a ``preview`` of millions of
    characters can exceed it); ids, names and tool arguments are clipped; and
    ``<details>`` nest at most 64 deep (deeper branches continue without
    indentation). Linear time: each node is visited once.

    Args:
        state: The conversation.
        max_nodes: Most message rows shown.
        preview: Characters of a message's text shown; the rest is counted
            ("… (1,200 more characters)").
        ids: Whether to show node ids (the ``data-node-id`` and tooltip always
            carry them).

    Returns:
        An HTML fragment: one ``<div class="convtree">``.

    Raises:
        ValueError: if ``max_nodes`` < 1 or ``preview`` < 0.

    Example:
        ```python
        state = ConversationState()
        state.add_message("user", "What is a B-tree?")
        state.add_message("assistant", "A balanced search tree.")
        state.add_alternative("assistant", "A tree for disks.")
        html_text = to_html(state)  # what ConversationState._repr_html_ returns
        ```
    """
    if preview < 0:
        raise ValueError(f"preview must not be negative, got {preview}")
    path_nodes = state.get_path()
    cursor = path_nodes[-1]
    row_html: dict[int, str] = {}
    summary_html: dict[int, str] = {}

    def weigh(tree: Tree, active: bool) -> int:
        node: ConversationNode = tree.data
        text = _row_html(node, preview=preview, ids=ids, active=active, cursor=node is cursor)
        row_html[id(tree)] = text
        cost = len(text.encode()) + _HTML_ROW_EXTRA
        parent = tree.parent
        if parent is not None and len(parent.children or ()) > 1:
            heading = _summary_html(node)
            summary_html[id(tree)] = heading
            cost += len(heading.encode()) + _HEADING_EXTRA
        return cost

    conversation_id = _clip(state.conversation_id, _ID_MAX)
    messages = len(state) - (0 if state.message_tree.data.has_message else 1)
    budget = max(_HTML_MAX_BYTES, 1000 * max_nodes) - 4096  # 4 KB for the frame's tags
    meta = ""
    if state.metadata:
        meta = f' title="metadata: {escape(_json_preview(state.metadata, _META_PREVIEW))}"'
    opening = (
        f'<div class="convtree" data-conversation-id="{escape(conversation_id)}" '
        f'style="{_S_FRAME}"><div class="ct-header" style="{_S_HEADER}"{meta}>conversation '
        f"<code>{escape(_clip(conversation_id, _ID_SHOWN))}</code> · {_count(messages, 'message')}"
    )
    closing = f" · cursor <code>{escape(_clip(cursor.node_id, _ID_SHOWN))}</code></div>"
    budget -= len(opening.encode()) + len(closing.encode()) + 64
    layout = _layout(state, max_nodes, weigh, budget, path_nodes)

    out = [opening, f" · {_count(layout.leaves, 'branch end')}", closing]
    nesting = 0
    for item in layout.items:
        level = min(item.depth, _HTML_MAX_NESTING)
        while nesting > level:
            out.append("</details>")
            nesting -= 1
        if item.kind == _ROW:
            assert item.tree is not None
            text = row_html.get(id(item.tree))
            if text is None:  # pragma: no cover - every shown row was weighed
                active = id(item.tree) in layout.on_path
                text = _row_html(item.tree.data, preview=preview, ids=ids, active=active)
            out.append(text)
        elif item.kind == _BRANCH:
            assert item.tree is not None
            heading = summary_html.get(id(item.tree)) or _summary_html(item.tree.data)
            k, n = item.position
            label = f"<b>{k} of {n}</b> · {heading}"
            if item.depth < _HTML_MAX_NESTING:
                style = _S_SUMMARY_ACTIVE if item.open else _S_SUMMARY
                opened = " open" if item.open else ""
                out.append(
                    f'<details class="ct-branch-group"{opened} style="{_S_DETAILS}">'
                    f'<summary style="{style}">{label}</summary>'
                )
                nesting += 1
            else:
                out.append(f'<div class="ct-branch-group" style="{_S_FLAT_BRANCH}">{label}</div>')
        else:
            out.append(f'<div class="ct-fold" style="{_S_FOLD}">{escape(item.fold_text())}</div>')
    out.append("</details>" * nesting)
    out.append("</div>")
    return "".join(out)


# =================================================================== Mermaid

_MERMAID_DIRECTIONS = frozenset({"TD", "TB", "BT", "LR", "RL"})
_MERMAID_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:!?'+-=*/@$^~_…"
)
# Characters Mermaid itself uses to stand for entity codes while rendering.
_MERMAID_RESERVED = frozenset("ﬂ°¶ß")


def _mermaid_text(text: str) -> str:
    """``text`` safe inside a quoted Mermaid label.

    Letters, digits, spaces, a few harmless punctuation marks and printable
    non-ASCII characters stay; everything else (quotes, ``#``, ``;``, ``%``,
    brackets, ``|``, ``<``, ``>``, backticks, ...) becomes an entity code such
    as ``#35;``, so a label can neither leave its quotes nor start a statement.
    """
    out = []
    for char in _clean(text):
        if char in _MERMAID_SAFE or (
            char > "\x7f" and char.isprintable() and char not in _MERMAID_RESERVED
        ):
            out.append(char)
        else:
            out.append(f"#{ord(char)};")
    return "".join(out)


def to_mermaid(
    state: ConversationState, *, max_nodes: int = 200, preview: int = 40, direction: str = "TD"
) -> str:
    """The tree as a Mermaid flowchart (GitHub, GitLab, mkdocs render it).

    Nodes are named ``n0``, ``n1``, ... in display order (never by node id);
    labels read ``role: preview [branch]``, quoted, with every character that
    could end a label or start a statement written as an entity code
    (``#quot;``-style numeric codes such as ``#34;``). The active path has
    the class ``active``, the cursor ``cursor``; an edge into an alternative
    is labelled "k of n". Long single-child runs and what the budget leaves
    out become ``fold`` nodes ("… 9,800 more messages"), by the same rule as
    `to_html()` (see the module docstring).

    Args:
        state: The conversation.
        max_nodes: Most message nodes drawn.
        preview: Characters of a message's text in its label.
        direction: ``TD``/``TB`` (top down), ``BT``, ``LR`` or ``RL``.

    Returns:
        The Mermaid source, starting ``flowchart TD``.

    Raises:
        ValueError: if ``direction`` is not one of those, ``max_nodes`` < 1
            or ``preview`` < 1.

    Example:
        ```python
        print(f"```mermaid\\n{to_mermaid(state)}\\n```")  # for a Markdown page
        ```
    """
    if direction not in _MERMAID_DIRECTIONS:
        raise ValueError(
            f"direction must be one of {', '.join(sorted(_MERMAID_DIRECTIONS))}, got {direction!r}"
        )
    if preview < 1:
        raise ValueError(f"preview must be at least 1, got {preview}")
    layout = _layout(state, max_nodes)
    lines = [
        f"flowchart {direction}",
        "    classDef active fill:#fff3c4,stroke:#d4a000,stroke-width:2px",
        "    classDef cursor fill:#ffd966,stroke:#b8860b,stroke-width:3px",
        "    classDef fold fill:#f0f0f0,stroke:#999999,stroke-dasharray:4 3,color:#555555",
    ]
    names: list[str] = []  # item index -> Mermaid node (a branch heading: its branch point)
    edge_labels: dict[int, str] = {}  # branch heading index -> "k of n"
    active: list[str] = []
    folds: list[str] = []
    cursor = ""
    count = 0
    for index, item in enumerate(layout.items):
        if item.kind == _BRANCH:
            names.append(names[item.parent])
            edge_labels[index] = "{} of {}".format(*item.position)
            continue
        name = f"n{count}"
        count += 1
        names.append(name)
        if item.kind == _ROW:
            assert item.tree is not None
            node: ConversationNode = item.tree.data
            lines.append(f'    {name}["{_mermaid_text(_node_label(node, preview))}"]')
            if id(item.tree) in layout.on_path:
                active.append(name)
            if item.tree is layout.cursor:
                cursor = name
        else:
            lines.append(f'    {name}(["{_mermaid_text(item.fold_text())}"])')
            folds.append(name)
        if item.parent >= 0:
            source = names[item.parent]
            label = edge_labels.get(item.parent)
            arrow = "-.->" if item.kind == _MORE else "-->"
            lines.append(
                f'    {source} {arrow}|"{label}"| {name}'
                if label
                else f"    {source} {arrow} {name}"
            )
    for i in range(0, len(active), 50):
        lines.append(f"    class {','.join(active[i : i + 50])} active")
    for i in range(0, len(folds), 50):
        lines.append(f"    class {','.join(folds[i : i + 50])} fold")
    lines.append(f"    class {cursor} cursor")
    return "\n".join(lines)


# ====================================================================== rich

_RICH_MAX_NESTING = 12  # branches nested deeper than this continue unindented
_RICH_ROLE_STYLES = {
    "system": "magenta",
    "developer": "magenta",
    "user": "cyan",
    "assistant": "green",
    "tool": "yellow",
    "function": "yellow",
}


def rich_tree(state: ConversationState, *, max_nodes: int = 1000, width: int = 72) -> RichTree:
    """The tree as a `rich.tree.Tree` (``ConversationState.__rich__``).

    Rows read ``role: preview [branch]  id``; the active path is bold and
    marked ``●``, the cursor marked ``◀ cursor``; roles are coloured; each
    alternative hangs under a "k of n" heading. Folding and the row budget
    follow the rule of the module docstring; branches nest at most 12 deep.
    Text from the conversation is shown as text (no markup is interpreted)
    with control characters replaced.

    Args:
        state: The conversation.
        max_nodes: Most message rows shown.
        width: Longest message preview, in characters.

    Returns:
        The tree, to print with ``rich.print`` or a ``Console``.

    Raises:
        ImportError: if rich is not installed.
        ValueError: if ``max_nodes`` < 1 or ``width`` < 1.

    Example:
        ```python
        from rich.console import Console
        Console().print(rich_tree(state))
        ```
    """
    try:
        from rich.text import Text
        from rich.tree import Tree as RichTreeClass
    except ImportError:  # pragma: no cover - rich is a test dependency
        raise ImportError("rich is not installed: pip install 'convtree[rich]'") from None
    if width < 1:
        raise ValueError(f"width must be at least 1, got {width}")
    layout = _layout(state, max_nodes)
    messages = len(state) - (0 if state.message_tree.data.has_message else 1)
    header = Text()
    header.append("conversation ", style="dim")
    header.append(_clean(_clip(state.conversation_id, _ID_SHOWN)), style="bold")
    header.append(
        f" · {_count(messages, 'message')} · {_count(layout.leaves, 'branch end')} · cursor ",
        style="dim",
    )
    header.append(_clean(_clip(layout.cursor.data.node_id, _ID_SHOWN)))
    top = RichTreeClass(header, guide_style="dim")
    containers = [top]
    for item in layout.items:
        level = min(item.depth, _RICH_MAX_NESTING)
        del containers[level + 1 :]
        parent = containers[level]
        if item.kind == _ROW:
            assert item.tree is not None
            node: ConversationNode = item.tree.data
            is_active = id(item.tree) in layout.on_path
            label = Text()
            label.append("● " if is_active else "  ", style="bold yellow" if is_active else "")
            message = node._message_object()
            if message is None:
                label.append("(root)", style="dim")
            else:
                role = _clean(_clip(message.role, _LABEL_MAX))
                label.append(role, style=_RICH_ROLE_STYLES.get(message.role.lower(), "white"))
                label.append(": " + _clean(_one_line(message, width, detailed=True)))
            if node.branch_name:
                label.append(f" [{_clean(_clip(node.branch_name, _LABEL_MAX))}]", style="magenta")
            label.append("  " + _clean(_clip(node.node_id, _ID_SHOWN)), style="dim")
            if item.tree is layout.cursor:
                label.append("  ◀ cursor", style="bold yellow")
            if is_active:
                label.stylize("bold")
            parent.add(label)
        elif item.kind == _BRANCH:
            k, n = item.position
            heading = Text(f"{k} of {n}", style="bold yellow" if item.open else "dim")
            if item.depth < _RICH_MAX_NESTING:
                containers.append(parent.add(heading, guide_style="yellow" if item.open else "dim"))
            else:
                parent.add(heading)
        else:
            parent.add(Text(item.fold_text(), style="dim italic"))
    return top
