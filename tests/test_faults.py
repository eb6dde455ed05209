"""Fault injection: writers killed with SIGKILL mid-save, PostgreSQL connections terminated.

What must hold after the faults, on every backend:

(a) the conversation still loads;
(b) every acknowledged message (its save returned) is in the loaded tree;
(c) a fresh writer can append and save within a bounded time (15 s);
(d) every node is reachable (loading succeeds, and every node has a path to the root).

Counts are deterministic (fixed seeds, a fixed number of kills); time enters only
as generous bounds. Run with ``-s`` to see the per-run summaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

import convtree
from convtree import (
    ConversationState,
    ConversationStorage,
    ConvtreeError,
    StorageError,
    StorageUnavailableError,
    open_storage,
)
from convtree.testing import append_and_save

from .conftest import _postgres_url, fresh_store_url
from .storage_media import admin_connect_args
from .test_storage_damage import store_url

WRITER_SCRIPT = Path(__file__).resolve().parent / "fault_writer.py"
STALL_SCRIPT = WRITER_SCRIPT.parent / "stall_writer.py"
REPO = WRITER_SCRIPT.parent.parent
CONVERSATION = "busy"

WRITERS = 4  # writer processes alive at once
KILLS = 12  # SIGKILLs at random points per backend (plus the final stop of the survivors)
KILL_DELAY = (0.05, 0.6)  # seconds from choosing a (running) victim to its SIGKILL
READY_TIMEOUT = 20.0  # a writer process must open its storage within this
NEXT_SAVE_TIMEOUT = 15.0  # the next writer must append and save within this
SEEDS = {"file": 1101, "sqlite": 1102, "postgres": 1103, "s3": 1104}


# ---------------------------------------------------------------- shared helpers


def _where(exc: BaseException) -> str:
    """The innermost convtree / dataknobs frames an exception passed through."""
    frames = [
        f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
        if "convtree" in frame.filename or "dataknobs" in frame.filename
    ]
    return " <- ".join(reversed(frames[-3:])) or "?"


def _texts(state: ConversationState) -> set[str]:
    return {str(n.content) for n in state.nodes() if n.has_message}


@dataclass
class _Verdict:
    """What (a)-(d) found after the faults."""

    load_error: str | None = None
    missing: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    stored_messages: int = 0
    next_save_error: str | None = None
    next_save_seconds: float | None = None


def _verify(url: str, acked: list[str], marker: str) -> _Verdict:
    """Check (a)-(d) on ``url`` in a fresh storage; never raises for a finding."""
    verdict = _Verdict()

    async def main() -> None:
        async with open_storage(url) as storage:
            try:
                state = await storage.load_conversation(CONVERSATION)
                assert state is not None, "load_conversation returned None"
            except Exception as exc:  # (a)
                verdict.load_error = f"{type(exc).__name__}: {exc}"
                return
            texts = _texts(state)
            verdict.stored_messages = len(texts)
            verdict.missing = sorted(t for t in acked if t not in texts)  # (b)
            root = state.root.node_id
            for node in state.nodes():  # (d)
                path = state.get_path(node.node_id)
                if not path or path[0].node_id != root:
                    verdict.unreachable.append(node.node_id)
            started = time.monotonic()
            try:  # (c)
                await asyncio.wait_for(
                    append_and_save(storage, CONVERSATION, marker), NEXT_SAVE_TIMEOUT
                )
                after = await storage.load_conversation(CONVERSATION)
                assert after is not None
                assert marker in _texts(after), "the next save returned but its text is missing"
            except Exception as exc:
                verdict.next_save_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            verdict.next_save_seconds = time.monotonic() - started

    asyncio.run(main())
    return verdict


def _describe(verdict: _Verdict) -> str:
    if verdict.load_error is not None:
        return f"load failed: {verdict.load_error}"
    took = verdict.next_save_seconds or 0.0
    return (
        f"{verdict.stored_messages} messages stored, {len(verdict.missing)} acknowledged missing, "
        f"next save {'failed: ' + verdict.next_save_error if verdict.next_save_error else 'ok'}"
        f" after {took:.2f} s"
    )


def _assert_verdict(verdict: _Verdict, summary: str) -> None:
    assert verdict.load_error is None, f"(a) the conversation does not load: {summary}"
    assert not verdict.missing, (
        f"(b) {len(verdict.missing)} acknowledged messages lost "
        f"(first: {verdict.missing[:10]}): {summary}"
    )
    assert not verdict.unreachable, f"(d) nodes not reachable from the root: {summary}"
    assert verdict.next_save_error is None, (
        f"(c) the next writer could not save within {NEXT_SAVE_TIMEOUT:g} s "
        f"({verdict.next_save_error}): {summary}"
    )


def _create(url: str) -> None:
    async def main() -> None:
        async with open_storage(url) as storage:
            await storage.save_conversation(ConversationState(CONVERSATION))

    asyncio.run(main())


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend in ("file", "sqlite"):
        return store_url(backend, request, tmp_path)
    return fresh_store_url(backend, request, tmp_path)


def _repair(url: str) -> tuple[int, int, str | None]:
    """``check --repair`` after the faults: (orphans, leftovers) it removed, and what a
    second check still finds (None: clean, and the conversation still loads)."""

    async def main() -> tuple[int, int, str | None]:
        async with open_storage(url) as storage:
            report = await storage.check(repair=True, grace=0)  # type: ignore[attr-defined]
            again = await storage.check(grace=0)  # type: ignore[attr-defined]
            await storage.load_conversation(CONVERSATION)
            problem = None if again.clean and report.repaired else "; ".join(again.lines())
            return len(report.orphans), len(report.leftovers), problem

    return asyncio.run(main())


# ---------------------------------------------------------------- writer processes


@dataclass
class _Writer:
    """One fault_writer.py process and the thread draining its stdout."""

    tag: str
    proc: subprocess.Popen[str]
    stderr: IO[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                continue  # a torn last line (cannot happen for small pipe writes)
            line = line[:-1]
            self.lines.append(line)
            if line == "ready":
                self.ready.set()

    def wait_ready(self, timeout: float) -> str | None:
        """None once the writer has opened its storage, else what went wrong."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            code = self.proc.poll()
            if code is not None:
                return f"{self.tag} exited with {code} before it was ready"
            if time.monotonic() > deadline:
                return f"{self.tag} not ready after {timeout:g} s"
        return None

    def kill(self) -> None:
        """SIGKILL, reap, and read its stdout to the end."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        if self.reader is not None:
            self.reader.join(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.stderr.close()

    def acks(self) -> list[str]:
        return [line[4:] for line in self.lines if line.startswith("ack ")]

    def errors(self) -> list[str]:
        return [line for line in self.lines if line.startswith(("err ", "raw "))]


def _spawn(url: str, tag: str, logs: Path) -> _Writer:
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONUNBUFFERED="1",
    )
    stderr = (logs / f"{tag}.stderr").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(WRITER_SCRIPT), url, tag, "120"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
        text=True,
    )
    writer = _Writer(tag, proc, stderr)
    writer.reader = threading.Thread(target=writer.drain, name=f"drain-{tag}", daemon=True)
    writer.reader.start()
    return writer


# ---------------------------------------------------------------- 1. kill -9 writers


@pytest.mark.parametrize("backend", ["file", "sqlite", "postgres", "s3"])
def test_kill_9_writers(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = _url(backend, tmp_path, request)
    _create(url)
    logs = tmp_path / "logs"
    logs.mkdir()
    rng = random.Random(SEEDS[backend])
    generation = 0

    def spawn() -> _Writer:
        nonlocal generation
        generation += 1
        return _spawn(url, f"w{generation}", logs)

    started = time.monotonic()
    alive = [spawn() for _ in range(WRITERS)]
    dead: list[_Writer] = []
    kills = 0
    not_ready: list[str] = []
    try:
        for writer in alive:
            problem = writer.wait_ready(READY_TIMEOUT)
            if problem:
                not_ready.append(problem)
        for _ in range(KILLS if not not_ready else 0):
            # Two draws per kill whatever happens, so the sequence of delays is fixed.
            pick = rng.random()
            delay = rng.uniform(*KILL_DELAY)
            # The victim is one of the writers already in their loop (a writer still
            # starting up is not worth killing); if none is, the oldest one once it is.
            ready = [w for w in alive if w.ready.is_set()]
            if not ready:
                oldest = alive[0]
                problem = oldest.wait_ready(READY_TIMEOUT)
                if problem:
                    not_ready.append(problem)
                    break
                ready = [oldest]
            victim = ready[int(pick * len(ready))]
            time.sleep(delay)
            crashed = [w for w in alive if w.proc.poll() is not None]
            if crashed:
                not_ready.extend(f"{w.tag} exited with {w.proc.returncode}" for w in crashed)
                break
            victim.kill()
            kills += 1
            alive.remove(victim)
            dead.append(victim)
            alive.append(spawn())  # alive stays oldest first
        else:
            # Then stop the survivors the same way (a replacement may still be starting).
            time.sleep(rng.uniform(*KILL_DELAY))
    finally:
        for writer in alive:
            writer.kill()
        dead.extend(alive)
    fault_seconds = time.monotonic() - started

    acked = [text for writer in dead for text in writer.acks()]
    errors = Counter(line for writer in dead for line in writer.errors())
    marker = f"after-{backend}-kills"
    verdict = _verify(url, acked, marker)
    orphans, leftovers, unrepaired = _repair(url) if verdict.load_error is None else (0, 0, None)
    summary = (
        f"[{backend}] {kills} kills at random points + {WRITERS} survivors killed, "
        f"{len(dead)} writer processes, {len(acked)} acknowledged messages, "
        f"writer errors {dict(errors) or 'none'}, fault phase {fault_seconds:.1f} s, "
        f"{_describe(verdict)}; check --repair removed {orphans} orphan segments and "
        f"{leftovers} temporary files" + (f", not ready: {not_ready}" if not_ready else "")
    )
    print(f"{summary} [convtree from {Path(convtree.__file__).parent}]")
    if not_ready:
        stderr = "".join(
            f"\n--- {writer.tag} stderr:\n{(logs / f'{writer.tag}.stderr').read_text()[-2000:]}"
            for writer in dead
            if writer.proc.returncode not in (None, -signal.SIGKILL)
        )
        pytest.fail(f"writers that never got going: {summary}{stderr}")
    assert acked, f"no writer acknowledged anything; the test proves nothing: {summary}"
    _assert_verdict(verdict, summary)
    assert unrepaired is None, f"check --repair left problems: {unrepaired}; {summary}"


# ---------------------------------------------------------------- 2. pg_terminate_backend

PG_WRITERS = 6
PG_SECONDS = 4.0

# target: (query run from the admin connection, seconds between two runs). Both hit every
# client of the test database: with $CONVTREE_TEST_POSTGRES_URL, use a database of its own.
TERMINATE: dict[str, tuple[str, float]] = {
    # Every connection convtree holds: its data pool and its advisory-lock pool.
    "all": (
        """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND datname = current_database()
  AND backend_type = 'client backend'
