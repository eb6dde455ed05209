"""What an application writes: convtree's results passed to the real OpenAI client.

Never imported or run (no network): ``tests/test_interop_openai.py`` type-checks
this file with mypy --strict and expects no error. No cast anywhere.
"""

from __future__ import annotations

from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from openai.types.responses import ResponseInputItemParam

from convtree import ConversationState
from convtree.interop.openai import from_items, from_messages, to_items, to_messages


def chat_turn(client: OpenAI, state: ConversationState) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=to_messages(state))
    state.add(completion.choices[0].message.model_dump(exclude_unset=True))


def chat_turn_on_a_branch(client: OpenAI, state: ConversationState, ref: str) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=to_messages(state, ref, include_metadata=False)
    )


def chat_history(messages: list[ChatCompletionMessageParam]) -> ConversationState:
    state = from_messages(messages, conversation_id="c1", metadata={"user_id": "alice"})
    again: list[ChatCompletionMessageParam] = to_messages(state)
    return from_messages(again)


def responses_turn(client: OpenAI, state: ConversationState) -> ConversationState:
    response = client.responses.create(model="gpt-4o-mini", input=to_items(state))
    return from_items(response.output)


def session_items(items: list[ResponseInputItemParam]) -> list[ResponseInputItemParam]:
    return to_items(from_items(items))
