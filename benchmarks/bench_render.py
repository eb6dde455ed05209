"""Rendering and comparing benchmarks: renderers on big trees; diff, replay and descend.

Run:  python benchmarks/bench_render.py
      python benchmarks/bench_render.py --bushy 10000 --depth 100000 --runs 5

Prints a Markdown table: for a bushy tree (random parents, most messages
continuing the latest one, a third branching off a random earlier node) and a
deep chain, each renderer's time (the best of several runs, milliseconds) and
output size (KB). The "floor" row is ``json.dumps(state.to_dict())`` of the
same tree: the cost of merely serialising it, for comparison. A second table
times ``diff`` of two 10,000-deep branches (built, then rendered as text and
as HTML), ``replay`` of the 100,000-deep chain and ``switch_to(root,
descend=True)`` to its end, beside a floor each (comparing two lists of
strings; walking the path). dataknobs-llm and the peers have none of these
operations, so there is no reference row. rich_tree is
timed up to its text (printed to an in-memory 100-column console), since that
is where rich spends its time. Timings on a shared machine are noisy; the best
of N runs is reported to damp that. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from convtree import ConversationState
from convtree.render import render_tree, rich_tree, to_html, to_mermaid

TEXT = "x" * 150  # ~160-character messages with the counter


def best_of(runs: int, func: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time of ``runs`` calls, in seconds, and the last result."""
    best = float("inf")
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def bushy(n: int, seed: int = 1) -> ConversationState:
    """``n`` nodes: each message continues the previous one, or (30%) a random earlier node."""
    rng = random.Random(seed)
    state = ConversationState("bushy")
    ids = [state.current_node_id]
    for i in range(n - 1):
        parent = rng.choice(ids) if rng.random() < 0.3 else ids[-1]
        node = state.add_message(
            "user" if i % 2 else "assistant", f"{TEXT}{i:08d}", parent_id=parent
        )
        ids.append(node.node_id)
    return state


def chain(n: int) -> ConversationState:
    """A single chain of ``n`` messages below the root, the cursor at its end."""
    state = ConversationState("chain")
    for i in range(n):
        state.add_message("user" if i % 2 else "assistant", f"{TEXT}{i:08d}")
    return state


def rich_text(state: ConversationState) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=100, color_system="truecolor")
    console.print(rich_tree(state))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


RENDERERS: dict[str, Callable[[ConversationState], str]] = {
    "to_html": to_html,
    "to_mermaid": to_mermaid,
    "render_tree": render_tree,
    "rich_tree (printed)": rich_text,
    "floor: json.dumps(to_dict())": lambda state: json.dumps(state.to_dict()),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bushy", type=int, default=10_000, help="nodes of the bushy tree")
    parser.add_argument("--depth", type=int, default=100_000, help="messages of the chain")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (best kept)")
    args = parser.parse_args()

    print("building trees ...", file=sys.stderr, flush=True)
    trees = {
        f"bushy {args.bushy:,} nodes": bushy(args.bushy),
        f"chain {args.depth:,} deep": chain(args.depth),
    }
    results: dict[str, dict[str, tuple[float, int]]] = {name: {} for name in RENDERERS}
    for tree_name, state in trees.items():
        for name, render in RENDERERS.items():
            print(f"measuring {name} on {tree_name} ...", file=sys.stderr, flush=True)
            seconds, text = best_of(args.runs, partial(render, state))
            results[name][tree_name] = (seconds * 1e3, len(text.encode()))

    print(f"\nPython {sys.version.split()[0]}, best of {args.runs} runs")
    print_renderers(trees, results)
    print_comparing(args.runs, trees[f"chain {args.depth:,} deep"])
    return 0


def two_branches(depth: int) -> tuple[ConversationState, str, str]:
    """Two ``depth``-deep branches below one question; every third reply the same."""
    state = ConversationState("two")
    top = state.add_message("user", "question")
    for i in range(depth):
        state.add_message("assistant" if i % 2 else "user", f"{TEXT} a {i}")
    end_a = state.current_node_id
    state.switch_to(top)
    for i in range(depth):
        text = f"{TEXT} a {i}" if i % 3 == 0 else f"{TEXT} b {i}"
        state.add_message("assistant" if i % 2 else "user", text)
    return state, end_a, state.current_node_id


def print_comparing(runs: int, deep: ConversationState) -> None:
    state, a, b = two_branches(10_000)
    texts_a = [n.content for n in state.get_path(a)]
    texts_b = [n.content for n in state.get_path(b)]
    rows: list[tuple[str, Callable[[], Any]]] = [
        ("diff, two 10,000-deep branches", lambda: state.diff(a, b).pairs),
        ("  + text()", lambda: state.diff(a, b).text()),
        ("  + to_html()", lambda: state.diff(a, b).to_html()),
        (
            "  floor: compare the two paths' texts",
            lambda: sum(x != y for x, y in zip(texts_a, texts_b, strict=True)),
        ),
        (f"replay, {len(deep) - 1:,} steps", lambda: sum(1 for _ in deep.replay())),
        ("  floor: get_path()", lambda: len(deep.get_path())),
        (
            f"switch_to(root, descend=True), {len(deep) - 1:,} deep",
            lambda: deep.switch_to(deep.root, descend=True),
        ),
    ]
    print("\n| operation | ms |")
    print("|---|---:|")
    for name, func in rows:
        print(f"| {name} | {best_of(runs, func)[0] * 1e3:.1f} |")


def print_renderers(
    trees: dict[str, ConversationState], results: dict[str, dict[str, tuple[float, int]]]
) -> None:
    header = " | ".join(f"{name} (ms) | {name} (KB)" for name in trees)
    print(f"\n| renderer | {header} |")
    print("|---|" + "---:|" * (2 * len(trees)))
    for name, by_tree in results.items():
        cells = " | ".join(
            f"{by_tree[tree][0]:.1f} | {by_tree[tree][1] / 1024:,.0f}" for tree in trees
        )
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    sys.exit(main())
