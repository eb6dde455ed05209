"""Core benchmarks: convtree beside the reference (dataknobs-llm 0.5.5) in one run.

Run:  python benchmarks/bench_core.py            (convtree only, unless the reference is installed)
      pip install -e '.[bench]' && python benchmarks/bench_core.py   (side by side)

Prints a Markdown table: each operation's time (the best of several runs,
milliseconds or microseconds), the reference's, the ratio reference/convtree,
and convtree's target on a 2-core machine. Timings on a shared machine are
noisy; the best of N runs is reported to damp that. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime
from typing import Any

from convtree import ConversationState

TEXT = "x" * 190  # ~200-character messages with the counter


def best_of(runs: int, func: Callable[[], Any]) -> float:
    """Best wall time of ``runs`` calls, in seconds."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


# ------------------------------------------------------------------ adapters


class Convtree:
    name = "convtree"

    def new(self) -> Any:
        return ConversationState("bench")

    def append(self, state: Any, i: int) -> None:
        state.add_message("user" if i % 2 else "assistant", f"{TEXT}{i:08d}")

    def add_child(self, state: Any, parent: Any, i: int) -> Any:
        return state.add_message("user", f"{TEXT}{i:08d}", parent_id=parent.node_id)

    def root(self, state: Any) -> Any:
        return state.root

    def to_dict(self, state: Any) -> dict[str, Any]:
        return state.to_dict()  # type: ignore[no-any-return]

    def from_dict(self, doc: dict[str, Any]) -> Any:
        return ConversationState.from_dict(doc)

    def messages(self, state: Any) -> list[Any]:
        return state.get_current_messages()  # type: ignore[no-any-return]


class Reference:
    """dataknobs-llm 0.5.5, driven the way its ConversationManager drives it."""

    name = "reference"

    def __init__(self) -> None:
        from dataknobs_llm.conversations import storage
        from dataknobs_llm.llm.base import LLMMessage
        from dataknobs_structures import Tree

        self.storage, self.LLMMessage, self.Tree = storage, LLMMessage, Tree

    def new(self) -> Any:
        s = self.storage
        root = s.ConversationNode(message=self.LLMMessage(role="system", content="sys"), node_id="")
        return s.ConversationState(conversation_id="bench", message_tree=self.Tree(root))

    def _add(self, state: Any, parent_tree: Any, role: str, text: str) -> Any:
        s = self.storage
        node = self.Tree(
            s.ConversationNode(message=self.LLMMessage(role=role, content=text), node_id="")
        )
        parent_tree.add_child(node)
        node.data.node_id = s.calculate_node_id(node)
        state.current_node_id = node.data.node_id
        state.updated_at = datetime.now()
        return node

    def append(self, state: Any, i: int) -> None:
        current = state.get_current_node()
        self._add(state, current, "user" if i % 2 else "assistant", f"{TEXT}{i:08d}")

    def add_child(self, state: Any, parent: Any, i: int) -> Any:
        return self._add(state, parent, "user", f"{TEXT}{i:08d}")

    def root(self, state: Any) -> Any:
        return state.message_tree

    def to_dict(self, state: Any) -> dict[str, Any]:
        return state.to_dict()  # type: ignore[no-any-return]

    def from_dict(self, doc: dict[str, Any]) -> Any:
        return self.storage.ConversationState.from_dict(doc)

    def messages(self, state: Any) -> list[Any]:
        return state.get_current_messages()  # type: ignore[no-any-return]


# ------------------------------------------------------------------ workloads


def chain(impl: Any, n: int) -> Any:
    state = impl.new()
    for i in range(n):
        impl.append(state, i)
    return state


def bushy(impl: Any, n: int, fanout: int = 6) -> Any:
    """A wide, shallow tree: breadth-first, ``fanout`` children per node."""
    state = impl.new()
    frontier = [impl.root(state)]
    i = 0
    while i < n - 1:
        parent = frontier.pop(0)
        for _ in range(fanout):
            if i >= n - 1:
                break
            frontier.append(impl.add_child(state, parent, i))
            i += 1
    return state


def measure(impl: Any, depth: int, bushy_nodes: int, slow_runs: int) -> dict[str, float]:
    out: dict[str, float] = {}
    state = chain(impl, depth)
    appends = 1000
    out["append at depth 10k (us)"] = _append_cost(impl, state, depth, appends) * 1e6
    state = chain(impl, depth)  # the exact depth again for the rest
    t_to = best_of(slow_runs, lambda: impl.to_dict(state))
    doc = impl.to_dict(state)
    out["to_dict 10k chain (ms)"] = t_to * 1e3
    out["from_dict 10k chain (ms)"] = best_of(slow_runs, lambda: impl.from_dict(doc)) * 1e3
    out["get_current_messages at depth 10k (ms)"] = best_of(5, lambda: impl.messages(state)) * 1e3
    out["document bytes, 10k chain (MB)"] = len(json.dumps(doc, default=str)) / 1e6

    tree = bushy(impl, bushy_nodes)
    out["to_dict ~40k bushy tree (ms)"] = best_of(slow_runs, lambda: impl.to_dict(tree)) * 1e3
    bdoc = impl.to_dict(tree)
    out["from_dict ~40k bushy tree (ms)"] = best_of(slow_runs, lambda: impl.from_dict(bdoc)) * 1e3

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = chain(impl, depth)
    used = tracemalloc.get_traced_memory()[0] - before
    assert len(impl.messages(kept)) >= depth  # alive while measured
    tracemalloc.stop()
    out["memory per node, 10k chain (KB)"] = used / (depth + 1) / 1024
    return out


def _append_cost(impl: Any, state: Any, depth: int, appends: int) -> float:
    """Seconds per append, appending ``appends`` messages at depth ``depth``."""
    start = time.perf_counter()
    for i in range(appends):
        impl.append(state, depth + i)
    return (time.perf_counter() - start) / appends


TARGETS = {
    "append at depth 10k (us)": "<= 10",
    "to_dict 10k chain (ms)": "<= 30",
    "from_dict 10k chain (ms)": "<= 50",
    "get_current_messages at depth 10k (ms)": "",
    "document bytes, 10k chain (MB)": "< 4",
    "to_dict ~40k bushy tree (ms)": "",
    "from_dict ~40k bushy tree (ms)": "",
    "memory per node, 10k chain (KB)": "<= 1.5",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=10_000)
    parser.add_argument("--bushy", type=int, default=40_000)
    parser.add_argument("--no-reference", action="store_true", help="measure convtree only")
    args = parser.parse_args()

    impls: list[Any] = [Convtree()]
    note = ""
    if not args.no_reference:
        try:
            impls.append(Reference())
        except ImportError as exc:
            note = f"reference not measured ({exc}); pip install -e '.[bench]'"

    results = {}
    for impl in impls:
        print(f"measuring {impl.name} ...", file=sys.stderr, flush=True)
        results[impl.name] = measure(
            impl, args.depth, args.bushy, slow_runs=5 if impl.name == "convtree" else 1
        )

    conv = results["convtree"]
    ref = results.get("reference")
    print(f"\nPython {sys.version.split()[0]}, depth {args.depth}, bushy {args.bushy} nodes")
    print("\n| operation | convtree | reference | reference / convtree | target |")
    print("|---|---:|---:|---:|---|")
    for key, value in conv.items():
        other = f"{ref[key]:.3g}" if ref else "-"
        ratio = f"{ref[key] / value:.3g}x" if ref and value else "-"
        print(f"| {key} | {value:.3g} | {other} | {ratio} | {TARGETS.get(key, '')} |")
    if note:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