""",
        0.3,
    ),
    # Only the sessions holding what serializes saves: an advisory lock (held beside the
    # writes, on a connection of its own), or a row lock on the conversations table ($1)
    # inside a save's transaction. If the lock's session dies while its writer goes on
    # writing on another connection, two saves can interleave.
    "lock-holders": (
        """
SELECT pg_terminate_backend(pid) FROM pg_locks
WHERE granted AND pid <> pg_backend_pid()
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (locktype = 'advisory'
       OR (locktype = 'relation' AND relation = to_regclass($1) AND mode = 'RowExclusiveLock'))
GROUP BY pid
""",
        0.1,
    ),
}


@pytest.mark.parametrize("target", list(TERMINATE))
def test_pg_terminate_backend_during_saves(postgres_server: str, target: str) -> None:
    import asyncpg

    table = f"t{uuid.uuid4().hex[:12]}"
    url = _postgres_url(postgres_server, table)
    _create(url)
    acked: list[str] = []
    convtree_errors: Counter[str] = Counter()
    raw: Counter[str] = Counter()  # non-convtree exceptions that escaped a load or a save
    samples: dict[str, str] = {}  # the first message of each
    terminated: list[int] = []

    async def writer(storage: ConversationStorage, tag: str, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            text = f"{tag}-{i}"
            i += 1
            try:
                await append_and_save(storage, CONVERSATION, text)
                acked.append(text)
                # Every other path meets the broken connections too.
                await storage.list_summaries(limit=3)
                await storage.count_conversations({"user_id": tag})
                await storage.exists(CONVERSATION)
                scratch = ConversationState(f"{tag}-scratch-{i}", metadata={"user_id": tag})
                await storage.save_conversation(scratch)
                await storage.delete_conversation(scratch.conversation_id)
                continue
            except ConvtreeError as exc:
                if isinstance(exc, StorageUnavailableError) and "safe" not in str(exc):
                    raw["StorageUnavailableError without 'safe'"] += 1
                    samples.setdefault("StorageUnavailableError without 'safe'", str(exc))
                convtree_errors[type(exc).__name__] += 1
                await asyncio.sleep(0.01)
                continue
            except Exception as exc:
                name = f"{type(exc).__module__}.{type(exc).__name__}"
                raw[name] += 1
                samples.setdefault(name, f"{str(exc)[:160]} (at {_where(exc)})")
                await asyncio.sleep(0.01)
                continue

    async def terminator(stop: asyncio.Event) -> None:
        admin = await asyncpg.connect(**admin_connect_args(url))
        try:
            query, every = TERMINATE[target]
            args = [f"public.{table}"] if "$1" in query else []
            while not stop.is_set():
                rows = await admin.fetch(query, *args)
                terminated.append(sum(1 for row in rows if row[0]))
                with contextlib.suppress(asyncio.TimeoutError):  # TimeoutError from 3.11
                    await asyncio.wait_for(stop.wait(), every)
        finally:
            await admin.close()

    async def main() -> None:
        storages = [await open_storage(url) for _ in range(PG_WRITERS)]
        stop = asyncio.Event()
        try:
            tasks = [
                asyncio.create_task(writer(storage, f"pg{k}", stop))
                for k, storage in enumerate(storages)
            ]
            killer = asyncio.create_task(terminator(stop))
            await asyncio.sleep(PG_SECONDS)
            stop.set()
            await asyncio.gather(*tasks, killer)
        finally:
            for storage in storages:
                try:
                    await storage.close()
                except Exception as exc:
                    raw[f"close: {type(exc).__module__}.{type(exc).__name__}"] += 1

    started = time.monotonic()
    asyncio.run(main())
    fault_seconds = time.monotonic() - started
    verdict = _verify(url, acked, "after-terminations")
    summary = (
        f"[postgres terminate {target}] {len(terminated)} rounds of pg_terminate_backend, "
        f"{sum(terminated)} connections terminated, {len(acked)} acknowledged messages, "
        f"convtree errors {dict(convtree_errors) or 'none'}, raw exceptions {dict(raw) or 'none'}, "
        f"fault phase {fault_seconds:.1f} s, {_describe(verdict)}"
    )
    print(f"{summary} [convtree from {Path(convtree.__file__).parent}]")
    for name, message in samples.items():
        print(f"  {name}: {message}")
    assert sum(terminated), f"no connection was terminated; the test proves nothing: {summary}"
    assert acked, f"no writer acknowledged anything; the test proves nothing: {summary}"
    _assert_verdict(verdict, summary)
    # Every failure a load or save reports must be a convtree error (StorageError), never a
    # raw driver exception. Expected to fail until the storage refactor wraps them; to
    # disable while it is in progress, comment out this one assertion.
    assert not raw, f"non-convtree exceptions escaped: {dict(raw)}; {summary}"


# ---------------------------------------------------------------- 3. every path, deterministically


class _BrokenPool:
    """An asyncpg pool whose connection is gone: every call raises ``error``, the first
    ``failures`` calls only (then the real pool answers), or all of them."""

    def __init__(self, real: object, error: Exception, failures: int = 10**9) -> None:
        self.real, self.error, self.failures = real, error, failures

    def _fail(self) -> bool:
        self.failures -= 1
        return self.failures >= 0

    def __getattr__(self, name: str) -> object:
        if name not in ("fetch", "fetchval", "execute"):
            raise AttributeError(name)

        async def call(*args: object, **kwargs: object) -> object:
            if self._fail():
                raise self.error
            return await getattr(self.real, name)(*args, **kwargs)

        return call

    def acquire(self) -> object:
        pool = self

        class _Acquire:
            async def __aenter__(self) -> object:
                if pool._fail():
                    raise pool.error
                self.cm = pool.real.acquire()  # type: ignore[attr-defined]
                return await self.cm.__aenter__()

            async def __aexit__(self, *exc: object) -> None:
                await self.cm.__aexit__(*exc)

        return _Acquire()


def test_every_postgres_path_turns_a_lost_connection_into_unavailable(postgres_server: str) -> None:
    """Reads, listings, counts, deletes, saves and checks: a broken connection is a
    StorageUnavailableError that says trying again is safe, and a single break is retried."""
    from asyncpg.exceptions import ConnectionDoesNotExistError, InternalClientError

    url = _postgres_url(postgres_server, f"t{uuid.uuid4().hex[:12]}")
    errors = [
        ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        InternalClientError("cannot switch to state 12; another operation is in progress"),
    ]

    async def main() -> None:
        async with open_storage(url) as storage:
            records = storage.records  # type: ignore[attr-defined]
            real = records.db._pool
            state = ConversationState("c", metadata={"user_id": "u"})
            state.add_message("user", "hi")
            await storage.save_conversation(state)

            def operations() -> dict[str, Callable[[], Awaitable[object]]]:
                def save() -> Awaitable[None]:
                    state.add_message("user", "more")
                    return storage.save_conversation(state)

                return {
                    "exists": lambda: storage.exists("c"),
                    "load": lambda: storage.load_conversation("c"),
                    "list": lambda: storage.list_summaries({"user_id": "u"}),
                    "count": lambda: storage.count_conversations(),
                    "damaged": lambda: storage.damaged_conversations(),  # type: ignore[attr-defined]
                    "check": lambda: storage.check(grace=0),  # type: ignore[attr-defined]
                    "save": save,
                    "delete": lambda: storage.delete_conversation("gone"),
                }

            try:
                for error in errors:
                    for name, call in operations().items():
                        records.db._pool = _BrokenPool(real, error)
                        with pytest.raises(StorageUnavailableError, match="safe") as info:
                            await call()
                        assert type(error).__name__ in str(info.value), name
                    for call in operations().values():
                        records.db._pool = _BrokenPool(real, error, failures=1)
                        await call()  # retried: succeeds
            finally:
                records.db._pool = real
            loaded = await storage.load_conversation("c")
            assert loaded == state

    asyncio.run(main())


# ---------------------------------------------------------------- 4. SIGSTOP while holding the lock

STALL_WAIT = 1.0  # the timeout the other writers are opened with (seconds)


def _wait_line(proc: subprocess.Popen[str], timeout: float) -> str:
    got: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return got[0].strip() if got else ""


def _stopped(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state in ("T", "t"):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
@pytest.mark.parametrize("backend", ["file", "sqlite", "postgres"])
def test_a_writer_stopped_while_holding_the_lock_blocks_others_only_until_the_timeout(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    base = _url(backend, tmp_path, request)
    param = {"file": "lock_timeout", "sqlite": "timeout", "postgres": "lock_timeout"}[backend]
    url = f"{base}{'&' if '?' in base else '?'}{param}={STALL_WAIT:g}"
    _create(url)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(STALL_SCRIPT), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
        text=True,
    )
    outcome: dict[str, object] = {}
    try:
        line = _wait_line(proc, READY_TIMEOUT)
        assert line == "stalled", f"the stalled writer did not get there: {line!r} {proc.poll()}"
        assert _stopped(proc.pid, 10), "the writer did not stop"

        async def blocked() -> None:
            async with open_storage(url) as storage:
                state = await storage.load_conversation(CONVERSATION)  # readers are not blocked
                assert state is not None
                outcome["listed"] = len(await storage.list_summaries())
                state.add_message("user", "from the blocked writer")
                started = time.monotonic()
                try:
                    await asyncio.wait_for(storage.save_conversation(state), 60)
                except StorageError as exc:
                    outcome["error"] = exc
                outcome["seconds"] = time.monotonic() - started

        asyncio.run(blocked())
    finally:
        proc.kill()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    error, seconds = outcome.get("error"), outcome.get("seconds")
    print(f"[{backend}] blocked save gave up after {seconds:.2f} s: {error}")
    assert outcome["listed"] == 1
    assert isinstance(error, StorageError)
    assert not isinstance(error, StorageUnavailableError)
    assert re.search(r"timed out|lock", str(error)), error
    assert isinstance(seconds, float)
    assert STALL_WAIT * 0.9 <= seconds < STALL_WAIT + 10

    # The stalled writer is gone (SIGKILL): the next save goes through at once.
    async def after() -> ConversationState | None:
        async with open_storage(url) as storage:
            await asyncio.wait_for(
                append_and_save(storage, CONVERSATION, "after the stall"), NEXT_SAVE_TIMEOUT
            )
            return await storage.load_conversation(CONVERSATION)

    stored = asyncio.run(after())
    assert stored is not None
    assert _texts(stored) == {"after the stall"}  # the stalled save never committed
