"""The ``convtree`` command: demo saves into a store, show and schema print."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from convtree import ConversationState, open_storage
from convtree.cli import build_demo, main


def _stored(url: str) -> list[str]:
    async def ids() -> list[str]:
        async with open_storage(url) as storage:
            return [s.conversation_id for s in await storage.list_summaries()]

    return asyncio.run(ids())


def test_demo_saves_into_the_default_store_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    monkeypatch.setenv("CONVTREE_STORE", url)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert f"saved conversation 'demo' in {url}" in out
    assert "[regenerated]" in out
    assert "11 nodes, 3 branches" in out
    assert _stored(url) == ["demo"]


def test_demo_again_replaces_only_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"file://{tmp_path}/files"

    async def keep() -> None:
        async with open_storage(url) as storage:
            other = ConversationState("mine", metadata={"user_id": "alice"})
            other.add_message("user", "keep me")
            await storage.save_conversation(other)

    asyncio.run(keep())
    assert main(["demo", "--store", url]) == 0
    capsys.readouterr()
    assert main(["demo", "--store", url, "--json"]) == 0
    printed = ConversationState.from_json(capsys.readouterr().out)

    async def load(cid: str) -> ConversationState | None:
        async with open_storage(url) as storage:
            return await storage.load_conversation(cid)

    assert printed == asyncio.run(load("demo"))  # the stored demo, replaced by the second run
    assert [m.role for m in printed.get_current_messages()] == ["system", "user", "assistant"]
    mine = asyncio.run(load("mine"))
    assert mine is not None
    assert mine.get_current_messages()[0].content == "keep me"
    assert sorted(_stored(url)) == ["demo", "mine"]


def test_demo_with_a_bad_store_is_a_clear_error_with_the_password_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--store", "bogus://user:secret@host/x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("convtree: error: unknown storage URL scheme 'bogus'")
    assert "secret" not in err


def test_show_reads_a_file_and_standard_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "demo.json"
    path.write_text(build_demo().to_json(), "utf-8")
    assert main(["show", str(path)]) == 0
    from_file = capsys.readouterr().out
    assert "edited-question" in from_file
    monkeypatch.setattr(sys, "stdin", io.StringIO(path.read_text("utf-8")))
    assert main(["show", "-"]) == 0
    assert capsys.readouterr().out == from_file


def test_show_of_a_missing_or_broken_document_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", str(tmp_path / "nope.json")]) == 1
    assert "nope.json" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"nodes": [', "utf-8")
    assert main(["show", str(broken)]) == 1
    assert capsys.readouterr().err.startswith("convtree: error:")


def test_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "object"


def test_the_installed_command_runs_the_demo(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "convtree.cli", "demo", "--store", f"sqlite:///{tmp_path}/d.db"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "saved conversation 'demo'" in done.stdout


def test_show_and_diff_a_stored_conversation_in_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    assert main(["demo", "--store", url]) == 0
    capsys.readouterr()
    assert main(["show", "demo", "--store", url]) == 0
    assert "[edited-question]" in capsys.readouterr().out
    assert main(["show", "demo", "--store", url, "--format", "json"]) == 0
    assert ConversationState.from_json(capsys.readouterr().out) == build_demo_loaded(url)
    assert main(["show", "demo", "--store", url, "--format", "mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart")
    assert main(["show", "demo", "--store", url, "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>")
    assert 'class="convtree"' in page
    assert main(["diff", "demo", "first-try", "regenerated", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "common ancestor: user" in out
    assert "+A balanced tree whose wide nodes suit disks" in out
    assert (
        main(["diff", "demo", "first-try", "regenerated", "--store", url, "--format", "html"]) == 0
    )
    assert "<table" in capsys.readouterr().out


def build_demo_loaded(url: str) -> ConversationState | None:
    async def load() -> ConversationState | None:
        async with open_storage(url) as storage:
            return await storage.load_conversation("demo")

    return asyncio.run(load())


def test_show_or_diff_of_an_unknown_conversation_or_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"memory://cli-{tmp_path.name}"
    assert main(["show", "nope", "--store", url]) == 1
    assert "no conversation 'nope' in memory://" in capsys.readouterr().err
    file_url = f"file://{tmp_path}/files"
    assert main(["demo", "--store", file_url]) == 0
    capsys.readouterr()
    assert main(["diff", "demo", "first-try", "zzz", "--store", file_url]) == 1
    assert "no node with id, id prefix or branch name 'zzz'" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_show_on_a_terminal_draws_the_tree_with_rich(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "demo.json"
    path.write_text(build_demo().to_json(), "utf-8")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["show", str(path)]) == 0
    out = terminal.getvalue()
    assert "edited-question" in out
    assert "2 of 2" in out  # rich_tree's "k of n", not render_tree's ├─


def _damaged_file_store(root: Path) -> str:
    """A file store with a readable conversation, one whose head is truncated, a segment
    no head lists and a temporary file a crashed write left."""
    url = f"file://{root}"

    async def fill() -> None:
        async with open_storage(url) as storage:
            for cid in ("good", "bad"):
                state = ConversationState(cid)
                state.add_message("user", f"hello from {cid}")
                await storage.save_conversation(state)
            orphan = {"kind": "segment", "payload": '{"nodes": [], "edges": []}'}
            await storage.records.write("good~1-0badc0de", orphan, "create")  # type: ignore[attr-defined]

    asyncio.run(fill())
    head = root / "bad.json"
    head.write_bytes(head.read_bytes()[:50])
    (root / ".tmp-0123").write_text("half a record")
    return url


def test_check_reports_then_repairs_a_damaged_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    url = _damaged_file_store(root)
    assert main(["check", "--store", url, "--grace", "0"]) == 1
    out = capsys.readouterr().out
    assert "damaged: conversation 'bad': record 'bad': file bad.json: truncated JSON" in out
    assert "orphan: segment 'good~1-0badc0de'" in out
    assert "leftover: .tmp-0123" in out
    assert "run again with --repair" in out
    assert (root / "bad.json").exists()  # checking changes nothing

    assert main(["check", "--store", url, "--repair", "--grace", "0"]) == 0
    out = capsys.readouterr().out
    assert "all repaired" in out
    quarantined = sorted(p.name.split(".json.")[0] for p in (root / "quarantine").iterdir())
    assert quarantined[0] == "bad"  # the head, and the segment it listed, moved aside
    assert [name[:8] for name in quarantined[1:]] == ["bad%7E1-"], quarantined
    assert not (root / "bad.json").exists()
    assert not (root / ".tmp-0123").exists()

    assert main(["check", "--store", url]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert main(["show", "good", "--store", url]) == 0
    assert "hello from good" in capsys.readouterr().out


def test_check_uses_the_default_store_and_exits_1_on_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _damaged_file_store(tmp_path / "default")
    monkeypatch.setenv("CONVTREE_STORE", url)
    done = subprocess.run(
        [sys.executable, "-m", "convtree.cli", "check", "--grace", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "damaged: conversation 'bad'" in done.stdout
    assert main(["check", "--store", f"memory://{tmp_path.name}"]) == 0
