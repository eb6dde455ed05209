"""The ``convtree`` command: a click group, one function per subcommand.

Adding a command: write a function decorated with ``@cli.command()``, take the
store with ``@store_option``, run the async part with
[`run_with_store()`][convtree.cli.run_with_store], and return the exit code.
Errors convtree raises on purpose ([`ConvtreeError`][convtree.ConvtreeError], and
``OSError``) become one line on stderr and exit code 1; click's usage errors exit 2.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from .errors import (
    ConvtreeError,
    FilterError,
    FormatError,
    StorageError,
    StorageUnavailableError,
)
from .format import document_json_schema
from .render import render_tree, to_html, to_mermaid
from .state import ConversationState
from .storage.adapter import DataknobsConversationStorage
from .storage.check import CheckReport
from .storage.registry import open_storage
from .storage.urls import default_store_url, mask_url

if TYPE_CHECKING:
    from rich.progress import Progress

    from .interop._source import Skipped
    from .storage.base import ConversationStorage, ConversationSummary

__all__ = [
    "ImportReport",
    "build_demo",
    "check_store",
    "cli",
    "main",
    "parse_where",
    "run_with_store",
    "store_option",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

STORE_HELP = "the store (default: $CONVTREE_STORE, else the embedded SQLite store)"


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


# ------------------------------------------------------------ shared machinery


def store_option(command: F) -> F:
    """The ``--store URL`` option (``None``: the default store, see `store_url`)."""
    return click.option("--store", metavar="URL", default=None, help=STORE_HELP)(command)


def store_url(store: str | None) -> str:
    """The store a command uses: ``--store``, else ``$CONVTREE_STORE``, else the default."""
    return store or default_store_url()


def run_with_store(store: str | None, body: Callable[[ConversationStorage], Awaitable[T]]) -> T:
    """Open the store (``--store`` or the default), run ``body`` with it, close it.

    Every command that works on a store goes through here, so that opening,
    closing and the event loop are handled in one place.
    """

    async def run() -> T:
        async with open_storage(store_url(store)) as storage:
            return await body(storage)

    return asyncio.run(run())


def progress_option(command: F) -> F:
    """``--progress/--no-progress``: a progress bar on stderr (default: when it is a terminal)."""
    return click.option(
        "--progress/--no-progress",
        "progress",
        default=None,
        help="show a progress bar on stderr (default: only when stderr is a terminal)",
    )(command)


@contextmanager
def progress_bar(enabled: bool | None, description: str) -> Iterator[Progress | None]:
    """A rich progress bar on stderr, or ``None`` when it is off."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        transient=False,
    ) as bar:
        yield bar


