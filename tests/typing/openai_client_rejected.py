"""The negative control of ``openai_client.py``: mypy must reject this file.

The dicts convtree's ``Message.to_openai()`` returns are ``dict[str, Any]``,
which the client's typed ``messages`` parameter does not take: the check that
accepts ``to_messages()`` is a real one. Never imported or run.
"""

from __future__ import annotations

from openai import OpenAI

from convtree import ConversationState


def chat_turn(client: OpenAI, state: ConversationState) -> None:
    messages = [m.to_openai() for m in state.get_current_messages()]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # rejected
