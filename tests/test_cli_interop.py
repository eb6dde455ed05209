"""``convtree import`` / ``export`` and the format registry: detection, reports, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from convtree import ConversationState, FormatError, open_storage
from convtree.cli import main
from convtree.interop import FORMAT_NAMES, FORMATS, Outcome, detect, put
from convtree.interop._openai_file import conversation_id_for
from convtree.interop._source import iter_objects

REPO = Path(__file__).resolve().parent.parent
INTERCHANGE = next(
    (
        p
        for p in (
            Path(os.environ.get("CONVTREE_INTERCHANGE", "/nonexistent")),
            REPO.parent / "shared" / "fixtures" / "interchange",
            Path("/work/shared/fixtures/interchange"),
        )
        if p.is_dir()
    ),
    None,
)


# ----------------------------------------------------------------- fixtures


def _chatgpt_message(node_id: str, role: str, text: str, t: float) -> dict[str, Any]:
    return {
        "id": node_id,
        "author": {"role": role, "name": None, "metadata": {}},
        "create_time": t,
        "content": {"content_type": "text", "parts": [text]},
        "status": "finished_successfully",
        "metadata": {},
    }


def chatgpt_conversation(cid: str = "cg-1", answer: str = "A balanced tree.") -> dict[str, Any]:
    """root - u1 - {a1, a2}; the cursor on a2 (a regenerated reply)."""
    return {
        "id": cid,
        "title": "Trees",
        "create_time": 1700000000.0,
        "update_time": 1700000100.0,
        "current_node": "a2",
        "mapping": {
            "root": {"id": "root", "message": None, "parent": None, "children": ["u1"]},
            "u1": {
                "id": "u1",
                "message": _chatgpt_message("u1", "user", "What is a B-tree?", 1700000001.0),
                "parent": "root",
                "children": ["a1", "a2"],
            },
            "a1": {
                "id": "a1",
                "message": _chatgpt_message("a1", "assistant", "A tree.", 1700000002.0),
                "parent": "u1",
                "children": [],
            },
            "a2": {
                "id": "a2",
                "message": _chatgpt_message("a2", "assistant", answer, 1700000003.0),
                "parent": "u1",
                "children": [],
            },
        },
    }


def openwebui_chat() -> dict[str, Any]:
    messages = {
        "m1": {"id": "m1", "parentId": None, "childrenIds": ["m2", "m3"], "role": "user"},
        "m2": {"id": "m2", "parentId": "m1", "childrenIds": [], "role": "assistant"},
        "m3": {"id": "m3", "parentId": "m1", "childrenIds": [], "role": "assistant"},
    }
    for i, (key, text) in enumerate((("m1", "Hello"), ("m2", "Hi!"), ("m3", "Hey!"))):
        messages[key].update(content=text, timestamp=1700000001 + i)
    return {
        "id": "ow-1",
        "title": "Hi",
        "chat": {"history": {"currentId": "m2", "messages": messages}},
    }


def librechat_export() -> dict[str, Any]:
    return {
        "conversationId": "lc-1",
        "title": "Chat",
        "endpoint": "openAI",
        "messages": [
            {
                "messageId": "x1",
                "parentMessageId": "00000000-0000-0000-0000-000000000000",
                "sender": "User",
                "isCreatedByUser": True,
                "text": "Hi",
                "createdAt": "2024-01-01T00:00:00.000Z",
            },
            {
                "messageId": "x2",
                "parentMessageId": "x1",
                "sender": "GPT-4",
                "isCreatedByUser": False,
                "text": "Hello",
                "createdAt": "2024-01-01T00:00:01.000Z",
            },
        ],
    }


def openai_messages() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a B-tree?"},
        {"role": "assistant", "content": "A balanced search tree."},
    ]


def convtree_document() -> dict[str, Any]:
    state = ConversationState("ct-1", metadata={"title": "Native"})
    state.add_message("user", "question", node_id="q")
    state.add_message("assistant", "one", node_id="a1")
    state.add_alternative("assistant", "two", node_id="a2")
    return state.to_dict()


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), "utf-8")
    return path


def stored(url: str) -> dict[str, ConversationState]:
    async def read() -> dict[str, ConversationState]:
        async with open_storage(url) as storage:
            out = {}
            for summary in await storage.list_summaries(limit=None):
                state = await storage.load_conversation(summary.conversation_id)
                assert state is not None
                out[summary.conversation_id] = state
            return out

    return asyncio.run(read())


def shape(state: ConversationState) -> tuple[Any, ...]:
    """The tree: ids, parent links in sibling order, cursor, and each message's role and text."""
    doc = state.to_dict()
    return (
        state.conversation_id,
        [n["node_id"] for n in doc["nodes"]],
        doc["edges"],
        doc["current_node_id"],
        [(n.message.role, n.message.text) for n in state.nodes() if n.message is not None],
    )


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