class _Group(click.Group):
    """Commands listed in the order they are defined (``convtree --help``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="convtree")
def cli() -> None:
    """Branching LLM conversations as trees.

    Conversations live in a store: --store URL on each command, else
    $CONVTREE_STORE, else the embedded SQLite store in your user data directory.
    Store URLs: memory://, file:///dir, sqlite:///file.db, postgresql://...,
    s3://bucket/prefix.
    """


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convtree`` command; returns its exit code.

    0: done; 1: a convtree error (one line on stderr) or a command's own
    failure (``check`` finding problems, ``import`` skipping conversations);
    2: a usage error (unknown command or option, missing argument); 130: interrupted.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="convtree", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("convtree: interrupted", err=True)
        return 130
    except BrokenPipeError:  # e.g. `convtree demo | head`: not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python's own recipe
        return 0
    except (ConvtreeError, OSError) as exc:
        click.echo(f"convtree: error: {_one_line(exc)}", err=True)
        return 1
    return code if isinstance(code, int) else 0


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split("\n"))


# ------------------------------------------------------------------- commands


@cli.command(short_help="Save a branching demo conversation and show it.")
@store_option
@click.option("--json", "as_json", is_flag=True, help="print the stored document instead")
def demo(store: str | None, as_json: bool) -> int:
    """Build a branching demo conversation, save it in a store and show it."""
    url = store_url(store)
    state = asyncio.run(save_demo(url))
    if as_json:
        click.echo(state.to_json(indent=2))
        return 0
    click.echo(f"saved conversation 'demo' in {mask_url(url)}")
    click.echo()
    click.echo(render_tree(state))
    click.echo()
    click.echo(f"{len(state)} nodes, {len(state.leaves())} branches; active path:")
    for message in state.get_current_messages():
        click.echo(f"  {message.role}: {message.text}")
    return 0


@cli.command(short_help="Show a conversation as a tree, Mermaid, HTML or JSON.")
@click.argument("target")
@store_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "mermaid", "html", "json"]),
    default="text",
    show_default=True,
    help="text: the tree (drawn by rich on a terminal); mermaid: a flowchart; "
    "html: a page; json: the document",
)
def show(target: str, store: str | None, fmt: str) -> int:
    """Show a stored conversation, or a conversation document (any version).

    TARGET is a conversation id (in --store, else the default store), or a JSON
    document file, '-' for standard input.
    """
    state = _open(target, store, allow_file=True)
    if fmt == "json":
        click.echo(state.to_json(indent=2))
    elif fmt == "mermaid":
        click.echo(to_mermaid(state))
    elif fmt == "html":
        click.echo(_page(state.conversation_id, to_html(state)))
    else:
        _print_tree(state)
    return 0


@cli.command(short_help="Compare two branches of a stored conversation.")
@click.argument("conversation_id")
@click.argument("a")
@click.argument("b")
@store_option
@click.option("--format", "fmt", type=click.Choice(["text", "html"]), default="text")
def diff(conversation_id: str, a: str, b: str, store: str | None, fmt: str) -> int:
    """Compare two branches of a stored conversation.

    A and B are the ends of the two branches: node ids, id prefixes or branch names.
    """
    state = _open(conversation_id, store, allow_file=False)
    branches = state.diff(a, b)
    if fmt == "html":
        click.echo(_page(f"diff of {state.conversation_id}", branches.to_html()))
    else:
        click.echo(branches.text())
    return 0


@cli.command(short_help="Print the JSON Schema of the document format.")
def schema() -> int:
    """Print the JSON Schema of the current document format."""
    click.echo(json.dumps(document_json_schema(), indent=2, ensure_ascii=False))
    return 0


@cli.command(short_help="Find (and --repair) damaged or orphan records.")
@store_option
@click.option(
    "--repair",
    is_flag=True,
    help="delete orphans and leftovers of crashed writes; quarantine (move aside, "
    "unchanged) the records of conversations that cannot be read",
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    metavar="SECONDS",
    show_default=True,
    help="on stores without transactions (files, S3), count a record no head lists as "
    "an orphan only if it is still so after this many seconds, in case a save is writing it",
)
def check(store: str | None, repair: bool, grace: float) -> int:
    """Read every record of a store: report unreadable conversations and orphan records.

    Exits 1 if problems remain (run again with --repair).
    """
    report = asyncio.run(check_store(store_url(store), repair=repair, grace=grace))
    click.echo("\n".join(report.lines()))
    return report.exit_code


async def check_store(url: str, *, repair: bool = False, grace: float = 10.0) -> CheckReport:
    """``convtree check``: [`check()`][convtree.DataknobsConversationStorage.check] on ``url``."""
    async with open_storage(url) as storage:
        if not isinstance(storage, DataknobsConversationStorage):
            raise ConvtreeError(
                f"{mask_url(url)} is a {type(storage).__name__}, which convtree check "
                "cannot read record by record"
            )
        return await storage.check(repair=repair, grace=max(grace, 0.0))


# ------------------------------------------------------------ import / export


def _format_names() -> tuple[str, ...]:
    from .interop import FORMAT_NAMES

    return FORMAT_NAMES


@dataclass
class ImportReport:
    """What ``convtree import`` did (or, with ``--dry-run``, would do).

    ``imported``, ``replaced``, ``unchanged``: conversation ids; ``kept``: ids
    already stored and different, not replaced; ``skipped``: conversations of
    the input that could not be read (with where and why); ``failed``:
    ``(what, reason)`` for files that could not be read at all and
    conversations the store refused; ``files``: file -> (format, conversations read).
    """

    dry_run: bool = False
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    imported: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when the store now holds every conversation of the input as it is there."""
        return 1 if self.kept or self.skipped or self.failed else 0

    def lines(self, store: str) -> list[str]:
        """The report as ``convtree import`` prints it."""
        would = "would be " if self.dry_run else ""
        not_imported = len(self.kept) + len(self.skipped) + len(self.failed)
        out = [
            f"{'dry run: ' if self.dry_run else ''}{len(self.imported)} {would}imported, "
            f"{len(self.replaced)} {would}replaced, {len(self.unchanged)} unchanged, "
            f"{not_imported} skipped (into {store})"
        ]
        out += [f"  {name}: {fmt}, {n} conversation(s)" for name, (fmt, n) in self.files.items()]
        out += [
            f"skipped: {cid!r}: already stored, skipped (it differs: --replace updates it)"
            for cid in self.kept
        ]
        for s in self.skipped:
            which = f" {s.source_id!r}" if s.source_id else ""
            out.append(f"skipped: conversation {s.index}{which}: {s.error}")
        out += [f"failed: {what}: {reason}" for what, reason in self.failed]
        return out


