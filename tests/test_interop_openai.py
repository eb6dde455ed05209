"""OpenAI Chat Completions messages and Responses API items, in and out of a conversation."""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convtree import ConversationState, FormatError, NodeNotFoundError
from convtree.interop.openai import (
    MESSAGE_KEYS,
    from_items,
    from_messages,
    to_items,
    to_messages,
)

from .conftest import REPO

# ------------------------------------------------------------------ message shapes

CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
CUSTOM = {"id": "call_2", "type": "custom", "custom": {"name": "sql", "input": "select 1"}}

MESSAGES: dict[str, dict[str, Any]] = {
    "system": {"role": "system", "content": "Be brief."},
    "system named, text parts": {
        "role": "system",
        "name": "ops",
        "content": [{"type": "text", "text": "Be brief."}],
    },
    "developer": {"role": "developer", "content": "Answer in French."},
    "user": {"role": "user", "content": "Hi"},
    "user named": {"role": "user", "content": "Hi", "name": "alice"},
    "user multimodal": {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"file_id": "file-1"}},
            {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "a.pdf"}},
            {
                "type": "text",
                "text": "cached",
                "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "30m"},
            },
        ],
    },
    "assistant": {"role": "assistant", "content": "Hello!"},
    "assistant named": {"role": "assistant", "content": "Hello!", "name": "bot"},
    "assistant tool calls": {"role": "assistant", "content": None, "tool_calls": [CALL, CUSTOM]},
    "assistant tool calls, no content key": {"role": "assistant", "tool_calls": [CALL]},
    "assistant empty tool calls": {"role": "assistant", "content": "x", "tool_calls": []},
    "assistant legacy function_call": {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "weather", "arguments": '{"city": "Oslo"}'},
    },
    "assistant refusal": {"role": "assistant", "content": None, "refusal": "I can't help."},
    "assistant null provider fields": {
        "role": "assistant",
        "content": "Hi",
        "refusal": None,
        "audio": None,
        "function_call": None,
        "tool_calls": None,
        "name": None,
    },
    "assistant audio": {"role": "assistant", "content": None, "audio": {"id": "audio_1"}},
    "assistant parts": {
        "role": "assistant",
        "content": [{"type": "text", "text": "Partly "}, {"type": "refusal", "refusal": "no"}],
    },
    "tool": {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
    "tool parts": {
        "role": "tool",
        "content": [{"type": "text", "text": "18C"}],
        "tool_call_id": "call_1",
    },
    "function": {"role": "function", "name": "weather", "content": "18C"},
    "function null content": {"role": "function", "name": "weather", "content": None},
}


@pytest.mark.parametrize("shape", MESSAGES)
def test_every_message_shape_round_trips_exactly(shape: str) -> None:
    message = MESSAGES[shape]
    given_ = copy.deepcopy(message)
    state = from_messages([message])
    assert message == given_, "the caller's message is not changed"
    assert to_messages(state) == [message]
    saved = ConversationState.from_json(state.to_json())
    assert to_messages(saved) == [message]


def test_a_conversation_round_trips_and_keeps_its_order() -> None:
    messages = list(MESSAGES.values())
    state = from_messages(messages, conversation_id="c1", metadata={"user_id": "alice"})
    assert state.conversation_id == "c1"
    assert state.metadata == {"source": "openai", "user_id": "alice"}
    assert len(state) == len(messages) + 1  # the message-less root
    assert state.root.message is None
    assert state.depth() == len(messages)
    assert to_messages(state) == messages


