"""ChatGPT import/export benchmark: a synthetic ~200 MB export into SQLite and back out.

Run:  python benchmarks/bench_import.py              (5,000 conversations, ~200 MB)
      python benchmarks/bench_import.py --small      (300 conversations, a quick check)
      python benchmarks/bench_import.py --conversations 2000 --keep /tmp/bench

Phases, each in a fresh subprocess so that none inherits another's peak memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``):

- parse: ``chatgpt.read(export)`` only (streaming JSON, conversion, ``from_dict``),
  the importer's own cost;
- import: the same, each conversation saved to ``sqlite:///...`` (``save_many`` in
  batches when the storage has it, else ``save_conversation`` one by one);
- export: every conversation loaded from SQLite and streamed out with
  ``chatgpt.write`` to a JSON file;
- verify: the exported file read back beside the source, every conversation
  compared (object equality, so the round trip through SQLite is checked whole).

The export is generated in a temporary directory (never committed): conversations
with regenerated replies and edited prompts at several depths, hidden system
messages, code and execution output, browsing results, citations metadata and
messages of realistic sizes (a few hundred to a few thousand characters). Targets:
import >= 200 conversations/s and peak RSS <= 300 MB. Nothing here is asserted:
timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "the",
    "tree",
    "keeps",
    "every",
    "branch",
    "of",
    "a",
    "conversation",
    "so",
    "that",
    "a",
    "reply",
    "regenerated",
    "or",
    "a",
    "prompt",
    "edited",
    "is",
    "never",
    "lost",
    "and",
    "can",
    "be",
    "compared",
    "replayed",
    "persisted",
    "and",
    "searched",
    "later",
    "on",
    "données",
    "arbres",
    "réponse",
    "分支",
    "对话",
    "保存",
    "✓",
    "→",
    "λ",
    "🙂",
    "index",
    "page",
    "cache",
    "query",
    "disk",
    "node",
    "key",
]
MODELS = ["gpt-4o", "gpt-4o-mini", "o3", "gpt-4.1"]


# ------------------------------------------------------------------ generate


class Corpus:
    """Random text cut from one pre-built corpus (fast, deterministic)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.text = " ".join(rng.choice(WORDS) for _ in range(400_000))

    def cut(self, low: int, high: int) -> str:
        size = self.rng.randint(low, high)
        start = self.rng.randrange(0, len(self.text) - size)
        return self.text[start : start + size]