@cli.command("import", short_help="Import ChatGPT, Open WebUI, LibreChat, ... files.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", *_format_names()]),
    default="auto",
    show_default=True,
    help="the files' format; auto: told from each file's first conversation",
)
@store_option
@click.option("--dry-run", is_flag=True, help="read and compare everything, write nothing")
@click.option(
    "--replace", is_flag=True, help="replace stored conversations of the same id that differ"
)
@progress_option
def import_(
    files: tuple[Path, ...],
    fmt: str,
    store: str | None,
    dry_run: bool,
    replace: bool,
    progress: bool | None,
) -> int:
    """Import conversations from export files into a store.

    FILES are JSON files, ZIP exports or directories of them: ChatGPT, Open WebUI,
    LibreChat, an OpenAI message list, or convtree documents. A conversation keeps
    its id from the source, so importing a file again adds nothing twice: an
    identical conversation is "unchanged", a different one of the same id is
    skipped unless --replace. Exit code 0 when the store holds every conversation
    of the files as it is there, 1 when any was skipped (unreadable, or stored
    differently without --replace).
    """
    url = store_url(store)
    report = ImportReport(dry_run=dry_run)
    with progress_bar(progress, "importing") as bar:
        run_with_store(
            store,
            lambda storage: _import_files(
                storage, files, fmt, report, replace=replace, dry_run=dry_run, bar=bar
            ),
        )
    click.echo("\n".join(report.lines(mask_url(url))))
    return report.exit_code


async def _import_files(
    storage: ConversationStorage,
    files: Sequence[Path],
    fmt: str,
    report: ImportReport,
    *,
    replace: bool,
    dry_run: bool,
    bar: Progress | None,
) -> None:
    from .interop import FORMATS, Outcome, detect, put

    lists = {
        Outcome.ADDED: report.imported,
        Outcome.REPLACED: report.replaced,
        Outcome.UNCHANGED: report.unchanged,
        Outcome.KEPT: report.kept,
    }
    task = bar.add_task("importing", total=len(files)) if bar is not None else None
    for path in files:
        try:
            name = detect(path) if fmt == "auto" else fmt
        except FormatError as exc:
            report.failed.append((str(path), str(exc)))
            continue
        if bar is not None and task is not None:
            bar.update(task, description=f"{path.name} ({name})")
        with FORMATS[name].read(path) as reader:
            for state in reader:
                if bar is not None and task is not None:
                    bar.update(task, description=f"{path.name} ({name}): {reader.count}")
                try:
                    outcome = await put(storage, state, replace=replace, dry_run=dry_run)
                except StorageUnavailableError:
                    raise
                except StorageError as exc:
                    report.failed.append((repr(state.conversation_id), str(exc)))
                    continue
                lists[outcome].append(state.conversation_id)
        report.skipped.extend(reader.skipped)
        report.files[str(path)] = (name, reader.count + len(reader.skipped))
        if bar is not None and task is not None:
            bar.advance(task)


@cli.command("export", short_help="Export conversations in another format.")
@click.argument("ids", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_format_names()),
    default="convtree",
    show_default=True,
    help="the file format to write",
)
@click.option(
    "--mode",
    type=click.Choice(["tree", "active", "branches"]),
    default=None,
    help="tree: every branch (default; openai: active); active: the path to the cursor; "
    "branches: one conversation per branch, ids <id>~<leaf id>",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    default=None,
    help="the file to write (replaced only once complete); default: standard output",
)
@store_option
def export(
    ids: tuple[str, ...], fmt: str, mode: str | None, output: Path | None, store: str | None
) -> int:
    """Export stored conversations in another application's format.

    IDS are conversation ids. Every one is loaded before anything is written: an
    unknown id writes nothing and exits 1.
    """
    from .interop import FORMATS

    url = store_url(store)

    async def load(storage: ConversationStorage) -> list[ConversationState]:
        states = []
        for cid in dict.fromkeys(ids):
            state = await storage.load_conversation(cid)
            if state is None:
                raise StorageError(f"no conversation {cid!r} in {mask_url(url)}")
            states.append(state)
        return states

    states = run_with_store(store, load)
    chosen = mode or ("active" if fmt == "openai" else "tree")
    dest: str | IO[bytes] = (
        sys.stdout.buffer if output is None or str(output) == "-" else str(output)
    )
    count = FORMATS[fmt].write(states, dest, mode=chosen)
    if not isinstance(dest, str):
        dest.flush()
    else:
        click.echo(f"wrote {count} conversation(s) ({fmt}, {chosen}) to {dest}", err=True)
    return 0


