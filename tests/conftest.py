from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from convtree import ConversationState

REFERENCE_DOCS = Path(__file__).parent / "fixtures" / "reference-docs"
REPO = Path(__file__).resolve().parent.parent


def reference_documents() -> list[tuple[str, Path]]:
    """(conversation name, document path) for every reference fixture."""
    return [
        (folder.name, path)
        for folder in sorted(REFERENCE_DOCS.iterdir())
        if folder.is_dir()
        for path in sorted(folder.glob("v*.json"))
    ]


def load_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def role_content(state: ConversationState, ref: str | None = None) -> list[list[Any]]:
    return [[n.message.role, n.message.content] for n in state.get_path(ref) if n.message]


@pytest.fixture
def branching() -> ConversationState:
    """root - system - user - {a0, a1 - user2 - a2, a3}; cursor on a2."""
    state = ConversationState("branching", metadata={"user_id": "alice"})
    state.add_message("system", "sys", node_id="sys")
    state.add_message("user", "question", node_id="q")
    state.add_message("assistant", "answer 0", node_id="a0", branch_name="first")
    state.add_alternative("assistant", "answer 1", node_id="a1", branch_name="second")
    state.add_message("user", "follow-up", node_id="q2")
    state.add_message("assistant", "answer 2", node_id="a2")
    state.add_message("assistant", "answer 3", parent_id="q", node_id="a3")
    state.switch_to("a2")
    return state