class Builder:
    """One synthetic ChatGPT conversation, in the shape real exports have."""

    def __init__(self, rng: random.Random, corpus: Corpus, index: int) -> None:
        self.rng = rng
        self.corpus = corpus
        self.mapping: dict[str, Any] = {}
        self.time = 1_700_000_000.0 + index * 3600.0 + rng.random()
        self.count = 0
        self.model = rng.choice(MODELS)

    def new_id(self) -> str:
        self.count += 1
        r = self.rng.getrandbits(96)
        return f"{r >> 64:08x}-{(r >> 48) & 0xFFFF:04x}-4{(r >> 36) & 0xFFF:03x}-{self.count:012x}"

    def add(self, parent: str | None, message: dict[str, Any] | None) -> str:
        node_id = message["id"] if message else self.new_id()
        self.mapping[node_id] = {
            "id": node_id,
            "message": message,
            "parent": parent,
            "children": [],
        }
        if parent is not None:
            self.mapping[parent]["children"].append(node_id)
        return node_id

    def message(
        self,
        role: str,
        content: dict[str, Any],
        *,
        name: str | None = None,
        recipient: str = "all",
        metadata: dict[str, Any] | None = None,
        hidden: bool = False,
    ) -> dict[str, Any]:
        self.time += self.rng.uniform(1.0, 40.0)
        meta: dict[str, Any] = {} if metadata is None else metadata
        if hidden:
            meta["is_visually_hidden_from_conversation"] = True
        return {
            "id": self.new_id(),
            "author": {"role": role, "name": name, "metadata": {}},
            "create_time": None if hidden else self.time,
            "update_time": None,
            "content": content,
            "status": "finished_successfully",
            "end_turn": True if role == "assistant" else None,
            "weight": 0.0 if hidden else 1.0,
            "metadata": meta,
            "recipient": recipient,
            "channel": None,
        }

    def assistant_meta(self, parent: str) -> dict[str, Any]:
        return {
            "citations": [],
            "content_references": [],
            "message_type": None,
            "model_slug": self.model,
            "default_model_slug": self.model,
            "parent_id": parent,
            "request_id": f"{self.rng.getrandbits(64):016x}-IAD",
            "finish_details": {"type": "stop", "stop_tokens": [200002]},
            "is_complete": True,
            "timestamp_": "absolute",
        }

    def text(self, low: int, high: int) -> dict[str, Any]:
        return {"content_type": "text", "parts": [self.corpus.cut(low, high)]}

    def turn(self, parent: str) -> str:
        """A user message and the assistant's reply (sometimes through a tool)."""
        user = self.add(parent, self.message("user", self.text(60, 1000)))
        if self.rng.random() < 0.12:  # the model runs code first
            code = self.add(
                user,
                self.message(
                    "assistant",
                    {
                        "content_type": "code",
                        "language": "python",
                        "text": self.corpus.cut(80, 600),
                    },
                    recipient="python",
                    metadata=self.assistant_meta(user),
                ),
            )
            out = self.add(
                code,
                self.message(
                    "tool",
                    {"content_type": "execution_output", "text": self.corpus.cut(10, 400)},
                    name="python",
                ),
            )
            parent = out
        elif self.rng.random() < 0.08:  # or browses
            quote = self.add(
                user,
                self.message(
                    "tool",
                    {
                        "content_type": "tether_browsing_display",
                        "result": self.corpus.cut(300, 2000),
                        "summary": "",
                        "assets": None,
                    },
                    name="browser",
                ),
            )
            parent = quote
        else:
            parent = user
        reply = self.add(
            parent,
            self.message("assistant", self.text(200, 2800), metadata=self.assistant_meta(parent)),
        )
        if self.rng.random() < 0.3:  # regenerated
            self.add(
                parent,
                self.message(
                    "assistant", self.text(200, 2800), metadata=self.assistant_meta(parent)
                ),
            )
        return reply

    def build(self, index: int) -> dict[str, Any]:
        root = self.add(None, None)
        system = self.add(root, self.message("system", self.text(0, 0), hidden=True))
        at = system
        for _ in range(self.rng.randint(2, 11)):
            before = at
            at = self.turn(at)
            if self.rng.random() < 0.15:  # an edited prompt: a second subtree
                branch = before
                for _ in range(self.rng.randint(1, 3)):
                    branch = self.turn(branch)
        conversation_id = f"{index:08x}-bench-4000-8000-{self.rng.getrandbits(48):012x}"
        return {
            "title": self.corpus.cut(10, 60),
            "create_time": self.mapping[system]["message"]["create_time"] or self.time,
            "update_time": self.time,
            "mapping": self.mapping,
            "moderation_results": [],
            "current_node": at,
            "plugin_ids": None,
            "conversation_id": conversation_id,
            "conversation_template_id": None,
            "gizmo_id": None,
            "gizmo_type": None,
            "is_archived": False,
            "is_starred": None,
            "safe_urls": [],
            "blocked_urls": [],
            "default_model_slug": self.model,
            "conversation_origin": None,
            "voice": None,
            "async_status": None,
            "disabled_tool_ids": [],
            "is_do_not_remember": False,
            "memory_scope": "global_enabled",
            "id": conversation_id,
        }


def generate(path: Path, count: int, seed: int = 12) -> int:
    """Write ``count`` synthetic conversations to ``path``; return its size in bytes."""
    from convtree.interop._source import write_array

    rng = random.Random(seed)
    corpus = Corpus(rng)

    def conversations() -> Iterator[dict[str, Any]]:
        for i in range(count):
            yield Builder(rng, corpus, i).build(i)

    write_array(conversations(), path)
    return path.stat().st_size


# -------------------------------------------------------------------- phases


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_now() -> dict[str, float]:
    """Resident memory now: anonymous (the heap) and file-backed (mapped files), MB."""
    out = {"anon_mb": float("nan"), "file_mb": float("nan")}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    out["anon_mb" if key == "RssAnon" else "file_mb"] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def phase_parse(export: Path) -> dict[str, Any]:
    from convtree.interop import chatgpt

    start = time.perf_counter()
    count = nodes = 0
    with chatgpt.read(export) as reader:
        for state in reader:
            count += 1
            nodes += len(state)
    seconds = time.perf_counter() - start
    return {"count": count, "nodes": nodes, "seconds": seconds, "skipped": len(reader.skipped)}


def phase_import(export: Path, db: Path) -> dict[str, Any]:
    from convtree.interop import chatgpt
    from convtree.storage import open_storage
    from convtree.storage.urls import path_url

    async def run() -> dict[str, Any]:
        start = time.perf_counter()
        count = 0
        storage = await open_storage(path_url("sqlite", db))
        save_many = getattr(storage, "save_many", None)
        try:
            batch = []
            with chatgpt.read(export) as reader:
                for state in reader:
                    count += 1
                    if save_many is None:
                        await storage.save_conversation(state)
                        continue
                    batch.append(state)
                    if len(batch) == 100:
                        await save_many(batch)
                        batch = []
            if batch and save_many is not None:
                await save_many(batch)
        finally:
            await storage.close()
        return {
            "count": count,
            "seconds": time.perf_counter() - start,
            "skipped": len(reader.skipped),
            "how": "save_many" if save_many is not None else "save_conversation",
        }

    return asyncio.run(run())


