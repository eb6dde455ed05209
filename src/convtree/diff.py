"""Comparing two branches: common ancestor, shared prefix, the two tails, per-message text diffs.

[`diff()`][convtree.ConversationState.diff] is the entry point. Two nodes of one conversation
share the path from the root to their deepest common ancestor. A fork keeps the
node ids of the path it copied, so a fork and its source are compared the same
way: the shared prefix is the longest run of equal node ids from the root.

The tails (the nodes after the common ancestor) are aligned position by
position: step *i* of one branch beside step *i* of the other. That is what a
re-run or a regenerated reply produces (the same turns, other replies), and it
is linear in the branches' length. Text diffs are computed when asked for.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import zip_longest
from typing import TYPE_CHECKING

from .render import escape, message_text

if TYPE_CHECKING:
    from .node import ConversationNode
    from .state import ConversationState, NodeRef

__all__ = ["BranchDiff", "MessageDiff", "diff_branches"]

_TEXT_PREVIEW = 2_000  # characters of a message shown in a rendering


@dataclass(frozen=True, eq=False)
class MessageDiff:
    """Step ``position`` of the two tails: ``a`` beside ``b`` (either may be missing)."""

    position: int
    a: ConversationNode | None
    b: ConversationNode | None

    @cached_property
    def same(self) -> bool:
        """Both present with equal messages (role, content, tool calls, ...)."""
        a, b = self.a, self.b
        return a is not None and b is not None and a.message_dict() == b.message_dict()

    @property
    def a_text(self) -> str:
        """The text of ``a``'s message ("" when missing)."""
        return _text(self.a)

    @property
    def b_text(self) -> str:
        """The text of ``b``'s message ("" when missing)."""
        return _text(self.b)

    def unified(self, *, context: int = 3) -> list[str]:
        """A line-based unified diff of the two texts (``difflib.unified_diff``)."""
        return list(
            difflib.unified_diff(
                self.a_text.splitlines(),
                self.b_text.splitlines(),
                fromfile=_label(self.a, "a"),
                tofile=_label(self.b, "b"),
                n=context,
                lineterm="",
            )
        )

    def ratio(self) -> float:
        """How similar the texts are, from 0 to 1 (``SequenceMatcher.ratio`` on words)."""
        return difflib.SequenceMatcher(
            None, self.a_text.split(), self.b_text.split(), autojunk=False
        ).ratio()

    def __repr__(self) -> str:
        state = "same" if self.same else "differs"
        return (
            f"<MessageDiff {self.position}: {_label(self.a, '-')} | {_label(self.b, '-')} {state}>"
        )


