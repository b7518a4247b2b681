"""Tool formatting and the repair of malformed tool calls (pure functions, no server)."""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import llm

from custom_components.prime_spark.compat import vol
from custom_components.prime_spark.tool_calls import (
    bound_lists,
    coerce_value,
    first_sentence,
    format_tool,
    parse_arguments,
    repair_arguments,
)

# The shapes Home Assistant's Assist API tools have (see test_compat for the real conversion).
TURN_ON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "area": {"type": "string"},
        "domain": {"type": "array", "items": {"type": "string", "enum": ["light", "switch"]}},
        "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
        "level": {"type": "number"},
        "enabled": {"type": "boolean"},
        "filter": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "target": {
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "additionalProperties": False,
        },
        "when": {"type": ["integer", "null"]},
        "color": {"enum": ["red", "green"]},
        "anything": {},
    },
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"name": "Kitchen"}', {"name": "Kitchen"}),
        ({"name": "Kitchen"}, {"name": "Kitchen"}),
        ('```json\n{"name": "Kitchen"}\n```', {"name": "Kitchen"}),
        ("```\n{'name': 'Kitchen'}\n```", {"name": "Kitchen"}),
        ("{'name': 'Kitchen', 'on': True}", {"name": "Kitchen", "on": True}),
        # Single quotes around JSON literals Python does not know.
        ("{'name': 'Kitchen', 'on': true, 'x': null}", {"name": "Kitchen", "on": True, "x": None}),
        ('"{\\"name\\": \\"Kitchen\\"}"', {"name": "Kitchen"}),  # encoded twice
        ('{"name": "HassTurnOn", "arguments": {"name": "Kitchen"}}', {"name": "Kitchen"}),
        ('{"name": "HassTurnOn", "arguments": "{\\"name\\": \\"Kitchen\\"}"}', {"name": "Kitchen"}),
        ('{"name": "HassTurnOn", "parameters": {"area": "Office"}}', {"area": "Office"}),
        ("", {}),
        ("   ", {}),
        (None, {}),
        ("[1, 2]", {}),
        ("not json at all", {}),
        ("{'unterminated", {}),
    ],
)
def test_parse_arguments(raw: Any, expected: dict[str, Any]) -> None:
    assert parse_arguments(raw) == expected


def test_a_lone_name_argument_is_not_a_wrapper() -> None:
    """``{"name": ...}`` alone is an argument (HassTurnOn has one), not a wrapped call."""
    assert parse_arguments('{"name": "Kitchen light"}') == {"name": "Kitchen light"}


def test_repair_arguments() -> None:
    arguments = {
        "name": "Kitchen",
        "area": "",  # empty: dropped (intents fail on an empty area)
        "floor": "First",  # unknown: dropped (Home Assistant refuses extra keys)
        "domain": "Light",  # one value for an array, and an enum in the wrong case
        "brightness": "40",
        "level": "0.5",
        "enabled": "on",
        "filter": 7,
        "target": '{"id": "3", "extra": 1}',  # an object as JSON text
        "when": "12",
        "color": "RED",
        "anything": [1],
        "dropped": None,
    }
    assert repair_arguments(arguments, TURN_ON) == {
        "name": "Kitchen",
        "domain": ["light"],
        "brightness": 40,
        "level": 0.5,
        "enabled": True,
        "filter": "7",
        "target": {"id": 3},
        "when": 12,
        "color": "red",
        "anything": [1],
    }


def test_repair_keeps_what_fits_and_what_cannot_be_fixed() -> None:
    arguments = {
        "name": "Kitchen",
        "domain": ["light", "switch"],
        "brightness": "bright",
        "level": "high",
        "enabled": "maybe",
        "filter": ["a", "b"],
        "target": "nothing",
        "color": "blue",
    }
    assert repair_arguments(arguments, TURN_ON) == arguments


def test_repair_allows_extra_keys_when_the_schema_does() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": True,
    }
    assert repair_arguments({"a": "1", "b": 2}, schema) == {"a": 1, "b": 2}
    # A schema without properties takes anything.
    assert repair_arguments({"b": "2"}, {"type": "object"}) == {"b": "2"}


