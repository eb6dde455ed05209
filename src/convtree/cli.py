"""The ``convtree`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import ConvtreeError
from .format import document_json_schema
from .render import render_tree
from .state import ConversationState
from .storage.registry import open_storage
from .storage.urls import default_store_url, mask_url

__all__ = ["build_demo", "main"]


def build_demo() -> ConversationState:
    """A small branching conversation: a regenerated reply, an edit and a tool call."""
    state = ConversationState("demo", metadata={"user_id": "demo", "tags": ["demo"]})
    state.add_message("system", "You are a concise assistant.")
    question = state.add_message("user", "What is a B-tree?")
    state.add_message("assistant", "A self-balancing search tree.", branch_name="first-try")
    state.add_alternative(
        "assistant",
        "A balanced tree whose wide nodes suit disks: databases index with it.",
        branch_name="regenerated",
        metadata={"model": "demo-model", "usage": {"completion_tokens": 17}},
    )
    state.add_message("user", "Show me one in Python?")
    state.add_message(
        "assistant",
        None,
        tool_calls=[
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "search_docs", "arguments": '{"q": "btree"}'},
            }
        ],
    )
    state.add_message("tool", '{"hits": ["sortedcontainers"]}', tool_call_id="call_1")
    state.add_message("assistant", "Try sortedcontainers.SortedDict: B-tree-like behaviour.")
    state.edit_message(question, "What is a B+ tree?", branch_name="edited-question")
    state.add_message("assistant", "A B-tree that keeps all values in linked leaves.")
    state.switch_to("regenerated")
    return state


async def save_demo(url: str) -> ConversationState:
    """Save the demo conversation into the store at ``url`` and load it back.

    The demo always has the id ``"demo"``: running it again replaces the stored
    demo (``overwrite=True``) and leaves every other conversation alone.
    """
    async with open_storage(url) as storage:
        await storage.save_conversation(build_demo(), overwrite=True)
        loaded = await storage.load_conversation("demo")
    assert loaded is not None  # just saved
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convtree`` command."""
    parser = argparse.ArgumentParser(
        prog="convtree", description="Branching LLM conversations as trees."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="build a branching demo conversation, save it in a store and show it"
    )
    demo.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="where to save it (default: $CONVTREE_STORE or the embedded SQLite store)",
    )
    demo.add_argument("--json", action="store_true", help="print the stored document instead")
    show = sub.add_parser("show", help="show the tree of a conversation document (any version)")
    show.add_argument("path", type=Path, help="a JSON document, '-' for standard input")
    sub.add_parser("schema", help="print the JSON Schema of the current document format")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            url = args.store or default_store_url()
            state = asyncio.run(save_demo(url))
            if args.json:
                print(state.to_json(indent=2))
            else:
                print(f"saved conversation 'demo' in {mask_url(url)}")
                print()
                print(render_tree(state))
                print()
                print(f"{len(state)} nodes, {len(state.leaves())} branches; active path:")
                for message in state.get_current_messages():
                    print(f"  {message.role}: {message.text}")
            return 0
        if args.command == "schema":
            print(json.dumps(document_json_schema(), indent=2, ensure_ascii=False))
            return 0
        text = sys.stdin.read() if str(args.path) == "-" else args.path.read_text("utf-8")
        print(render_tree(ConversationState.from_json(text)))
        return 0
    except BrokenPipeError:  # e.g. `convtree demo | head`: not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python's own recipe
        return 0
    except ConvtreeError as exc:
        print(f"convtree: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"convtree: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