# ------------------------------------------------------------------ detection


def test_detect_names_every_format_from_the_first_object(tmp_path: Path) -> None:
    files = {
        "chatgpt": write_json(tmp_path / "c.json", [chatgpt_conversation()]),
        "openwebui": write_json(tmp_path / "o.json", [openwebui_chat()]),
        "librechat": write_json(tmp_path / "l.json", librechat_export()),
        "openai": write_json(tmp_path / "m.json", openai_messages()),
        "convtree": write_json(tmp_path / "d.json", convtree_document()),
    }
    assert sorted(files) == sorted(FORMAT_NAMES)
    for name, path in files.items():
        assert detect(path) == name
        # No other format claims it: detection does not depend on the order it asks in.
        _, _, first = next(iter_objects(path))
        assert [n for n in FORMAT_NAMES if FORMATS[n].looks_like(first)] == [name]
    # Only the first object is read: what follows it may be anything, even broken JSON.
    (tmp_path / "partial.json").write_text(json.dumps([chatgpt_conversation()])[:-1] + ", {")
    assert detect(tmp_path / "partial.json") == "chatgpt"


def test_detect_refuses_what_it_cannot_tell(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="the first object has the keys a, b") as info:
        detect(write_json(tmp_path / "x.json", [{"b": 1, "a": 2}]))
    assert info.value.path == f"{tmp_path / 'x.json'}[0]"
    with pytest.raises(FormatError, match="no conversation in it"):
        detect(write_json(tmp_path / "empty.json", []))
    with pytest.raises(KeyError, match="unknown format 'nope'"):
        FORMATS["nope"]


# ------------------------------------------------------------------ import