@cli.command(short_help="Copy a dataknobs-llm store into a convtree store.")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="URL",
    help="the dataknobs-llm store: dataknobs-llm+sqlite:///..., dataknobs-llm+file:///..., "
    "dataknobs-llm+postgresql://... (read only, never changed)",
)
@click.option(
    "--to",
    "dest",
    default=None,
    metavar="URL",
    help="the convtree store (default: $CONVTREE_STORE, else the embedded SQLite store)",
)
@click.option("--dry-run", is_flag=True, help="read and compare everything, write nothing")
@click.option("--replace", is_flag=True, help="replace stored conversations that differ")
@progress_option
def migrate(
    source: str, dest: str | None, dry_run: bool, replace: bool, progress: bool | None
) -> int:
    """Copy every conversation of a store dataknobs-llm wrote into a convtree store.

    Ids, branches, the cursor, metadata and times are kept; the source is only
    read. Running it again copies only what is new. Exit code 0 when the
    destination holds every conversation of the source, 1 when any failed or
    was kept different (without --replace).
    """
    from .interop.dataknobs_llm import migrate as run_migration

    with progress_bar(progress, "migrating") as bar:
        task = bar.add_task("migrating", total=None) if bar is not None else None

        def advance(done: int, total: int | None) -> None:
            if bar is not None and task is not None:
                bar.update(task, completed=done, total=total)

        report = asyncio.run(
            run_migration(
                source, store_url(dest), dry_run=dry_run, replace=replace, progress=advance
            )
        )
    click.echo("\n".join(report.lines()))
    return report.exit_code


# ------------------------------------------------------------------- helpers


# ------------------------------------------------------------------ listing

_OPERATORS = {
    "=": "$eq",
    "==": "$eq",
    "!=": "$ne",
    ">": "$gt",
    ">=": "$gte",
    "<": "$lt",
    "<=": "$lte",
    "in": "$in",
    "nin": "$nin",
    "contains": "$contains",
    "exists": "$exists",
}