def test_messages_land_in_convtree_fields_and_provider_fields_stay_on_the_message() -> None:
    state = from_messages(
        [
            {"role": "user", "content": "Hi", "name": "alice"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [CALL],
                "refusal": None,
                "annotations": [],
                "reasoning_content": "thinking",  # another provider's field
            },
            {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
        ]
    )
    user, assistant, tool = state.get_current_messages()
    assert (user.role, user.content, user.name) == ("user", "Hi", "alice")
    assert assistant.tool_calls == [CALL]
    assert assistant.content is None
    assert assistant.model_extra == {
        "refusal": None,
        "annotations": [],
        "reasoning_content": "thinking",
    }
    assert tool.tool_call_id == "call_1"
    assert tool.text == "18C"
    stored = ConversationState.from_json(state.to_json()).get_current_messages()[1]
    assert stored.model_extra == assistant.model_extra
    # What the API does not take back stays in the conversation but is not sent.
    assert to_messages(state)[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [CALL],
        "refusal": None,
    }


def test_nodes_get_new_ids_and_the_import_time() -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    state = from_messages([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    nodes = state.get_path()
    assert len({n.node_id for n in nodes}) == 3
    assert all(n.timestamp >= before for n in nodes)
    assert state.created_at == state.updated_at == nodes[-1].timestamp


def test_a_response_message_keeps_what_the_api_sent() -> None:
    from openai._models import construct_type
    from openai.types.chat import ChatCompletion

    raw = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": "Hi",
                    "refusal": None,
                    "annotations": [
                        {
                            "type": "url_citation",
                            "url_citation": {
                                "url": "https://x",
                                "title": "X",
                                "start_index": 0,
                                "end_index": 2,
                            },
                        }
                    ],
                    "audio": {"id": "audio_1", "data": "UklG", "expires_at": 9, "transcript": "Hi"},
                    "future_field": {"a": 1},
                },
            }
        ],
    }
    completion = construct_type(type_=ChatCompletion, value=raw)
    assert isinstance(completion, ChatCompletion)
    state = from_messages([{"role": "user", "content": "Hi"}, completion.choices[0].message])
    message = state.current_node.message_dict()
    assert message == raw["choices"][0]["message"]  # type: ignore[index]
    assert to_messages(state)[1] == {
        "role": "assistant",
        "content": "Hi",
        "refusal": None,
        "audio": {"id": "audio_1"},
    }


def test_typed_models_are_accepted_as_messages() -> None:
    from openai.types.chat import ChatCompletionMessage

    reply = ChatCompletionMessage(role="assistant", content="Hello")  # only what was given
    state = from_messages([{"role": "user", "content": "Hi"}, reply])
    assert to_messages(state)[1] == {"role": "assistant", "content": "Hello"}


def test_include_metadata_writes_the_message_metadata() -> None:
    message = {"role": "user", "content": "Hi", "metadata": {"lang": "en"}}
    state = from_messages([message])
    assert state.get_current_messages()[0].metadata == {"lang": "en"}
    assert to_messages(state) == [{"role": "user", "content": "Hi"}]
    assert to_messages(state, include_metadata=True) == [message]


def test_to_messages_follows_any_branch_and_skips_the_root() -> None:
    state = ConversationState()
    state.add_message("system", "sys")
    question = state.add_message("user", "q")
    first = state.add_message("assistant", "a0")
    state.add_alternative("assistant", "a1", tool_calls=[CALL])
    state.add_message("tool", "18C", tool_call_id="call_1", name="weather")
    assert to_messages(state) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a1", "tool_calls": [CALL]},
        {"role": "tool", "content": "18C", "tool_call_id": "call_1"},  # no name: not API
    ]
    assert [m["content"] for m in to_messages(state, first.node_id)] == ["sys", "q", "a0"]
    assert to_messages(state, question) == to_messages(state)[:2]
    assert to_messages(state, state.root.node_id) == []
    with pytest.raises(NodeNotFoundError):
        to_messages(state, "nowhere")


def test_to_messages_shares_nothing_with_the_state() -> None:
    state = from_messages([MESSAGES["user multimodal"], MESSAGES["assistant tool calls"]])
    out = to_messages(state)
    out[0]["content"][0]["text"] = "changed"  # type: ignore[index]
    out[1]["tool_calls"][0]["id"] = "changed"  # type: ignore[typeddict-item]
    assert to_messages(state) == [MESSAGES["user multimodal"], MESSAGES["assistant tool calls"]]