@dataclass(frozen=True, eq=False)
class BranchDiff:
    """What two branches share and where they differ.

    Attributes:
        a: The end of the first branch.
        b: The end of the second branch.
        ancestor: Their deepest common node (``None``: the two share nothing,
            e.g. unrelated conversations).
        prefix: The shared path, from the root to ``ancestor``.
        a_tail: The first branch after ``ancestor``, down to ``a``.
        b_tail: The second branch after ``ancestor``, down to ``b``.
    """

    a: ConversationNode
    b: ConversationNode
    ancestor: ConversationNode | None
    prefix: Sequence[ConversationNode]
    a_tail: Sequence[ConversationNode]
    b_tail: Sequence[ConversationNode]

    @cached_property
    def pairs(self) -> list[MessageDiff]:
        """The tails aligned position by position."""
        return [
            MessageDiff(i, a, b) for i, (a, b) in enumerate(zip_longest(self.a_tail, self.b_tail))
        ]

    @property
    def identical(self) -> bool:
        """Whether the two tails hold the same messages."""
        return all(pair.same for pair in self.pairs)

    def text(self, *, max_pairs: int = 200, width: int = 72) -> str:
        """A plain-text rendering: the shared prefix in one line, then a unified diff per step."""
        lines = [
            f"common ancestor: {_label(self.ancestor, '(none)')} "
            f"after {len(self.prefix)} shared node(s)",
            f"a: {_label(self.a, '')} ({len(self.a_tail)} more)   "
            f"b: {_label(self.b, '')} ({len(self.b_tail)} more)",
        ]
        for pair in self.pairs[:max_pairs]:
            if pair.same:
                lines.append(f"  [{pair.position}] = {_preview(pair.a, width)}")
                continue
            lines.append(f"  [{pair.position}] a: {_preview(pair.a, width)}")
            lines.append(f"  [{pair.position}] b: {_preview(pair.b, width)}")
            lines.extend("      " + line for line in pair.unified()[2:][:40])
        hidden = len(self.pairs) - max_pairs
        if hidden > 0:
            lines.append(f"  ... {hidden:,} more step(s)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        differing = sum(not pair.same for pair in self.pairs)
        return (
            f"<BranchDiff {_label(self.a, '')} vs {_label(self.b, '')}: "
            f"{len(self.prefix)} shared, tails {len(self.a_tail)}/{len(self.b_tail)}, "
            f"{differing} differing step(s)>"
        )

    def to_html(self, *, max_pairs: int = 200) -> str:
        """Side by side in an HTML table, changed words marked; no script, all text escaped."""
        cell = "padding:4px 8px;vertical-align:top;border-top:1px solid #ddd;"
        rows = [
            '<div class="convtree-diff" style="font-family:system-ui,sans-serif;font-size:13px">',
            f'<div style="color:#555;margin-bottom:4px">{len(self.prefix):,} shared node(s) '
            f"up to {escape(_label(self.ancestor, '(none)'))}; "
            f"a: {len(self.a_tail):,} more, b: {len(self.b_tail):,} more</div>",
            '<table style="border-collapse:collapse;width:100%;table-layout:fixed">',
            f'<tr><th style="{cell}width:3em"></th>'
            f'<th style="{cell}text-align:left">a: {escape(_label(self.a, ""))}</th>'
            f'<th style="{cell}text-align:left">b: {escape(_label(self.b, ""))}</th></tr>',
        ]
        for pair in self.pairs[:max_pairs]:
            a_html, b_html = _marked(pair)
            shade = "" if pair.same else "background:#fffbea;"
            rows.append(
                f'<tr class="ct-step{" ct-same" if pair.same else " ct-differs"}">'
                f'<td style="{cell}color:#888">{pair.position}</td>'
                f'<td style="{cell}{shade}white-space:pre-wrap">{a_html}</td>'
                f'<td style="{cell}{shade}white-space:pre-wrap">{b_html}</td></tr>'
            )
        hidden = len(self.pairs) - max_pairs
        if hidden > 0:
            rows.append(f'<tr><td colspan="3" style="{cell}">… {hidden:,} more step(s)</td></tr>')
        rows.append("</table></div>")
        return "".join(rows)

    def _repr_html_(self) -> str:
        return self.to_html()


def diff_branches(
    state: ConversationState,
    a: NodeRef,
    b: NodeRef,
    *,
    other: ConversationState | None = None,
) -> BranchDiff:
    """Compare the path to ``a`` in ``state`` with the path to ``b`` in ``other`` (or ``state``).

    O(depth of a + depth of b); iterative.
    """
    a_path = state.get_path(a)
    b_path = (state if other is None else other).get_path(b)
    shared = 0
    for x, y in zip(a_path, b_path, strict=False):
        if x.node_id != y.node_id:
            break
        shared += 1
    return BranchDiff(
        a=a_path[-1],
        b=b_path[-1],
        ancestor=a_path[shared - 1] if shared else None,
        prefix=a_path[:shared],
        a_tail=a_path[shared:],
        b_tail=b_path[shared:],
    )


def _text(node: ConversationNode | None) -> str:
    message = None if node is None else node._message_object()
    return "" if message is None else message_text(message)


def _label(node: ConversationNode | None, missing: str) -> str:
    if node is None:
        return missing
    role = node.role or "root"
    return f"{role} {node.node_id}"


def _preview(node: ConversationNode | None, width: int) -> str:
    if node is None:
        return "(nothing)"
    text = " ".join(_text(node).split())
    if len(text) > width:
        text = text[: width - 1] + "…"
    return f"{node.role}: {text}"


def _marked(pair: MessageDiff) -> tuple[str, str]:
    """Both texts as HTML, the words only one side has in <del>/<ins>."""
    a_text, b_text = pair.a_text[:_TEXT_PREVIEW], pair.b_text[:_TEXT_PREVIEW]
    a_head = escape(_label(pair.a, "")) if pair.a is not None else "(nothing)"
    b_head = escape(_label(pair.b, "")) if pair.b is not None else "(nothing)"
    head = '<div style="color:#888;font-size:11px">{}</div>'
    if pair.same or pair.a is None or pair.b is None:
        return head.format(a_head) + escape(a_text), head.format(b_head) + escape(b_text)
    a_words, b_words = _words(a_text), _words(b_text)
    matcher = difflib.SequenceMatcher(None, a_words, b_words, autojunk=False)
    a_out: list[str] = []
    b_out: list[str] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        a_part = escape("".join(a_words[i1:i2]))
        b_part = escape("".join(b_words[j1:j2]))
        if tag == "equal":
            a_out.append(a_part)
            b_out.append(b_part)
            continue
        if a_part:
            a_out.append(f'<del style="background:#fdd;text-decoration:none">{a_part}</del>')
        if b_part:
            b_out.append(f'<ins style="background:#dfd;text-decoration:none">{b_part}</ins>')
    return head.format(a_head) + "".join(a_out), head.format(b_head) + "".join(b_out)


def _words(text: str) -> list[str]:
    """Words with the whitespace after them, so that joining gives the text back."""
    out: list[str] = []
    start = 0
    n = len(text)
    i = 0
    while i < n:
        while i < n and not text[i].isspace():
            i += 1
        while i < n and text[i].isspace():
            i += 1
        out.append(text[start:i])
        start = i
    return out
