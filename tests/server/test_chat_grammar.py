"""response_format → GBNF: validation, the patched converter, integer ranges, caching.

Grammars are compiled by llama.cpp itself in ``test_chat_model.py`` (that needs a vocabulary);
here we check what we generate.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from inference_server.chat import ChatFormatError, parse_response_format, response_format_grammar
from inference_server.chat.grammar import (
    GrammarBuilder,
    integer_bounds,
    natural_runs,
    schema_grammar,
)


def _rules(grammar: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in grammar.splitlines())


def _grammar(schema: dict[str, Any]) -> str:
    fmt = parse_response_format(
        {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )
    grammar = response_format_grammar(fmt)
    assert grammar is not None
    return grammar


def test_text_and_missing_formats_need_no_grammar() -> None:
    assert response_format_grammar(parse_response_format(None)) is None
    assert response_format_grammar(parse_response_format({"type": "text"})) is None


def test_json_object_grammar_is_any_object() -> None:
    fmt = parse_response_format({"type": "json_object"})
    rules = _rules(response_format_grammar(fmt) or "")
    assert rules["root"] == "output"
    assert rules["output"] == "object"
    assert rules["object"].startswith('"{" space')


def test_json_schema_grammar_keeps_property_order_and_no_extra_keys() -> None:
    rules = _rules(
        _grammar(
            {
                "type": "object",
                "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
                "required": ["city", "population"],
            }
        )
    )
    assert rules["output"] == '"{" space output-city-kv "," space output-population-kv "}" space'
    # strings never contain raw control characters, so the output always parses as JSON
    assert rules["char"].startswith(r'[^"\\\x7F\x00-\x1F]')


def test_json_schema_without_a_schema_is_any_object() -> None:
    """OpenAI's ``json_schema.schema`` is optional; without it the answer is a JSON object."""
    fmt = parse_response_format({"type": "json_schema", "json_schema": {"name": "free"}})
    assert (fmt.type, fmt.name, fmt.schema()) == ("json_schema", "free", {"type": "object"})
    assert response_format_grammar(fmt) == response_format_grammar(
        parse_response_format({"type": "json_object"})
    )


def test_parsed_format_records_name_and_strict() -> None:
    fmt = parse_response_format(
        {
            "type": "json_schema",
            "json_schema": {"name": "city", "strict": True, "schema": {"type": "object"}},
        }
    )
    assert (fmt.type, fmt.name, fmt.strict) == ("json_schema", "city", True)
    assert fmt.schema() == {"type": "object"}


@pytest.mark.parametrize(
    ("raw", "param", "fragment"),
    [
        ("json", "response_format", "expected an object"),
        ({"type": "xml"}, "response_format.type", "expected one of text, json_object, json_schema"),
        ({"type": "json_schema"}, "response_format.json_schema", "expected an object"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": []}},
            "response_format.json_schema.schema",
            "expected a JSON schema object",
        ),
        (
            {"type": "json_schema", "json_schema": {"schema": {}}},
            "response_format.json_schema.name",
            "is required",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": 1, "schema": {}}},
            "response_format.json_schema.name",
            "expected a string",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "strict": "yes"}},
            "response_format.json_schema.strict",
            "expected a boolean",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "banana"}}},
            "response_format.json_schema.schema",
            "cannot turn this JSON schema into a grammar",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"$ref": "https://x.org/s.json"}},
            },
            "response_format.json_schema.schema",
            "only local $refs",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}},
            },
            "response_format.json_schema.schema",
            "points to nothing",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "array", "maxItems": 10**6}},
            },
            "response_format.json_schema.schema",
            "maxItems 1000000 is larger than",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {"type": "integer", "minimum": 5, "maximum": 1},
                },
            },
            "response_format.json_schema.schema",
            "minimum 5 is greater than maximum 1",
        ),
    ],
)
def test_bad_formats_name_the_field(raw: Any, param: str, fragment: str) -> None:
    with pytest.raises(ChatFormatError) as info:
        parse_response_format(raw)
    assert info.value.param == param
    assert fragment in str(info.value)


def test_grammars_are_cached_by_schema_text() -> None:
    schema = '{"type":"object","properties":{"cache_probe":{"type":"boolean"}}}'
    first = schema_grammar(schema, param="p")
    assert schema_grammar(schema, param="p") is first


def test_integer_bounds_read_every_json_schema_spelling() -> None:
    assert integer_bounds({"minimum": 0, "maximum": 100}) == (0, 100)
    assert integer_bounds({"exclusiveMinimum": 0, "exclusiveMaximum": 10}) == (1, 9)
    assert integer_bounds({"minimum": 0, "exclusiveMinimum": True}) == (1, None)
    assert integer_bounds({"minimum": 0.5, "maximum": 9.5}) == (1, 9)
    assert integer_bounds({"minimum": True}) == (None, None)


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (0, 0),
        (0, 9),
        (0, 100),
        (1, 100),
        (7, 7),
        (5, 1234),
        (10, 99),
        (99, 101),
        (0, 5000),
        (123, 98765),
    ],
)
def test_natural_runs_match_exactly_the_range(low: int, high: int) -> None:
    pattern = re.compile("|".join(run.regex() for run in natural_runs(low, high)))
    for value in range(max(0, low - 200), high + 200):
        assert bool(pattern.fullmatch(str(value))) == (low <= value <= high), value
    assert not pattern.fullmatch("0" + str(max(low, 1)))  # never a leading zero


def test_open_ended_runs() -> None:
    pattern = re.compile("|".join(run.regex() for run in natural_runs(250, None)))
    for value in [*range(0, 1200), 10**15 - 1, 10**15]:
        assert bool(pattern.fullmatch(str(value))) == (value >= 250), value
    assert not pattern.fullmatch("1" * 17)


def test_integer_range_rule_covers_negatives() -> None:
    rules = _rules(_grammar({"type": "integer", "minimum": -12, "maximum": 7}))
    assert rules["output"] == '("-" ([1-9] | "1" [0-2]) | [0-7]) space'
    rules = _rules(_grammar({"type": "integer", "maximum": -3}))
    assert rules["output"].startswith('("-" ([3-9] | [1-9] [0-9]{1,15})')


def test_type_lists_keep_their_bounds() -> None:
    rules = _rules(_grammar({"type": ["integer", "null"], "minimum": 1, "maximum": 3}))
    assert rules["output"] == "output-0 | null"
    assert rules["output-0"] == "([1-3]) space"


def test_refs_of_two_schemas_do_not_collide() -> None:
    builder = GrammarBuilder()
    for name, key, kind in (("a", "x", "string"), ("b", "y", "boolean")):
        item = {"type": "object", "properties": {key: {"type": kind}}}
        schema = {"$defs": {"Item": item}, "type": "array", "items": {"$ref": "#/$defs/Item"}}
        builder.add_schema(schema, name, param="p")
    rules = _rules(builder.grammar(param="p"))
    assert rules["a-item"] == "a--defs-Item"
    assert rules["a--defs-Item-x-kv"] == '"\\"x\\"" space ":" space string'
    assert rules["b-item"] == "b--defs-Item"
    assert rules["b--defs-Item-y-kv"] == '"\\"y\\"" space ":" space boolean'


def test_recursive_refs_work() -> None:
    tree = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}},
        },
        "required": ["name"],
    }
    rules = _rules(_grammar(tree))
    assert rules["output-children-item"] == "output-root"
    assert rules["output-root-children-item"] == "output-root"