def phase_export(db: Path, out: Path) -> dict[str, Any]:
    from convtree.interop import chatgpt
    from convtree.storage.urls import path_url
    from convtree.sync import open_storage

    start = time.perf_counter()
    with open_storage(path_url("sqlite", db)) as storage:
        ids = [s.conversation_id for s in storage.list_summaries(order_by="created_at", limit=None)]
        states = (storage.load_conversation(i) for i in ids)
        count = chatgpt.write((s for s in states if s is not None), out)
    return {"count": count, "seconds": time.perf_counter() - start, "bytes": out.stat().st_size}


def phase_verify(export: Path, out: Path) -> dict[str, Any]:
    from convtree.interop._source import iter_objects

    def digest(obj: dict[str, Any]) -> bytes:
        return hashlib.sha256(json.dumps(obj).encode("utf-8", "surrogatepass")).digest()

    start = time.perf_counter()
    exported = {obj["id"]: digest(obj) for _, _, obj in iter_objects(out)}
    same = differ = 0
    for _, _, obj in iter_objects(export):
        if exported.pop(obj["id"], None) == digest(obj):
            same += 1
        else:
            differ += 1
    return {
        "count": same,
        "differ": differ + len(exported),
        "seconds": time.perf_counter() - start,
    }


PHASES = {
    "parse": lambda a: phase_parse(a.export),
    "import": lambda a: phase_import(a.export, a.db),
    "export": lambda a: phase_export(a.db, a.out),
    "verify": lambda a: phase_verify(a.export, a.out),
}


def run_phase(name: str, work: Path) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; its JSON result plus its peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--work", str(work)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="300 conversations, a quick check")
    parser.add_argument("--conversations", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        args.export = args.work / "conversations.json"
        args.db = args.work / "import.db"
        args.out = args.work / "exported.json"
        import convtree.interop.chatgpt
        import convtree.storage
        import convtree.sync  # noqa: F401  (imported before the clock starts)

        cpu = time.process_time()
        result = PHASES[args.phase](args)
        result["cpu"] = time.process_time() - cpu  # every thread: SQLite's worker too
        result["peak_mb"] = _peak_mb()
        result.update(_rss_now())
        print(json.dumps(result))
        return

    count = args.conversations or (300 if args.small else 5000)
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        export = work / "conversations.json"
        for stale in ("import.db", "exported.json"):
            (work / stale).unlink(missing_ok=True)
        start = time.perf_counter()
        if not (args.keep and export.exists()):
            generate(export, count)
        size = export.stat().st_size
        print(
            f"export: {count:,} conversations, {size / 1e6:,.1f} MB "
            f"(generated in {time.perf_counter() - start:.1f} s)",
            file=sys.stderr,
        )
        results = {}
        for name in ("parse", "import", "export", "verify"):
            results[name] = run_phase(name, work)
            print(f"{name}: {results[name]}", file=sys.stderr)

    print(f"\n### ChatGPT import ({count:,} conversations, {size / 1e6:,.0f} MB)\n")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.1f}; "
        "one run; each phase in a fresh process\n"
    )
    print(
        "| phase | conversations | wall s | conversations/s | CPU s | conversations/CPU-s "
        "| MB/CPU-s | peak RSS (MB) | at the end: heap / mapped files (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, label in (
        ("parse", "parse only (`chatgpt.read`)"),
        ("import", f"import into SQLite ({results['import']['how']})"),
        ("export", "export from SQLite (`chatgpt.write`)"),
        ("verify", "verify (read both, compare)"),
    ):
        r = results[name]
        print(
            f"| {label} | {r['count']:,} | {r['seconds']:.1f} | {r['count'] / r['seconds']:,.0f} | "
            f"{r['cpu']:.1f} | {r['count'] / r['cpu']:,.0f} | {size / 1e6 / r['cpu']:,.1f} | "
            f"{r['peak_mb']:,.0f} | {r['anon_mb']:,.0f} / {r['file_mb']:,.0f} |"
        )
    notes = []
    if results["parse"]["skipped"] or results["import"]["skipped"]:
        notes.append(f"skipped: {results['parse']['skipped']} (parse)")
    notes.append(
        f"round trip: {results['verify']['count']:,} identical, "
        f"{results['verify']['differ']} different"
    )
    print("\n" + "; ".join(notes))


if __name__ == "__main__":
    main()
