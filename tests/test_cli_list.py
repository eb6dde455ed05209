"""convtree ls, count and rm: filters, search, pages, the default store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from convtree import ConversationState, FilterError
from convtree.cli import main, parse_where
from convtree.sync import open_storage


@pytest.mark.parametrize(
    ("clauses", "expected"),
    [
        (["user_id=alice"], {"user_id": {"$eq": "alice"}}),
        (["n=42"], {"n": {"$eq": 42}}),
        (['n="42"'], {"n": {"$eq": "42"}}),
        (["score >= 3", "score < 9.5"], {"score": {"$gte": 3, "$lt": 9.5}}),
        (["tags contains work"], {"tags": {"$contains": "work"}}),
        (["tier in pro,team"], {"tier": {"$in": ["pro", "team"]}}),
        (['tier nin ["a", 1]'], {"tier": {"$nin": ["a", 1]}}),
        (["deleted exists false"], {"deleted": {"$exists": False}}),
        (["a.b != x=y"], {"a.b": {"$ne": "x=y"}}),
        (["title=a b c"], {"title": {"$eq": "a b c"}}),
    ],
)
def test_where_clauses_become_filters(clauses: list[str], expected: dict[str, Any]) -> None:
    assert parse_where(clauses) == expected


@pytest.mark.parametrize("clause", ["bad", "=x", "a ~ b"])
def test_a_bad_where_clause_is_a_filter_error(clause: str) -> None:
    with pytest.raises(FilterError, match="--where"):
        parse_where([clause])


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CONVTREE_STORE", url)  # the default store of every command
    with open_storage(url) as storage:
        for i in range(12):
            state = ConversationState(
                f"c{i:02d}", metadata={"user_id": "alice" if i % 2 else "bob", "n": i}
            )
            state.add_message("user", f"question {i}" + (" about okapis" if i % 4 == 0 else ""))
            state.add_message("assistant", f"answer {i}")
            storage.save_conversation(state)
    return url


def test_ls_pages_with_cursors_and_json(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []
    after: list[str] = []
    while True:
        assert main(["ls", "--where", "user_id=alice", "--limit", "4", "--json", *after]) == 0
        page = json.loads(capsys.readouterr().out)
        seen += [row["conversation_id"] for row in page["rows"]]
        if page["next_cursor"] is None:
            break
        after = ["--after", page["next_cursor"]]
    assert seen == [f"c{i:02d}" for i in range(11, 0, -2)]


def test_ls_prints_a_table_with_search_and_total(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--search", "OKAPI", "--total", "--order", "conversation_id"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["id", "updated"]
    assert [line.split()[0] for line in lines[1:4]] == ["c00", "c04", "c08"]
    assert "3 in all" in out
    assert main(["ls", "--search", "no such words"]) == 0
    assert "no conversations match" in capsys.readouterr().out


def test_count_and_rm(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["count", "--where", "n >= 6", "--where", "user_id=bob"]) == 0
    assert capsys.readouterr().out.strip() == "3"
    assert main(["rm", "c00", "c01"]) == 0
    assert capsys.readouterr().out.splitlines() == ["deleted c00", "deleted c01"]
    assert main(["rm", "c02", "missing"]) == 1
    captured = capsys.readouterr()
    assert "deleted c02" in captured.out
    assert "no conversation 'missing'" in captured.err
    assert main(["count", "--store", store]) == 0
    assert capsys.readouterr().out.strip() == "9"
    assert main(["ls", "--where", "bad"]) == 1
    assert "--where 'bad'" in capsys.readouterr().err
    assert main(["ls", "--after", "garbage"]) == 1
    assert "cursor" in capsys.readouterr().err