@pytest.mark.parametrize(
    ("value", "schema", "expected"),
    [
        (True, {"type": "string"}, "true"),
        (False, {"type": "string"}, "false"),
        (1.5, {"type": "string"}, "1.5"),
        (["Kitchen"], {"type": "string"}, "Kitchen"),  # a one-item list where one value goes
        (3.0, {"type": "integer"}, 3),
        ("2.5", {"type": "integer"}, 2.5),  # not an integer: left to the tool to refuse
        (" 7 ", {"type": "number"}, 7),
        (1, {"type": "boolean"}, True),
        (0, {"type": "boolean"}, False),
        ("No", {"type": "boolean"}, False),
        (2, {"type": "boolean"}, 2),
        ('["a", "b"]', {"type": "array", "items": {"type": "string"}}, ["a", "b"]),
        ("[broken", {"type": "array", "items": {"type": "string"}}, ["[broken"]),
        ('["a"]', {"type": "string"}, '["a"]'),  # a string may look like JSON
        ("x", "not a schema", "x"),
        (["Red"], {"enum": ["red"]}, "red"),
        (["red"], {"enum": ["red"]}, "red"),
        ("3", {"type": ["integer", "string"]}, "3"),  # already fits the second type
        ("3", {"type": ["integer", "boolean"]}, 3),
        ("x", {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, "x"),
        (None, {"type": "null"}, None),
        ({"a": 1}, {"type": "object"}, {"a": 1}),
        ("x", {"type": "unknown-type"}, "x"),
        ("x", {"anyOf": [{"enum": ["a"]}, {"type": "string"}]}, "x"),
        (5, {"anyOf": [{"type": "string"}, {}]}, 5),
        (5, {"anyOf": [{"type": ["string", "number"]}]}, 5),
        ({"a": 1}, {"anyOf": [{"type": "string"}, {"type": "object"}]}, {"a": 1}),
        (True, {"type": "integer"}, True),
        ([1, 2], {"type": "number"}, [1, 2]),
    ],
)
def test_coerce_value(value: Any, schema: Any, expected: Any) -> None:
    assert coerce_value(value, schema) == expected


def test_first_sentence() -> None:
    assert first_sentence("Turns on a device. For locks, this locks.") == "Turns on a device."
    assert first_sentence("No full stop") == "No full stop"
    assert first_sentence("Spaces\n  collapse. Rest") == "Spaces collapse."
    long = "word " * 50
    short = first_sentence(long, limit=30)
    assert short.endswith("…")
    assert len(short) <= 31


class _Tool(llm.Tool):
    name = "set_level"
    description = "Sets the level of a device. Use it for dimmers and covers alike."
    parameters = vol.Schema(
        {vol.Required("name"): cv.string, vol.Optional("level"): vol.All(int, vol.Range(0, 100))}
    )

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> Any:
        raise NotImplementedError


def test_format_tool() -> None:
    full = format_tool(_Tool(), None, compact=False)
    assert full["type"] == "function"
    function = full["function"]
    assert function["name"] == "set_level"
    assert function["description"] == _Tool.description
    assert function["parameters"]["type"] == "object"
    assert function["parameters"]["required"] == ["name"]
    assert function["parameters"]["properties"]["level"]["type"] == "integer"

    compact = format_tool(_Tool(), None, compact=True)
    assert compact["function"]["description"] == "Sets the level of a device."
    assert compact["function"]["parameters"] == bound_lists(function["parameters"])

    class _Bare(_Tool):
        description = None

    assert "description" not in format_tool(_Bare(), None, compact=True)["function"]


def test_bound_lists() -> None:
    schema = {
        "type": "object",
        "properties": {
            "domain": {"type": "array", "items": {"type": "string"}},
            "names": {"anyOf": [{"type": "string"}, {"type": "array", "items": {}}]},
            "either": {"type": ["array", "null"]},
            "kept": {"type": "array", "maxItems": 10},
            "name": {"type": "string"},
        },
    }
    bounded = bound_lists(schema, 3)
    properties = bounded["properties"]
    assert properties["domain"]["maxItems"] == 3
    assert properties["names"]["anyOf"][1]["maxItems"] == 3
    assert properties["either"]["maxItems"] == 3
    assert properties["kept"]["maxItems"] == 10
    assert properties["name"] == {"type": "string"}
    assert "maxItems" not in schema["properties"]["domain"]  # a copy
