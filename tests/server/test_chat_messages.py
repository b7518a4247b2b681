"""OpenAI chat messages: what we accept, and errors that name the offending field."""

from __future__ import annotations

from typing import Any

import pytest

from inference_server.chat import ChatFormatError, parse_messages
from inference_server.chat.messages import ChatMessage, ToolCall


def _error(raw: Any) -> ChatFormatError:
    with pytest.raises(ChatFormatError) as info:
        parse_messages(raw)
    return info.value


def test_plain_conversation() -> None:
    messages = parse_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Hi", "name": "anna"},
            {"role": "assistant", "content": "Hello!"},
        ]
    )
    assert messages == (
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="developer", content="Answer in English."),
        ChatMessage(role="user", content="Hi", name="anna"),
        ChatMessage(role="assistant", content="Hello!"),
    )


def test_text_parts_are_joined() -> None:
    (message,) = parse_messages(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
            }
        ]
    )
    assert message.content == "first\nsecond"


def test_tool_round_trip_fills_tool_name_from_the_call() -> None:
    messages = parse_messages(
        [
            {"role": "user", "content": "Kitchen light to 40%"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "set_light",
                            "arguments": '{"entity_id": "light.kitchen", "brightness": 40}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
        ]
    )
    assistant, tool = messages[1], messages[2]
    assert assistant.content is None
    assert assistant.tool_calls == (
        ToolCall(
            id="call_1",
            name="set_light",
            arguments='{"entity_id": "light.kitchen", "brightness": 40}',
        ),
    )
    assert assistant.tool_calls[0].arguments_object() == {
        "entity_id": "light.kitchen",
        "brightness": 40,
    }
    assert tool.name == "set_light"
    assert tool.tool_call_id == "call_1"


def test_arguments_given_as_an_object_become_a_json_string() -> None:
    (message,) = parse_messages(
        [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}],
            }
        ]
    )
    assert message.tool_calls[0].arguments == '{"a": 1}'


def test_assistant_without_content_or_calls_is_empty_text() -> None:
    (message,) = parse_messages([{"role": "assistant"}])
    assert message.content == ""


@pytest.mark.parametrize(
    ("raw", "param", "fragment"),
    [
        ("hello", "messages", "expected a list"),
        ([], "messages", "at least one message"),
        (["hi"], "messages[0]", "expected an object"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "bot"}],
            "messages[2].role",
            "expected one of system, developer, user, assistant, tool",
        ),
        ([{"content": "x"}], "messages[0].role", "missing"),
        ([{"role": "function", "content": "x"}], "messages[0].role", 'got "function"'),
        ([{"role": "user"}], "messages[0].content", "is required"),
        ([{"role": "user", "content": 5}], "messages[0].content", "string or a list"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content[0].type",
            "image content ('image_url') is not supported yet",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio"}]}],
            "messages[0].content[0].type",
            "audio content",
        ),
        ([{"role": "user", "content": [{"type": "video"}]}], "messages[0].content[0].type", "text"),
        (
            [{"role": "user", "content": [{"type": "text"}]}],
            "messages[0].content[0].text",
            "string",
        ),
        ([{"role": "user", "content": "x", "name": 3}], "messages[0].name", "string"),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id", "is required"),
        (
            [{"role": "user", "content": "x", "tool_calls": [{"id": ""}]}],
            "messages[0].tool_calls",
            "only assistant messages",
        ),
        (
            [{"role": "assistant", "tool_calls": {"id": "x"}}],
            "messages[0].tool_calls",
            "expected a list",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}],
            "messages[0].tool_calls[0].id",
            "non-empty string",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c", "type": "code", "function": {}}]}],
            "messages[0].tool_calls[0].type",
            "'function'",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}],
            "messages[0].tool_calls[0].function.name",
            "non-empty string",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 1}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
            "JSON string",
        ),
    ],
)
def test_errors_name_the_field(raw: Any, param: str, fragment: str) -> None:
    error = _error(raw)
    assert error.param == param
    assert str(error).startswith(f"{param}: ")
    assert fragment in str(error)
    assert isinstance(error, ValueError)
