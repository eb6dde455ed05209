"""The ``convtree`` command."""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import ConvtreeError
from .format import document_json_schema
from .render import render_tree, to_html, to_mermaid
from .state import ConversationState
from .storage.adapter import DataknobsConversationStorage
from .storage.check import CheckReport
from .storage.registry import open_storage
from .storage.urls import default_store_url, mask_url

__all__ = ["build_demo", "check_store", "main"]


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
    show = sub.add_parser(
        "show", help="show a stored conversation, or a conversation document (any version)"
    )
    show.add_argument(
        "target",
        help="a conversation id (in --store, else the default store), "
        "or a JSON document file, '-' for standard input",
    )
    _store_option(show)
    show.add_argument(
        "--format",
        choices=("text", "mermaid", "html", "json"),
        default="text",
        help="text: the tree (in colour on a terminal when rich is installed); "
        "mermaid: a flowchart; html: a page; json: the document",
    )
    diff = sub.add_parser("diff", help="compare two branches of a stored conversation")
    diff.add_argument("conversation_id")
    diff.add_argument("a", help="end of the first branch: a node id, id prefix or branch name")
    diff.add_argument("b", help="end of the second branch")
    _store_option(diff)
    diff.add_argument("--format", choices=("text", "html"), default="text")
    sub.add_parser("schema", help="print the JSON Schema of the current document format")
    check = sub.add_parser(
        "check",
        help="read every record of a store: report conversations that cannot be read and "
        "orphan records (exit 1 if any remain)",
    )
    _store_option(check)
    check.add_argument(
        "--repair",
        action="store_true",
        help="delete orphans and leftovers of crashed writes; quarantine (move aside, "
        "unchanged) the records of conversations that cannot be read",
    )
    check.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on stores without transactions (files, S3), count a record no head lists as "
        "an orphan only if it is still so after this many seconds, in case a save is "
        "writing it (default: 10)",
    )
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
        if args.command == "check":
            report = asyncio.run(check_store(args.store or default_store_url(), args))
            print("\n".join(report.lines()))
            return report.exit_code
        if args.command == "diff":
            state = _open(args.conversation_id, args.store, allow_file=False)
            branches = state.diff(args.a, args.b)
            if args.format == "html":
                print(_page(f"diff of {state.conversation_id}", branches.to_html()))
            else:
                print(branches.text())
            return 0
        state = _open(args.target, args.store, allow_file=True)
        if args.format == "json":
            print(state.to_json(indent=2))
        elif args.format == "mermaid":
            print(to_mermaid(state))
        elif args.format == "html":
            print(_page(state.conversation_id, to_html(state)))
        else:
            _print_tree(state)
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


async def check_store(url: str, args: argparse.Namespace) -> CheckReport:
    """``convtree check``: [`check()`][convtree.DataknobsConversationStorage.check] on ``url``."""
    async with open_storage(url) as storage:
        if not isinstance(storage, DataknobsConversationStorage):
            raise ConvtreeError(
                f"{mask_url(url)} is a {type(storage).__name__}, which convtree check "
                "cannot read record by record"
            )
        return await storage.check(repair=args.repair, grace=max(args.grace, 0.0))


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="the store (default: $CONVTREE_STORE or the embedded SQLite store)",
    )


def _open(target: str, store: str | None, *, allow_file: bool) -> ConversationState:
    """A conversation from a document file (or stdin), or by id from a store."""
    if allow_file and store is None:
        if target == "-":
            return ConversationState.from_json(sys.stdin.read())
        path = Path(target)
        if path.is_file() or path.suffix.lower() == ".json" or len(path.parts) > 1:
            return ConversationState.from_json(path.read_text("utf-8"))
    url = store or default_store_url()

    async def load() -> ConversationState | None:
        async with open_storage(url) as storage:
            return await storage.load_conversation(target)

    state = asyncio.run(load())
    if state is None:
        also = " (and there is no file of that name)" if allow_file and store is None else ""
        raise ConvtreeError(f"no conversation {target!r} in {mask_url(url)}{also}")
    return state


def _print_tree(state: ConversationState) -> None:
    """The text tree: through rich, in colour, when it is installed and this is a terminal."""
    if sys.stdout.isatty():
        try:
            from rich.console import Console
        except ImportError:
            pass
        else:
            Console().print(state)
            return
    print(render_tree(state))


def _page(title: str, body: str) -> str:
    """A standalone HTML page around a rendering (no script, no outside resource)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="margin:16px">{body}</body></html>'
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
