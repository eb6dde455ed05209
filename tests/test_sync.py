"""The blocking facade: the async API's exact signatures, and a clear error once closed."""

from __future__ import annotations

import gc
import inspect
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from convtree import ConversationState, ConversationStorage, StorageError
from convtree.sync import SyncStorage
from convtree.sync import open_storage as open_sync

ROOT = Path(__file__).resolve().parents[1]


def _async_methods() -> list[str]:
    return [
        name
        for name, member in inspect.getmembers(ConversationStorage)
        if inspect.iscoroutinefunction(member) and not name.startswith("_") and name != "close"
    ]


@pytest.mark.parametrize("name", _async_methods())
def test_every_async_method_has_a_blocking_twin_with_its_signature(name: str) -> None:
    blocking = getattr(SyncStorage, name)
    assert not inspect.iscoroutinefunction(blocking)
    assert inspect.signature(blocking) == inspect.signature(getattr(ConversationStorage, name))


def test_a_type_checker_sees_the_async_parameters(tmp_path: Path) -> None:
    """``list_summaries(orderby=...)`` is a mypy error, not a surprise at run time."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "from convtree import ConversationState\n"
        "from convtree.sync import open_storage\n"
        "\n"
        'with open_storage("memory://") as storage:\n'
        '    rows = storage.list_summaries({"user_id": "a"}, order_by="-created_at", limit=5)\n'
        "    first: str = rows[0].conversation_id\n"
        "    count: int = storage.count_conversations(created_after=None)\n"
        "    loaded: ConversationState | None = storage.load_conversation(first)\n"
        '    storage.list_summaries(orderby="created_at")\n'  # line 9
        '    storage.save_conversation("not a state")\n'  # line 10
        '    found: str = storage.exists("x")\n'  # line 11
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            "--no-error-summary",
            "--hide-error-context",
            str(snippet),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(ROOT / "src")},
        cwd=tmp_path,
        check=False,
    )
    errors = [line for line in done.stdout.splitlines() if line.startswith("snippet.py:")]
    assert [line.split(":")[1] for line in errors] == ["9", "10", "11"], done.stdout + done.stderr
    assert 'Unexpected keyword argument "orderby"' in errors[0]
    assert 'expected "ConversationState"' in errors[1]
    assert '(expression has type "bool"' in errors[2]


def test_use_after_close_says_the_store_is_closed() -> None:
    storage = open_sync("memory://")
    state = ConversationState("c")
    state.add_message("user", "hi")
    storage.save_conversation(state)
    storage.close()
    calls: list[Callable[[], Any]] = [
        lambda: storage.load_conversation("c"),
        lambda: storage.save_conversation(state),
        storage.list_summaries,
        lambda: storage.exists("c"),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for call in calls:
            with pytest.raises(StorageError, match=r"memory://.* is closed"):
                call()
        gc.collect()  # a coroutine created and never awaited would warn here
    assert [str(w.message) for w in caught] == []
    storage.close()  # closing again does nothing
    assert "closed" in repr(storage)


def test_the_facade_works_inside_a_running_event_loop() -> None:
    """Jupyter runs a loop in the main thread; the facade's loop is its own."""
    import asyncio

    async def main() -> list[str]:
        with open_sync("memory://") as storage:
            storage.save_conversation(ConversationState("x"))
            return [s.conversation_id for s in storage.list_summaries()]

    assert asyncio.run(main()) == ["x"]


def test_check_and_damaged_conversations_block_too(tmp_path: Path) -> None:
    with open_sync(f"file://{tmp_path}/store") as storage:
        state = ConversationState("c")
        state.add_message("user", "hi")
        storage.save_conversation(state)
        (tmp_path / "store" / ".tmp-left-over").write_text("x")
        assert storage.damaged_conversations() == []
        report = storage.check()
        assert report.leftovers
        assert not storage.check(repair=True).damaged