def test_a_null_field_later_set_is_sent_with_its_value() -> None:
    state = from_messages([{"role": "assistant", "content": "x", "tool_calls": None}])
    node = state.current_node
    assert node.message is not None
    node.message.tool_calls = [CALL]
    assert to_messages(state) == [{"role": "assistant", "content": "x", "tool_calls": [CALL]}]


def test_a_role_chat_completions_does_not_know_is_refused_naming_the_node() -> None:
    state = ConversationState()
    state.add_message("user", "q")
    critic = state.add_message("critic", "meh")
    with pytest.raises(FormatError, match="'critic' is not a Chat Completions role") as info:
        to_messages(state)
    assert info.value.node_id == critic.node_id


def test_a_tool_message_without_its_call_id_is_refused_naming_the_node() -> None:
    """ChatGPT's tool outputs (browser, python) have no call id: the API refuses a
    tool message without one, so the conversion says so instead of emitting it."""
    state = ConversationState()
    state.add_message("user", "search the web")
    output = state.add_message("tool", "results...", name="browser")
    with pytest.raises(FormatError, match="tool message without tool_call_id") as info:
        to_messages(state)
    assert info.value.node_id == output.node_id
    state.add_message("tool", "ok", tool_call_id="call_1")
    assert to_messages(state, state.get_path()[1].node_id) == [
        {"role": "user", "content": "search the web"}
    ]


def test_message_keys_are_those_of_the_openai_types() -> None:
    from openai.types import chat

    types = {
        "system": chat.ChatCompletionSystemMessageParam,
        "developer": chat.ChatCompletionDeveloperMessageParam,
        "user": chat.ChatCompletionUserMessageParam,
        "assistant": chat.ChatCompletionAssistantMessageParam,
        "tool": chat.ChatCompletionToolMessageParam,
        "function": chat.ChatCompletionFunctionMessageParam,
    }
    for role, typed in types.items():
        assert set(MESSAGE_KEYS[role]) == set(typed.__annotations__) - {"role", "content"}, role


# --------------------------------------------------------------------- bad messages

BAD_MESSAGES: list[tuple[Any, str, str]] = [
    ({"role": "user", "content": "x"}, "messages", "must be a list"),
    ("hello", "messages", "must be a list"),
    ([{"role": "user", "content": "x"}, "hi"], "messages[1]", "must be an object"),
    ([{"content": "x"}], "messages[0].role", "needs a role"),
    ([{"role": "robot", "content": "x"}], "messages[0].role", "one of system"),
    ([{"role": 3, "content": "x"}], "messages[0].role", "got 3"),
    ([{"role": "user"}], "messages[0].content", "needs content"),
    ([{"role": "user", "content": None}], "messages[0].content", "got null"),
    ([{"role": "user", "content": 5}], "messages[0].content", "string or a list"),
    ([{"role": "user", "content": ["hi"]}], "messages[0].content[0]", "must be an object"),
    ([{"role": "user", "content": [{"text": "hi"}]}], "messages[0].content[0].type", "missing"),
    (
        [{"role": "user", "content": [{"type": "text", "text": 1}]}],
        "messages[0].content[0].text",
        "must be a string",
    ),
    (
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]}],
        "messages[0].content[0].image_url.url",
        "missing url",
    ),
    (
        [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}],
        "messages[0].content[0].input_audio.format",
        "missing format",
    ),
    ([{"role": "user", "content": "x", "name": 1}], "messages[0].name", "must be a string"),
    ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id", "missing"),
    ([{"role": "function", "content": "x"}], "messages[0].name", "missing"),
    ([{"role": "function", "name": "f", "content": ["x"]}], "messages[0].content", "string"),
    (
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
        ],
        "messages[3].tool_calls[0].function",
        "missing function",
    ),
    (
        [
            {
                "role": "assistant",
                "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}],
            }
        ],
        "messages[0].tool_calls[0].function.arguments",
        "must be a string, got dict",
    ),
    (
        [{"role": "assistant", "tool_calls": [{**CALL, "id": 7}]}],
        "messages[0].tool_calls[0].id",
        "id must be a string, got 7",
    ),
    ([{"role": "assistant", "tool_calls": ["call"]}], "messages[0].tool_calls[0]", "an object"),
    ([{"role": "assistant", "tool_calls": CALL}], "messages[0].tool_calls", "must be a list"),
    (
        [{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}],
        "messages[0].tool_calls[0].custom.name",
        "missing",
    ),
    (
        [{"role": "assistant", "content": None, "function_call": {"name": "f"}}],
        "messages[0].function_call.arguments",
        "missing",
    ),
    ([{"role": "assistant", "content": None, "audio": {}}], "messages[0].audio.id", "missing"),
    ([{"role": "assistant", "content": "x", "refusal": 1}], "messages[0].refusal", "string"),
    ([{"role": "user", "content": "x", "metadata": [1]}], "messages[0].metadata", "an object"),
    (
        [{"role": "user", "content": "x", "sent": datetime.datetime(2025, 1, 1)}],
        "messages[0].sent",
        "not JSON-compatible",
    ),
    (
        [{"role": "user", "content": "x", "deep": json.loads("[" * 300 + "]" * 300)}],
        "messages[0].deep",
        "nested deeper",
    ),
]


