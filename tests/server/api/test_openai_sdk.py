"""The official OpenAI SDK against the real server and the real model."""

from __future__ import annotations

import base64
import json
import struct

import jsonschema
import openai
import pytest

from tests.server.server_process import ServerProcess

LIGHT_TOOL = {
    "type": "function",
    "function": {
        "name": "set_light",
        "description": "Turn a light on or off and set its brightness",
        "parameters": {
            "type": "object",
            "properties": {
                "entity_id": {"type": "string", "description": "e.g. light.kitchen"},
                "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
            },
            "required": ["entity_id", "brightness"],
        },
    },
}


def test_chat_non_streaming(client: openai.OpenAI, server: ServerProcess) -> None:
    answer = client.chat.completions.create(
        model=server_model(server),
        messages=[
            {"role": "system", "content": "You are a helpful home assistant."},
            {"role": "user", "content": "Say hello."},
        ],
        max_tokens=16,
        temperature=0,
    )
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 5
    assert 0 < answer.usage.completion_tokens <= 16
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_chat_streaming_with_usage(client: openai.OpenAI, server: ServerProcess) -> None:
    stream = client.chat.completions.create(
        model=server_model(server),
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text
    assert finishes in (["stop"], ["length"])
    assert chunks[0].choices[0].delta.role == "assistant"
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert 0 < usage.completion_tokens <= 24


def test_streaming_matches_non_streaming(client: openai.OpenAI, server: ServerProcess) -> None:
    """Greedy decoding is deterministic: both transports must deliver the same text."""
    kwargs = {
        "model": server_model(server),
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 12,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(stream=True, **kwargs)  # type: ignore[call-overload]
        if c.choices
    )
    assert streamed == whole


def test_completions(client: openai.OpenAI, server: ServerProcess) -> None:
    result = client.completions.create(
        model=server_model(server), prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert result.choices[0].text
    assert result.usage is not None and result.usage.completion_tokens <= 8
    stream = client.completions.create(
        model=server_model(server),
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].text for c in stream) == result.choices[0].text


def test_max_tokens_and_stop(client: openai.OpenAI, server: ServerProcess) -> None:
    result = client.completions.create(
        model=server_model(server), prompt="1, 2, 3, 4,", max_tokens=3, temperature=0
    )
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 3
    stopped = client.completions.create(
        model=server_model(server), prompt="1, 2, 3, 4,", max_tokens=40, temperature=0, stop=["7"]
    )
    assert "7" not in stopped.choices[0].text
    assert stopped.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_repeatable(client: openai.OpenAI, server: ServerProcess) -> None:
    def sample() -> str | None:
        return (
            client.completions.create(
                model=server_model(server),
                prompt="Once upon a time",
                max_tokens=12,
                temperature=1.0,
                seed=1234,
            )
            .choices[0]
            .text
        )

    assert sample() == sample()


def test_embeddings(client: openai.OpenAI, server: ServerProcess) -> None:
    result = client.embeddings.create(
        model=server_model(server), input=["turn on the kitchen light", "switch the light on"]
    )
    assert len(result.data) == 2
    first, second = (d.embedding for d in result.data)
    assert len(first) == len(second) > 100
    norm = sum(x * x for x in first) ** 0.5
    assert norm == pytest.approx(1.0, abs=1e-3)
    assert result.usage.prompt_tokens > 0
    as_base64 = client.embeddings.create(
        model=server_model(server), input="turn on the kitchen light", encoding_format="base64"
    )
    raw = base64.b64decode(as_base64.data[0].embedding)  # type: ignore[arg-type]
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(first, abs=1e-5)


def test_models(client: openai.OpenAI, server: ServerProcess) -> None:
    ids = [m.id for m in client.models.list()]
    assert server_model(server) in ids


def test_json_schema_output_validates(client: openai.OpenAI, server: ServerProcess) -> None:
    schema = {
        "type": "object",
        "properties": {
            "room": {"type": "string", "enum": ["kitchen", "bedroom", "garage"]},
            "on": {"type": "boolean"},
            "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
        },
        "required": ["room", "on", "brightness"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model=server_model(server),
        messages=[{"role": "user", "content": "Kitchen light on at half brightness, as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "light", "schema": schema, "strict": True},
        },
        max_tokens=64,
        temperature=0,
    )
    content = answer.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), schema)


def test_json_object_output_parses(client: openai.OpenAI, server: ServerProcess) -> None:
    answer = client.chat.completions.create(
        model=server_model(server),
        messages=[{"role": "user", "content": "Describe a lamp as a JSON object."}],
        response_format={"type": "json_object"},
        max_tokens=48,
        temperature=0,
    )
    content = answer.choices[0].message.content
    assert content is not None
    if answer.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # cut by max_tokens: still a JSON object prefix
        assert content.lstrip().startswith("{")


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_parses(client: openai.OpenAI, server: ServerProcess, stream: bool) -> None:
    kwargs = {
        "model": server_model(server),
        "messages": [{"role": "user", "content": "Set the kitchen light to 40 percent."}],
        "tools": [LIGHT_TOOL],
        "tool_choice": "required",
        "max_tokens": 64,
        "temperature": 0,
    }
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))  # type: ignore[call-overload]
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        finish = [
            c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
        ]
        name, arguments = calls[0].function.name, calls[0].function.arguments
    else:
        answer = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
        calls = answer.choices[0].message.tool_calls
        finish = [answer.choices[0].finish_reason]
        name, arguments = calls[0].function.name, calls[0].function.arguments
    assert finish == ["tool_calls"]
    assert name == "set_light"
    jsonschema.validate(json.loads(arguments), LIGHT_TOOL["function"]["parameters"])


def test_tool_result_round_trip(client: openai.OpenAI, server: ServerProcess) -> None:
    """A conversation holding a call and its result renders and answers in plain text."""
    answer = client.chat.completions.create(
        model=server_model(server),
        messages=[
            {"role": "user", "content": "Set the kitchen light to 40 percent."},
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
        ],
        tools=[LIGHT_TOOL],
        tool_choice="none",
        max_tokens=16,
        temperature=0,
    )
    assert answer.choices[0].message.content
    assert not answer.choices[0].message.tool_calls


def server_model(server: ServerProcess) -> str:
    status, _, body = server.request("GET", "/api/v1/status")
    assert status == 200
    return str(body["default_model"])