def test_import_every_format_keeps_ids_and_a_second_import_changes_nothing(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [
        write_json(tmp_path / "chatgpt.json", [chatgpt_conversation()]),
        write_json(tmp_path / "webui.json", [openwebui_chat()]),
        write_json(tmp_path / "libre.json", librechat_export()),
        write_json(tmp_path / "messages.json", openai_messages()),
        write_json(tmp_path / "doc.json", convtree_document()),
    ]
    args = ["import", *map(str, files), "--store", store]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("5 imported, 0 replaced, 0 unchanged, 0 skipped (into sqlite:")
    for name, fmt in (
        ("chatgpt.json", "chatgpt"),
        ("webui.json", "openwebui"),
        ("libre.json", "librechat"),
        ("messages.json", "openai"),
        ("doc.json", "convtree"),
    ):
        assert f"  {tmp_path / name}: {fmt}, 1 conversation(s)" in out
    states = stored(store)
    openai_id = conversation_id_for(tmp_path / "messages.json")
    assert sorted(states) == sorted(["cg-1", "ow-1", "lc-1", "ct-1", openai_id])
    assert [n.node_id for n in states["cg-1"].nodes()] == ["root", "u1", "a1", "a2"]
    assert states["cg-1"].current_node_id == "a2"
    assert states["cg-1"].metadata["title"] == "Trees"
    assert [n.node_id for n in states["ow-1"].children("m1")] == ["m2", "m3"]
    messages = states[openai_id]
    assert [n.node_id for n in messages.nodes()] == ["root", "m1", "m2", "m3"]
    assert messages.metadata["title"] == "messages"
    assert [m.content for m in messages.get_current_messages()] == [
        m["content"] for m in openai_messages()
    ]

    assert main(args) == 0
    assert capsys.readouterr().out.startswith("0 imported, 0 replaced, 5 unchanged, 0 skipped")
    assert {cid: shape(s) for cid, s in stored(store).items()} == {
        cid: shape(s) for cid, s in states.items()
    }


def test_a_changed_conversation_is_skipped_then_replaced_with_replace(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path / "export.json", [chatgpt_conversation()])
    assert main(["import", str(path), "--store", store]) == 0
    capsys.readouterr()
    write_json(path, [chatgpt_conversation(answer="A B-tree, edited in ChatGPT.")])

    assert main(["import", str(path), "--store", store]) == 1
    out = capsys.readouterr().out
    assert "0 imported, 0 replaced, 0 unchanged, 1 skipped" in out
    assert "skipped: 'cg-1': already stored, skipped (it differs: --replace updates it)" in out
    assert stored(store)["cg-1"].get_node("a2").message.content == "A balanced tree."

    assert main(["import", str(path), "--store", store, "--replace"]) == 0
    assert "0 imported, 1 replaced, 0 unchanged, 0 skipped" in capsys.readouterr().out
    assert stored(store)["cg-1"].get_node("a2").message.content == "A B-tree, edited in ChatGPT."


def test_a_broken_conversation_is_reported_and_the_others_import(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = chatgpt_conversation("cg-broken")
    broken["mapping"]["a1"]["parent"] = "ghost"
    path = write_json(tmp_path / "export.json", [chatgpt_conversation("cg-ok"), broken])
    assert main(["import", str(path), "--store", store]) == 1
    out = capsys.readouterr().out
    assert "1 imported, 0 replaced, 0 unchanged, 1 skipped" in out
    line = next(x for x in out.splitlines() if x.startswith("skipped: conversation 1 'cg-broken'"))
    assert "export.json[1].mapping" in line
    assert sorted(stored(store)) == ["cg-ok"]


def test_a_file_that_is_not_json_fails_alone(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_json(tmp_path / "good.json", [chatgpt_conversation()])
    bad = tmp_path / "bad.json"
    bad.write_text("this is not JSON", "utf-8")
    assert main(["import", str(bad), str(good), "--store", store]) == 1
    out = capsys.readouterr().out
    assert "1 imported" in out
    assert f"failed: {bad}: {bad} is not a JSON object or array" in out
    assert sorted(stored(store)) == ["cg-1"]


def test_dry_run_writes_nothing_and_says_what_it_would_do(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path / "export.json", [chatgpt_conversation(), openwebui_chat()])
    assert main(["import", str(path), "--format", "chatgpt", "--store", store, "--dry-run"]) == 1
    out = capsys.readouterr().out
    # --format chatgpt reads the Open WebUI chat as ChatGPT: it is skipped, not guessed.
    assert out.startswith("dry run: 1 would be imported, 0 would be replaced")
    assert "skipped: conversation 1 'ow-1'" in out
    assert stored(store) == {}


def test_progress_is_drawn_on_stderr_only_when_asked_or_on_a_terminal(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path / "export.json", [chatgpt_conversation()])
    assert main(["import", str(path), "--store", store]) == 0
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    assert main(["import", str(path), "--store", store, "--progress"]) == 0
    err = capsys.readouterr().err
    assert "export.json (chatgpt)" in err
    assert "1/1" in err


def test_put_reports_each_outcome(store: str) -> None:
    state = ConversationState.from_dict(convtree_document())
    other = ConversationState.from_dict(convtree_document())
    other.add_message("user", "more")

    async def run() -> list[Outcome]:
        async with open_storage(store) as storage:
            return [
                await put(storage, other, dry_run=True),
                await put(storage, state),
                await put(storage, ConversationState.from_dict(state.to_dict())),
                await put(storage, other),
                await put(storage, other, replace=True, dry_run=True),
                await put(storage, other, replace=True),
            ]

    assert asyncio.run(run()) == [
        Outcome.ADDED,
        Outcome.ADDED,
        Outcome.UNCHANGED,
        Outcome.KEPT,
        Outcome.REPLACED,
        Outcome.REPLACED,
    ]
    assert shape(stored(store)["ct-1"]) == shape(other)


# ------------------------------------------------------------------ export


@pytest.mark.parametrize("fmt", ["chatgpt", "openwebui", "librechat", "convtree"])
def test_export_then_import_keeps_the_tree(
    fmt: str, tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_json(tmp_path / "export.json", [chatgpt_conversation()])
    assert main(["import", str(source), "--store", store]) == 0
    out_file = tmp_path / f"out-{fmt}.json"
    assert main(["export", "cg-1", "--format", fmt, "-o", str(out_file), "--store", store]) == 0
    assert f"wrote 1 conversation(s) ({fmt}, tree) to {out_file}" in capsys.readouterr().err
    assert detect(out_file) == fmt
    again = f"sqlite:///{tmp_path / 'again.db'}"
    assert main(["import", str(out_file), "--store", again]) == 0
    assert shape(stored(again)["cg-1"]) == shape(stored(store)["cg-1"])


def test_export_to_standard_output_and_in_every_mode(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = convtree_document()
    write_json(tmp_path / "doc.json", source)
    assert main(["import", str(tmp_path / "doc.json"), "--store", store]) == 0
    capsys.readouterr()
    assert main(["export", "ct-1", "--store", store]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert ConversationState.from_dict(doc) == ConversationState.from_dict(source)

    assert main(["export", "ct-1", "--mode", "active", "--store", store]) == 0
    (active,) = json.loads(capsys.readouterr().out)
    assert [n["node_id"] for n in active["nodes"]][1:] == ["q", "a2"]

    assert main(["export", "ct-1", "--mode", "branches", "--store", store]) == 0
    branches = json.loads(capsys.readouterr().out)
    assert [b["conversation_id"] for b in branches] == ["ct-1~a1", "ct-1~a2"]
    assert [b["current_node_id"] for b in branches] == ["a1", "a2"]


def test_export_as_openai_messages(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_json(tmp_path / "doc.json", convtree_document())
    assert main(["import", str(tmp_path / "doc.json"), "--store", store]) == 0
    capsys.readouterr()
    assert main(["export", "ct-1", "--format", "openai", "--store", store]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": "two"},
    ]
    # A message list holds one path of one conversation.
    assert main(["export", "ct-1", "--format", "openai", "--mode", "tree", "--store", store]) == 1
    assert "holds one path" in capsys.readouterr().err
    assert (
        main(["export", "ct-1", "--format", "openai", "--mode", "branches", "--store", store]) == 1
    )
    assert "holds one conversation" in capsys.readouterr().err


def test_export_of_an_unknown_id_writes_nothing(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_json(tmp_path / "doc.json", convtree_document())
    assert main(["import", str(tmp_path / "doc.json"), "--store", store]) == 0
    capsys.readouterr()
    target = tmp_path / "out.json"
    assert main(["export", "ct-1", "nope", "-o", str(target), "--store", store]) == 1
    captured = capsys.readouterr()
    assert captured.err == "convtree: error: no conversation 'nope' in " + store + "\n"
    assert captured.out == ""
    assert not target.exists()


# ------------------------------------------------------------------ the command itself


def test_help_lists_every_command_and_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "show", "diff", "schema", "check", "import", "export", "migrate"):
        assert f"\n  {command} " in out
    assert main(["export", "--help"]) == 0
    assert "--mode [tree|active|branches]" in capsys.readouterr().out
    assert main(["nope"]) == 2
    assert "No such command 'nope'" in capsys.readouterr().err
    assert main(["import", "/no/such/file.json"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_errors_are_one_line_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "convtree",
            "migrate",
            "--from",
            f"dataknobs-llm+sqlite:///{tmp_path / 'missing.db'}",
            "--to",
            "memory://x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"convtree: error: no SQLite database at {tmp_path / 'missing.db'} "
        f"(from 'dataknobs-llm+sqlite:///{tmp_path / 'missing.db'}')"
    ]


# ------------------------------------------------------------------ real exports


@pytest.mark.skipif(INTERCHANGE is None, reason="the real exports (shared/fixtures) are absent")
def test_the_real_exports_import_and_import_again_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert INTERCHANGE is not None
    files = sorted(str(p) for p in INTERCHANGE.rglob("*.json"))
    store = f"sqlite:///{tmp_path / 'real.db'}"
    assert main(["import", *files, "--store", store]) == 0, capsys.readouterr().out
    first = capsys.readouterr().out
    imported = int(first.split(" imported")[0])
    assert imported == len(stored(store)) > 0
    assert main(["import", *files, "--store", store]) == 0
    assert capsys.readouterr().out.startswith(f"0 imported, 0 replaced, {imported} unchanged")


def test_openai_lists_are_one_conversation_per_file(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "lists"
    folder.mkdir()
    write_json(folder / "a.json", openai_messages())
    write_json(folder / "b.json", openai_messages()[:2])
    assert main(["import", str(folder), "--store", store]) == 1
    assert "one conversation per file, give the files" in capsys.readouterr().out
    files = sorted(str(p) for p in folder.iterdir())
    assert main(["import", *files, "--store", store]) == 0
    states = stored(store)
    assert sorted(states) == sorted(conversation_id_for(f) for f in files)
    assert [len(states[conversation_id_for(f)]) for f in files] == [4, 3]
    not_messages = write_json(tmp_path / "c.json", [{"role": "user", "content": "hi"}, {"x": 1}])
    assert main(["import", str(not_messages), "--store", store]) == 1
    assert "not a Chat Completions message (no 'role')" in capsys.readouterr().out