@pytest.mark.parametrize(
    ("messages", "path", "text"), BAD_MESSAGES, ids=[p for _, p, _ in BAD_MESSAGES]
)
def test_bad_messages_raise_format_errors_naming_the_path(
    messages: Any, path: str, text: str
) -> None:
    with pytest.raises(FormatError, match=text) as info:
        from_messages(messages)
    assert info.value.path is not None
    assert info.value.path.startswith(path)


def test_bad_conversation_fields_are_format_errors() -> None:
    with pytest.raises(FormatError) as info:
        from_messages([], metadata=["x"])  # type: ignore[arg-type]
    assert info.value.path == "metadata"
    with pytest.raises(FormatError) as info:
        from_messages([], conversation_id="")
    assert info.value.path == "conversation_id"
    with pytest.raises(FormatError) as info:
        from_messages([], metadata={"when": datetime.date(2025, 1, 1)})
    assert info.value.path == "metadata.when"


# ------------------------------------------------------------------ property test


def _text() -> st.SearchStrategy[str]:
    return st.text(max_size=12)


_TEXT_PART = st.builds(lambda t: {"type": "text", "text": t}, _text())
_IMAGE_PART = st.builds(
    lambda url, detail: {
        "type": "image_url",
        "image_url": {"url": url, **({} if detail is None else {"detail": detail})},
    },
    _text(),
    st.sampled_from([None, "auto", "low", "high"]),
)
_TOOL_CALL = st.one_of(
    st.builds(
        lambda i, n, a: {"id": i, "type": "function", "function": {"name": n, "arguments": a}},
        _text(),
        _text(),
        _text(),
    ),
    st.builds(
        lambda i, n, a: {"id": i, "type": "custom", "custom": {"name": n, "input": a}},
        _text(),
        _text(),
        _text(),
    ),
)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts holding any subset of ``fields``."""
    return st.fixed_dictionaries({}, optional=fields)


def _message() -> st.SearchStrategy[dict[str, Any]]:
    instructions = st.one_of(_text(), st.lists(_TEXT_PART, max_size=3))
    simple = st.builds(
        lambda role, content, extra: {"role": role, "content": content, **extra},
        st.sampled_from(["system", "developer"]),
        instructions,
        _optional(name=st.one_of(st.none(), _text())),
    )
    user = st.builds(
        lambda content, extra: {"role": "user", "content": content, **extra},
        st.one_of(_text(), st.lists(st.one_of(_TEXT_PART, _IMAGE_PART), max_size=3)),
        _optional(name=st.one_of(st.none(), _text())),
    )
    assistant = _optional(
        content=st.one_of(
            st.none(),
            _text(),
            st.lists(
                st.one_of(
                    _TEXT_PART, st.builds(lambda t: {"type": "refusal", "refusal": t}, _text())
                ),
                max_size=3,
            ),
        ),
        name=st.one_of(st.none(), _text()),
        tool_calls=st.one_of(st.none(), st.lists(_TOOL_CALL, max_size=3)),
        function_call=st.one_of(
            st.none(),
            st.builds(lambda n, a: {"name": n, "arguments": a}, _text(), _text()),
        ),
        refusal=st.one_of(st.none(), _text()),
        audio=st.one_of(st.none(), st.builds(lambda i: {"id": i}, _text())),
    ).map(lambda fields: {"role": "assistant", **fields})
    tool = st.builds(
        lambda content, call_id: {"role": "tool", "content": content, "tool_call_id": call_id},
        instructions,
        _text(),
    )
    function = st.builds(
        lambda content, name: {"role": "function", "content": content, "name": name},
        st.one_of(st.none(), _text()),
        _text(),
    )
    return st.one_of(simple, user, assistant, tool, function)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_message(), max_size=8))
def test_random_message_lists_round_trip(messages: list[dict[str, Any]]) -> None:
    state = from_messages(messages)
    assert to_messages(state) == messages
    assert to_messages(ConversationState.from_json(state.to_json())) == messages


# ----------------------------------------------------------------- typing with mypy

TYPING = REPO / "tests" / "typing"


def _mypy(*files: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    api = pytest.importorskip("mypy.api")
    pytest.importorskip("openai")
    # This checkout's convtree, not an installed one.
    monkeypatch.setenv("MYPYPATH", str(REPO / "src"))
    stdout, stderr, _status = api.run(
        [
            "--config-file",
            str(REPO / "pyproject.toml"),
            "--cache-dir",
            str(REPO / ".mypy_cache" / "typing-tests"),
            "--no-error-summary",
            "--show-error-codes",
            *map(str, files),
        ]
    )
    assert not stderr, stderr
    return [line for line in stdout.splitlines() if line.strip()]


def test_the_openai_client_accepts_the_results_under_mypy_strict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = TYPING / "openai_client.py"
    rejected = TYPING / "openai_client_rejected.py"
    lines = _mypy(good, rejected, monkeypatch=monkeypatch)
    # The negative control proves the check can fail: exactly one error, where expected.
    expected_line = next(
        number
        for number, text in enumerate(rejected.read_text("utf-8").splitlines(), 1)
        if text.endswith("# rejected")
    )
    assert len(lines) == 1, "\n".join(lines)
    where, message = lines[0].split(": error: ", 1)
    assert Path(where.rsplit(":", 1)[0]).name == rejected.name
    assert int(where.rsplit(":", 1)[1]) == expected_line
    assert 'Argument "messages"' in message
    assert "[arg-type]" in message


# --------------------------------------------------------------------- Responses items

ITEMS: dict[str, dict[str, Any]] = {
    "easy message": {"role": "user", "content": "What's the weather in Oslo?"},
    "typed message with parts": {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "And this?"},
            {"type": "input_image", "detail": "auto", "image_url": "data:image/png;base64,iVBO"},
            {"type": "input_file", "file_id": "file-1"},
        ],
    },
    "developer message": {"type": "message", "role": "developer", "content": "Be brief."},
    "output message": {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "phase": "final_answer",
        "content": [
            {"type": "output_text", "text": "Sunny.", "annotations": [], "logprobs": []},
            {"type": "refusal", "refusal": "Not that."},
        ],
    },
    "function call": {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "weather",
        "arguments": '{"city": "Oslo"}',
        "status": "completed",
    },
    "function call output": {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
    "function call output with parts": {
        "type": "function_call_output",
        "id": "fco_1",
        "call_id": "call_1",
        "output": [{"type": "input_text", "text": "18C"}],
        "status": "completed",
    },
    "function call output without call id": {
        "type": "function_call_output",
        "output": "18C",
        "caller": {"type": "program", "caller_id": "p1"},
    },
    "custom tool call": {
        "type": "custom_tool_call",
        "id": "ctc_1",
        "call_id": "call_2",
        "name": "sql",
        "input": "select 1",
    },
    "custom tool call output": {
        "type": "custom_tool_call_output",
        "call_id": "call_2",
        "output": "1",
    },
    "reasoning": {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "Look up the weather."}],
        "encrypted_content": "gAAAAB",
    },
    "reasoning without summary": {
        "type": "reasoning",
        "id": "rs_2",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "hmm"}],
    },
    "web search call": {
        "type": "web_search_call",
        "id": "ws_1",
        "status": "completed",
        "action": {"type": "search", "query": "oslo weather"},
    },
    "item reference": {"type": "item_reference", "id": "msg_0"},
    "future item": {"type": "hologram", "role": "projector", "payload": {"x": [1, None]}},
}


@pytest.mark.parametrize("shape", ITEMS)
def test_every_item_shape_round_trips_exactly(shape: str) -> None:
    item = ITEMS[shape]
    given_ = copy.deepcopy(item)
    state = from_items([item])
    assert item == given_
    assert to_items(state) == [item]
    assert to_items(ConversationState.from_json(state.to_json())) == [item]


def test_a_session_round_trips_with_item_ids_as_node_ids() -> None:
    items = list(ITEMS.values())
    state = from_items(items, conversation_id="session-1")
    assert to_items(state) == items
    ids = [n.node_id for n in state.get_path()[1:]]
    assert ids[3:6] == ["msg_1", "fc_1", ids[5]]
    assert "rs_1" in ids
    assert "ws_1" in ids
    assert len(set(ids)) == len(ids)


def test_an_item_id_already_taken_gives_a_new_node_id_and_keeps_the_item() -> None:
    items = [ITEMS["output message"], ITEMS["output message"], {"type": "item_reference", "id": ""}]
    state = from_items(items)
    ids = [n.node_id for n in state.get_path()[1:]]
    assert ids[0] == "msg_1"
    assert ids[1] != "msg_1"
    assert ids[2] != ""
    assert to_items(state) == items


def test_items_become_messages_as_documented() -> None:
    state = from_items(
        [
            ITEMS["easy message"],
            ITEMS["function call"],
            ITEMS["function call output"],
            ITEMS["custom tool call"],
            ITEMS["reasoning"],
            ITEMS["web search call"],
        ]
    )
    user, call, output, custom, reasoning, search = state.get_current_messages()
    assert (user.role, user.content) == ("user", "What's the weather in Oslo?")
    assert (call.role, call.content) == ("assistant", None)
    assert call.tool_calls == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
        }
    ]
    assert (output.role, output.content, output.tool_call_id) == ("tool", "18C", "call_1")
    assert custom.tool_calls == [
        {"id": "call_2", "type": "custom", "custom": {"name": "sql", "input": "select 1"}}
    ]
    assert (reasoning.role, reasoning.content) == ("reasoning", ITEMS["reasoning"]["summary"])
    assert (search.role, search.content) == ("web_search_call", None)
    nodes = state.get_path()
    assert nodes[2].metadata["openai"] == {
        "item": {"type": "function_call", "id": "fc_1", "status": "completed"}
    }
    assert nodes[6].metadata["openai"] == {"item": ITEMS["web search call"]}


def test_an_item_node_changed_in_place_is_written_with_its_new_content() -> None:
    state = from_items([ITEMS["output message"], ITEMS["function call"]])
    message_node, call_node = state.get_path()[1:]
    assert message_node.message is not None
    message_node.message.content = "Rainy."
    assert call_node.message is not None
    call_node.message.tool_calls = [{**CALL, "id": "call_9"}]
    assert to_items(state) == [
        {**ITEMS["output message"], "content": "Rainy."},
        {**ITEMS["function call"], "call_id": "call_9", "arguments": "{}"},
    ]


def test_an_item_node_changed_out_of_its_shape_is_written_as_a_new_item() -> None:
    state = from_items([ITEMS["function call"]])
    node = state.current_node
    assert node.message is not None
    node.message.tool_calls = [CALL, CUSTOM]
    assert to_items(state) == [
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
        {"type": "custom_tool_call", "call_id": "call_2", "name": "sql", "input": "select 1"},
    ]


def test_a_conversation_built_natively_becomes_items() -> None:
    state = ConversationState()
    state.add_message("system", "Be brief.")
    state.add_message("user", MESSAGES["user multimodal"]["content"][:2])
    state.add_message("assistant", None, tool_calls=[CALL, CUSTOM])
    state.add_message("tool", [{"type": "text", "text": "18C"}], tool_call_id="call_1")
    state.add_message("assistant", [{"type": "text", "text": "Sunny."}])
    state.add_message("assistant", "Bye.")
    assert to_items(state) == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
            ],
        },
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
        {"type": "custom_tool_call", "call_id": "call_2", "name": "sql", "input": "select 1"},
        {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": [{"type": "input_text", "text": "18C"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}],
        },
        {"role": "assistant", "content": "Bye."},
    ]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"role": "function", "content": "x", "name": "f"}, "role 'function'"),
        ({"role": "critic", "content": "x"}, "role 'critic'"),
        ({"role": "tool", "content": "x"}, "without tool_call_id"),
        (
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": ""}},
            "legacy",
        ),
        (
            # the shape dataknobs-llm stored: not an OpenAI call
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"name": "f", "parameters": {}, "id": "c"}],
            },
            "not an OpenAI function or custom call",
        ),
    ],
)
def test_messages_without_an_item_form_are_refused_naming_the_node(
    fields: dict[str, Any], problem: str
) -> None:
    state = ConversationState()
    node = state.add(fields)
    with pytest.raises(FormatError, match=problem) as info:
        to_items(state)
    assert info.value.node_id == node.node_id


def test_items_become_chat_messages_where_chat_completions_has_a_form() -> None:
    state = from_items(
        [
            ITEMS["developer message"],
            ITEMS["typed message with parts"],
            ITEMS["reasoning"],
            ITEMS["function call"],
            ITEMS["function call output with parts"],
            ITEMS["web search call"],
            ITEMS["output message"],
        ]
    )
    assert to_messages(state) == [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBO", "detail": "auto"},
                },
                {"type": "file", "file": {"file_id": "file-1"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "content": [{"type": "text", "text": "18C"}], "tool_call_id": "call_1"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Sunny."},
                {"type": "refusal", "refusal": "Not that."},
            ],
        },
    ]


def test_response_output_models_are_accepted_as_items() -> None:
    from openai._models import construct_type
    from openai.types.responses import Response

    raw_output = [ITEMS["reasoning"], ITEMS["function call"], ITEMS["output message"]]
    response = construct_type(
        type_=Response,
        value={
            "id": "resp_1",
            "object": "response",
            "created_at": 1,
            "model": "gpt-4o-mini",
            "output": raw_output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        },
    )
    assert isinstance(response, Response)
    state = from_items(response.output)
    assert to_items(state) == raw_output


BAD_ITEMS: list[tuple[Any, str, str]] = [
    ({"type": "message"}, "items", "must be a list"),
    ([1], "items[0]", "must be an object"),
    ([{"content": "x"}], "items[0].type", "needs a type"),
    ([{"type": 1}], "items[0].type", "must be a string"),
    ([{"type": "message", "role": "tool", "content": "x"}], "items[0].role", "one of user"),
    ([{"role": "user"}], "items[0].content", "needs content"),
    ([{"role": "user", "content": [{"text": "x"}]}], "items[0].content[0].type", "missing"),
    (
        [{"role": "user", "content": [{"type": "input_text"}]}],
        "items[0].content[0].text",
        "missing text",
    ),
    ([{"role": "user", "content": 1}], "items[0].content", "string or a list"),
    (
        [ITEMS["easy message"], {"type": "function_call", "call_id": "c", "name": "f"}],
        "items[1].arguments",
        "missing arguments",
    ),
    ([{"type": "custom_tool_call", "call_id": "c", "name": "f"}], "items[0].input", "missing"),
    ([{"type": "function_call_output", "call_id": "c"}], "items[0].output", "needs an output"),
    ([{"type": "function_call_output", "call_id": 1, "output": "x"}], "items[0].call_id", "got 1"),
    ([{"type": "function_call_output", "output": {"x": 1}}], "items[0].output", "string or"),
    ([{"type": "reasoning", "id": "r"}], "items[0].summary", "must be a list"),
    (
        [{"type": "reasoning", "summary": [{"type": "summary_text"}]}],
        "items[0].summary[0].text",
        "missing text",
    ),
    ([{"type": "web_search_call", "at": {1, 2}}], "items[0].at", "not JSON-compatible"),
]


@pytest.mark.parametrize(("items", "path", "text"), BAD_ITEMS, ids=[p for _, p, _ in BAD_ITEMS])
def test_bad_items_raise_format_errors_naming_the_path(items: Any, path: str, text: str) -> None:
    with pytest.raises(FormatError, match=text) as info:
        from_items(items)
    assert info.value.path is not None
    assert info.value.path.startswith(path)


def _item() -> st.SearchStrategy[dict[str, Any]]:
    status = st.sampled_from(["in_progress", "completed", "incomplete"])
    text_part = st.builds(
        lambda kind, t: {"type": kind, "text": t},
        st.sampled_from(["input_text", "output_text"]),
        _text(),
    )
    message = st.builds(
        lambda role, content, extra: {"role": role, "content": content, **extra},
        st.sampled_from(["user", "assistant", "system", "developer"]),
        st.one_of(_text(), st.lists(text_part, max_size=3)),
        _optional(type=st.just("message"), id=_text(), status=status),
    )
    call = st.builds(
        lambda call_id, name, args, extra: {
            "type": "function_call",
            "call_id": call_id,
            "name": name,
            "arguments": args,
            **extra,
        },
        _text(),
        _text(),
        _text(),
        _optional(id=_text(), status=status),
    )
    output = st.builds(
        lambda call_id, out, extra: {
            "type": "function_call_output",
            "call_id": call_id,
            "output": out,
            **extra,
        },
        _text(),
        st.one_of(_text(), st.lists(text_part, max_size=2)),
        _optional(id=st.one_of(st.none(), _text()), status=status),
    )
    reasoning = st.builds(
        lambda i, texts: {
            "type": "reasoning",
            "id": i,
            "summary": [{"type": "summary_text", "text": t} for t in texts],
        },
        _text(),
        st.lists(_text(), max_size=2),
    )
    other = st.builds(
        lambda kind, i: {"type": kind, "id": i, "status": "completed"},
        st.sampled_from(["web_search_call", "file_search_call", "item_reference", "mcp_call"]),
        _text(),
    )
    return st.one_of(message, call, output, reasoning, other)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_item(), max_size=8))
def test_random_item_lists_round_trip(items: list[dict[str, Any]]) -> None:
    state = from_items(items)
    assert to_items(state) == items
    assert to_items(ConversationState.from_json(state.to_json())) == items


# ------------------------------------------------------------------ real exports

INTERCHANGE = Path("/work/shared/fixtures/interchange")


def test_the_flat_messages_of_a_real_open_webui_chat_import_with_every_field() -> None:
    """Open WebUI keeps an OpenAI-style ``messages`` list beside its tree, with its own fields."""
    path = INTERCHANGE / "openwebui" / "webui-json.json"
    if not path.exists():
        pytest.skip(f"{path} is not on this machine (the real exports are kept outside the repo)")
    chat = json.loads(path.read_text("utf-8"))
    chat = chat.get("chat", chat)
    messages = chat["messages"]
    state = from_messages(messages, metadata={"title": chat["title"]})
    assert [n.message_dict() for n in state.get_path()[1:]] == messages
    assert to_messages(state) == [{"role": m["role"], "content": m["content"]} for m in messages]
