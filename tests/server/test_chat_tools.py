"""Tools: validation, the prompt text, the call grammar's shape, parsing output back."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from inference_server.backends.base import TokenizerInfo
from inference_server.chat import (
    ChatFormatError,
    parse_response_format,
    parse_tool_output,
    parse_tools,
    prepare_chat,
    tool_grammar,
    tools_prompt,
)
from inference_server.chat.tools import NO_TOOLS, ToolConfig, schema_signature

SET_LIGHT: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "set_light",
        "description": "Set the brightness of a light.",
        "parameters": {
            "type": "object",
            "properties": {
                "entity_id": {"type": "string"},
                "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
            },
            "required": ["entity_id", "brightness"],
        },
    },
}
GET_TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}
GEMMA_INFO = TokenizerInfo(
    add_bos=True,
    bos_token="<bos>",
    eos_token="<eos>",
    eot_token="<end_of_turn>",
    chat_template=None,
)


def _rules(grammar: str | None) -> dict[str, str]:
    assert grammar is not None
    return dict(line.split(" ::= ", 1) for line in grammar.splitlines())


def _config(choice: Any = None, parallel: Any = None) -> ToolConfig:
    return parse_tools([SET_LIGHT, GET_TIME], choice, parallel)


# --------------------------------------------------------------------------- validation


def test_defaults() -> None:
    assert parse_tools(None) == NO_TOOLS
    config = _config()
    assert (config.mode, config.forced, config.parallel, config.active) == (
        "auto",
        None,
        False,
        True,
    )
    assert [tool.name for tool in config.tools] == ["set_light", "get_time"]
    assert config.tools[1].parameters() == {"type": "object", "properties": {}}


def test_choices() -> None:
    assert _config("none").active is False
    assert _config("required").mode == "required"
    named = _config({"type": "function", "function": {"name": "get_time"}})
    assert (named.mode, named.forced) == ("required", "get_time")
    assert [tool.name for tool in named.candidates()] == ["get_time"]
    assert _config(parallel=True).parallel is True


@pytest.mark.parametrize(
    ("tools", "choice", "parallel", "param", "fragment"),
    [
        ({"a": 1}, None, None, "tools", "expected a list"),
        (["x"], None, None, "tools[0]", "expected an object"),
        ([{"type": "retrieval"}], None, None, "tools[0].type", "expected 'function'"),
        ([{"type": "function"}], None, None, "tools[0].function", "expected an object"),
        (
            [{"type": "function", "function": {"name": "turn on"}}],
            None,
            None,
            "tools[0].function.name",
            "1-64 characters",
        ),
        ([GET_TIME, GET_TIME], None, None, "tools[1].function.name", "used twice"),
        (
            [{"type": "function", "function": {"name": "f", "description": 3}}],
            None,
            None,
            "tools[0].function.description",
            "expected a string",
        ),
        (
            [{"type": "function", "function": {"name": "f", "parameters": []}}],
            None,
            None,
            "tools[0].function.parameters",
            "expected a JSON schema object",
        ),
        (
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
            None,
            None,
            "tools[0].function.parameters",
            '"type": "object"',
        ),
        (
            [
                GET_TIME,
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"a": {"type": "date"}}},
                    },
                },
            ],
            None,
            None,
            "tools[1].function.parameters",
            "cannot turn this JSON schema into a grammar",
        ),
        (
            [SET_LIGHT],
            {"type": "function", "function": {"name": "open_door"}},
            None,
            "tool_choice.function.name",
            "no tool named 'open_door' in 'tools' (set_light)",
        ),
        (
            None,
            {"type": "function", "function": {"name": "f"}},
            None,
            "tool_choice.function.name",
            "none are given",
        ),
        (None, "required", None, "tool_choice", "needs at least one tool"),
        ([SET_LIGHT], "always", None, "tool_choice", 'expected "none", "auto", "required"'),
        ([SET_LIGHT], {"type": "function"}, None, "tool_choice", "expected {"),
        ([SET_LIGHT], None, "yes", "parallel_tool_calls", "expected a boolean"),
    ],
)
def test_errors_name_the_field(
    tools: Any, choice: Any, parallel: Any, param: str, fragment: str
) -> None:
    with pytest.raises(ChatFormatError) as info:
        parse_tools(tools, choice, parallel)
    assert info.value.param == param
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- prompt


def test_prompt_lists_tools_and_the_call_format() -> None:
    text = tools_prompt(_config())
    assert text is not None
    assert "- set_light: Set the brightness of a light." in text
    assert "  arguments: {entity_id: string, brightness: integer 0..100}" in text
    assert '<tool_call>\n{"name": "<tool name>", "arguments": {<arguments>}}\n</tool_call>' in text
    assert text.endswith("If no tool is needed, answer directly in plain text instead.")
    assert tools_prompt(_config("none")) is None
    forced = tools_prompt(_config({"type": "function", "function": {"name": "get_time"}}))
    assert forced is not None
    assert "set_light" not in forced
    assert forced.endswith("You must call the tool get_time now.")
    assert (tools_prompt(_config("required")) or "").endswith("You must call one of the tools now.")
    assert "several tools at once" in (tools_prompt(_config(parallel=True)) or "")


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object", "properties": {}}, "{}"),
        (
            {
                "type": "object",
                "properties": {
                    "area": {"type": "string", "enum": ["Kitchen", "Office"]},
                    "level": {"type": "number", "minimum": 0, "description": "In percent"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "when": {"type": "string", "format": "date"},
                    "mode": {"anyOf": [{"const": "eco"}, {"type": "null"}]},
                    "count": {"type": ["integer", "null"], "maximum": 9},
                },
                "required": ["area"],
            },
            '{area: "Kitchen" | "Office", level?: number >= 0 (In percent), '
            'tags?: list of (string), when?: string (date), mode?: "eco" | null, '
            "count?: integer <= 9 | null}",
        ),
        ({"not": {"type": "string"}}, '{"not":{"type":"string"}}'),
    ],
)
def test_schema_signature(schema: dict[str, Any], expected: str) -> None:
    assert schema_signature(schema) == expected


# --------------------------------------------------------------------------- grammar


def test_required_grammar_is_only_calls() -> None:
    rules = _rules(tool_grammar(_config("required")))
    assert rules["root"] == "tool-call"
    assert rules["tool-call"] == '"<tool_call>\\n" call "\\n</tool_call>"'
    assert rules["call"] == "call0 | call1"
    assert '"\\"set_light\\""' in rules["call0"]
    assert rules["call0-args-brightness"] == '([0-9] | [1-9] [0-9] | "10" "0") space'
    assert "answer" not in rules


def test_auto_grammar_offers_text_that_cannot_start_like_a_call() -> None:
    rules = _rules(tool_grammar(_config()))
    assert rules["root"] == "tool-call | answer"
    assert rules["answer"] == r"[^<\x00-\x20] [^\x00]*"


def test_auto_grammar_with_a_json_response_format() -> None:
    fmt = parse_response_format({"type": "json_object"})
    rules = _rules(tool_grammar(_config(), fmt))
    assert rules["root"] == "tool-call | answer"
    assert rules["answer"] == "object"


def test_named_choice_grammar_allows_only_that_tool() -> None:
    rules = _rules(tool_grammar(_config({"type": "function", "function": {"name": "get_time"}})))
    assert rules["call"] == "call0"
    assert '"\\"get_time\\""' in rules["call0"]
    assert "set_light" not in "\n".join(rules.values())


def test_parallel_grammar_repeats_calls() -> None:
    rules = _rules(tool_grammar(_config("required", parallel=True)))
    assert rules["root"] == "tool-calls"
    assert rules["tool-calls"] == 'tool-call ("\\n" tool-call){0,7}'


def test_no_grammar_without_active_tools() -> None:
    assert tool_grammar(_config("none")) is None
    assert tool_grammar(NO_TOOLS) is None


# --------------------------------------------------------------------------- parsing


CALL = (
    '<tool_call>\n{"name": "set_light", '
    '"arguments": {"entity_id": "light.kitchen", "brightness": 40}}\n</tool_call>'
)


def test_parse_a_call() -> None:
    reply = parse_tool_output(CALL, _config())
    assert reply.finish_reason == "tool_calls"
    assert reply.content is None
    (call,) = reply.tool_calls
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id)
    message = reply.to_message()
    assert message["role"] == "assistant"
    assert message["content"] is None
    assert message["tool_calls"][0]["type"] == "function"
    assert message["tool_calls"][0]["function"]["name"] == "set_light"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {
        "entity_id": "light.kitchen",
        "brightness": 40,
    }


def test_parse_plain_text() -> None:
    reply = parse_tool_output("It is sunny.", _config())
    assert (reply.content, reply.tool_calls, reply.finish_reason) == ("It is sunny.", (), "stop")
    assert reply.to_message() == {"role": "assistant", "content": "It is sunny."}


def test_calls_are_ignored_when_tools_are_off() -> None:
    reply = parse_tool_output(CALL, _config("none"))
    assert reply.content == CALL
    assert not reply.tool_calls


def test_parallel_calls_are_deduplicated() -> None:
    other = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    ids = iter(["call_a", "call_b", "call_c"])
    reply = parse_tool_output(
        f"{CALL}\n{CALL}\n{other}", _config(parallel=True), make_id=lambda: next(ids)
    )
    assert [(c.id, c.name) for c in reply.tool_calls] == [
        ("call_a", "set_light"),
        ("call_b", "get_time"),
    ]


def test_truncated_call_is_no_content() -> None:
    """Half a call is not something to show a user: no content, the reason says why."""
    reply = parse_tool_output(CALL[:40], _config(), finish_reason="length")
    assert (reply.content, reply.tool_calls, reply.finish_reason) == (None, (), "length")


def test_complete_calls_survive_a_truncated_tail() -> None:
    reply = parse_tool_output(
        f'{CALL}\n<tool_call>\n{{"na', _config(parallel=True), finish_reason="length"
    )
    assert reply.finish_reason == "tool_calls"
    assert len(reply.tool_calls) == 1


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "open_door", "arguments": {}}\n</tool_call>',
        "<tool_call>\nnot json\n</tool_call>",
        '<tool_call>\n{"name": "get_time", "arguments": "now"}\n</tool_call>',
    ],
)
def test_unusable_calls_are_returned_as_text(text: str) -> None:
    reply = parse_tool_output(text, _config())
    assert reply.content == text
    assert not reply.tool_calls


# --------------------------------------------------------------------------- prepare_chat


def test_prepare_chat_with_tools() -> None:
    prepared = prepare_chat(
        {
            "messages": [{"role": "user", "content": "Kitchen light to 40%"}],
            "tools": [SET_LIGHT],
            "tool_choice": "required",
            "response_format": {"type": "json_object"},
        },
        GEMMA_INFO,
    )
    assert prepared.uses_tools
    assert prepared.prompt.startswith("<start_of_turn>user\n# Tools\n")
    assert prepared.prompt.endswith("Kitchen light to 40%<end_of_turn>\n<start_of_turn>model\n")
    assert _rules(prepared.grammar)["root"] == "tool-call"
    message, finish_reason = prepared.parse_output(CALL, "stop")
    assert finish_reason == "tool_calls"
    assert message["tool_calls"][0]["function"]["name"] == "set_light"


def test_prepare_chat_with_a_response_format_only() -> None:
    prepared = prepare_chat(
        {
            "messages": [{"role": "user", "content": "JSON please"}],
            "response_format": {"type": "json_object"},
        },
        GEMMA_INFO,
    )
    assert not prepared.uses_tools
    assert _rules(prepared.grammar)["root"] == "output"
    assert prepared.parse_output('{"a": 1}', "stop") == (
        {"role": "assistant", "content": '{"a": 1}'},
        "stop",
    )


def test_prepare_chat_reports_the_first_bad_field() -> None:
    with pytest.raises(ChatFormatError) as info:
        prepare_chat({"messages": [{"role": "robot", "content": "x"}]}, GEMMA_INFO)
    assert info.value.param == "messages[0].role"