def _value(text: str) -> Any:
    """A --where value: a JSON literal (42, true, null, "x", [..]) when it is one, else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_where(clauses: Sequence[str]) -> dict[str, Any]:
    """``--where`` clauses as a metadata filter.

    ``KEY=VALUE`` or ``KEY OP VALUE`` with OP one of ``= != > >= < <= in nin contains
    exists``; VALUE is a JSON literal when it parses as one (``42``, ``true``,
    ``["a","b"]``, ``"42"``), else the text itself.

    Raises:
        FilterError: a clause that is neither form.
    """
    out: dict[str, Any] = {}
    for clause in clauses:
        parts = clause.split(None, 2)
        if len(parts) == 3 and parts[1] in _OPERATORS:
            key, op, raw = parts
        elif "=" in clause and not clause.startswith("="):
            key, _, raw = clause.partition("=")
            key, op = key.strip(), "="
        else:
            raise FilterError(
                f"--where {clause!r}: write KEY=VALUE or 'KEY OP VALUE' with OP one of "
                f"{' '.join(_OPERATORS)}"
            )
        value = _value(raw)
        if op in ("in", "nin") and not isinstance(value, list):
            value = [v.strip() for v in raw.split(",")]
        spec = out.setdefault(key, {})
        if not isinstance(spec, dict):
            raise FilterError(f"--where: key {key!r} given twice")
        spec[_OPERATORS[op]] = value
    return out


def where_option(command: F) -> F:
    """``--where`` (repeatable) and ``--search``."""
    command = click.option(
        "--search",
        metavar="TEXT",
        default=None,
        help="only conversations with a message (on any branch) holding TEXT, any case",
    )(command)
    return click.option(
        "--where",
        "where",
        multiple=True,
        metavar="FILTER",
        help="metadata filter: KEY=VALUE or 'KEY OP VALUE' (OP: = != > >= < <= in nin "
        "contains exists); repeat to combine",
    )(command)


@cli.command("ls", short_help="List conversations: filters, search, newest first, pages.")
@where_option
@click.option(
    "--order",
    default="-updated_at",
    show_default=True,
    metavar="KEY",
    help="updated_at, created_at or conversation_id; '-' first for descending",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--after", metavar="CURSOR", default=None, help="the cursor a previous page printed")
@click.option("--total", is_flag=True, help="also count every matching conversation")
@click.option("--json", "as_json", is_flag=True, help="print the page as JSON")
@store_option
def ls(
    where: tuple[str, ...],
    search: str | None,
    order: str,
    limit: int,
    after: str | None,
    total: bool,
    as_json: bool,
    store: str | None,
) -> int:
    """List the conversations of a store, one page at a time.

    Examples: convtree ls --where user_id=alice --search invoice;
    convtree ls --where 'tags contains work' --order created_at --limit 50.
    """
    flt = parse_where(where)
    page = run_with_store(
        store,
        lambda storage: storage.list_page(
            flt or None, search=search, order_by=order, limit=limit, after=after, total=total
        ),
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "rows": [_row_json(row) for row in page.rows],
                    "next_cursor": page.next_cursor,
                    "total": page.total,
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, expand=False)
    width = max([len(r.conversation_id) for r in page.rows] + [2])
    table.add_column("id", no_wrap=True, min_width=min(width, 36), overflow="fold")
    table.add_column("updated", no_wrap=True, min_width=16)
    table.add_column("msgs", justify="right", no_wrap=True, min_width=4)
    table.add_column("branches", justify="right", no_wrap=True, min_width=8)
    table.add_column("first message", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("last message", no_wrap=True, overflow="ellipsis", max_width=40)
    for row in page.rows:
        table.add_row(
            row.conversation_id,
            row.updated_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            str(row.message_count),
            str(row.leaf_count),
            row.first_user_message or "",
            row.last_message or "",
        )
    console = Console(highlight=False, soft_wrap=False)
    if page.rows:
        console.print(table)
    else:
        console.print("no conversations match")
    footer = []
    if page.total is not None:
        footer.append(f"{page.total} in all")
    if page.next_cursor:
        footer.append(f"next page: --after {page.next_cursor}")
    if footer:
        console.print("; ".join(footer), style="dim")
    return 0


def _row_json(row: ConversationSummary) -> dict[str, Any]:
    out = dataclasses.asdict(row)
    out["created_at"] = row.created_at.isoformat()
    out["updated_at"] = row.updated_at.isoformat()
    return out


@cli.command(short_help="Count conversations (the filters and search of ls).")
@where_option
@store_option
def count(where: tuple[str, ...], search: str | None, store: str | None) -> int:
    """Print how many conversations match."""
    flt = parse_where(where)
    n = run_with_store(
        store, lambda storage: storage.count_conversations(flt or None, search=search)
    )
    click.echo(str(n))
    return 0


@cli.command(short_help="Delete conversations.")
@click.argument("ids", nargs=-1, required=True)
@store_option
def rm(ids: tuple[str, ...], store: str | None) -> int:
    """Delete conversations and every record of them; exit 1 if one was not there."""

    async def body(storage: ConversationStorage) -> list[str]:
        missing = []
        for cid in ids:
            if not await storage.delete_conversation(cid):
                missing.append(cid)
        return missing

    missing = run_with_store(store, body)
    for cid in ids:
        if cid in missing:
            click.echo(f"convtree: no conversation {cid!r}", err=True)
        else:
            click.echo(f"deleted {cid}")
    return 1 if missing else 0


def _open(target: str, store: str | None, *, allow_file: bool) -> ConversationState:
    """A conversation from a document file (or stdin), or by id from a store."""
    if allow_file and store is None:
        if target == "-":
            return ConversationState.from_json(sys.stdin.read())
        path = Path(target)
        if path.is_file() or path.suffix.lower() == ".json" or len(path.parts) > 1:
            return ConversationState.from_json(path.read_text("utf-8"))
    url = store_url(store)
    state = run_with_store(store, lambda storage: storage.load_conversation(target))
    if state is None:
        also = " (and there is no file of that name)" if allow_file and store is None else ""
        raise ConvtreeError(f"no conversation {target!r} in {mask_url(url)}{also}")
    return state


def _print_tree(state: ConversationState) -> None:
    """The text tree: drawn by rich, in colour, on a terminal; plain text otherwise."""
    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(state)
        return
    click.echo(render_tree(state))


def _page(title: str, body: str) -> str:
    """A standalone HTML page around a rendering (no script, no outside resource)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="margin:16px">{body}</body></html>'
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
