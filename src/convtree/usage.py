"""Token and cost totals, summed from node metadata.

Where a reply's usage is recorded (``add_message(..., metadata=...)``, or the
metadata a [`rerun()`][convtree.ConversationState.rerun] ``respond`` returns), in
the node's ``metadata`` itself or in its ``usage`` mapping:

==========================  ==================================================
key                         counted as
==========================  ==================================================
``prompt_tokens``           prompt tokens (OpenAI)
``input_tokens``            prompt tokens (Anthropic, OpenAI Responses), plus
``cache_creation_input_tokens`` and ``cache_read_input_tokens`` (Anthropic
                            counts cached input apart)
``completion_tokens``       completion tokens (OpenAI)
``output_tokens``           completion tokens (Anthropic, OpenAI Responses)
``total_tokens``            the total; prompt + completion when absent
``cost``                    cost, in whatever currency you record (one only)
``model``                   the model, for `by_model`
==========================  ==================================================

Keys in ``usage`` win over the same keys beside it. Values that are not
numbers (``True``, ``"12"``, NaN) are not counted; `skipped`
says how many were left out, so a total is never silently wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .render import escape

if TYPE_CHECKING:
    from .node import ConversationNode

__all__ = ["Usage", "sum_usage"]

_PROMPT = (
    "prompt_tokens",
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
_COMPLETION = ("completion_tokens", "output_tokens")


@dataclass
class Usage:
    """Totals over a set of nodes.

    Attributes:
        prompt_tokens: Prompt (input) tokens.
        completion_tokens: Completion (output) tokens.
        total_tokens: Total tokens (as recorded, else prompt + completion).
        cost: Summed ``cost``; ``None`` when no node records one.
        messages: Messages looked at.
        counted: Nodes that record usage.
        skipped: Values left out because they are not numbers.
        by_model: The same totals per ``model`` (nodes without one under ``""``).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    messages: int = 0
    counted: int = 0
    skipped: int = 0
    by_model: dict[str, Usage] = field(default_factory=dict)

    def __str__(self) -> str:
        text = (
            f"{self.total_tokens:,} tokens ({self.prompt_tokens:,} prompt + "
            f"{self.completion_tokens:,} completion)"
        )
        if self.cost is not None:
            text += f", cost {self.cost:.6g}"
        text += f", from {self.counted:,} of {self.messages:,} messages"
        if self.skipped:
            text += f" ({self.skipped} non-numeric value(s) skipped)"
        return text

    def _add(self, prompt: int, completion: int, total: int, cost: float | None) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens += total
        if cost is not None:
            self.cost = cost if self.cost is None else self.cost + cost
        self.counted += 1

    def _repr_html_(self) -> str:
        cell = "padding:2px 10px;text-align:right;border-top:1px solid #ddd"
        rows = [("", self), *sorted(self.by_model.items())]
        body = "".join(
            f"<tr><td style='{cell};text-align:left'>"
            f"{escape(model or ('all' if i == 0 else '(no model)'))}</td>"
            f"<td style='{cell}'>{u.prompt_tokens:,}</td>"
            f"<td style='{cell}'>{u.completion_tokens:,}</td>"
            f"<td style='{cell}'>{u.total_tokens:,}</td>"
            f"<td style='{cell}'>{'' if u.cost is None else f'{u.cost:.6g}'}</td>"
            f"<td style='{cell}'>{u.counted:,}</td></tr>"
            for i, (model, u) in enumerate(rows)
        )
        head = "".join(
            f"<th style='padding:2px 10px;text-align:right'>{name}</th>"
            for name in ("prompt", "completion", "total", "cost", "messages")
        )
        return (
            "<table class='convtree-usage' style='border-collapse:collapse;"
            "font-family:system-ui,sans-serif;font-size:13px'>"
            f"<tr><th style='padding:2px 10px;text-align:left'>model</th>{head}</tr>{body}</table>"
        )


def sum_usage(nodes: Iterable[ConversationNode]) -> Usage:
    """Sum the usage recorded in the metadata of ``nodes`` (see the module's table)."""
    total = Usage()
    for node in nodes:
        if not node.has_message:
            continue  # a message-less root
        total.messages += 1
        meta = node._meta
        if not meta:
            continue
        inner = meta.get("usage")
        sources = (inner, meta) if isinstance(inner, Mapping) else (meta,)
        values: dict[str, Any] = {}
        for source in sources:  # usage first: it wins
            for key in (*_PROMPT, *_COMPLETION, "total_tokens", "cost"):
                if key not in values and key in source:
                    values[key] = source[key]
        if not values:
            continue
        numbers: dict[str, float] = {}
        for key, value in values.items():
            if _is_number(value):
                numbers[key] = value
            else:
                total.skipped += 1
        prompt = int(sum(numbers.get(k, 0) for k in _PROMPT))
        completion = int(sum(numbers.get(k, 0) for k in _COMPLETION))
        recorded_total = numbers.get("total_tokens")
        tokens = int(recorded_total) if recorded_total is not None else prompt + completion
        cost = numbers.get("cost")
        total._add(prompt, completion, tokens, cost)
        model = meta.get("model")
        key = model if isinstance(model, str) else ""
        per = total.by_model.setdefault(key, Usage())
        per.messages += 1
        per._add(prompt, completion, tokens, cost)
    return total


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
