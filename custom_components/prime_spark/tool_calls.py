"""LLM tools for the Assist agent: how they are sent, and how a model's calls are repaired.

The node's local engine constrains tool calls with a grammar built from the schemas sent here, so
its calls are well-formed. A node that forwards to an upstream (another OpenAI-compatible server)
gets no such guarantee, and small models there make the same mistakes again and again: the JSON
in a code fence, Python quoting, numbers as strings, a list where one value was asked for (or the
other way round), the call wrapped once more (``{"name": ..., "arguments": {...}}``), keys the tool
does not know. Home Assistant validates tool arguments strictly (an unknown key fails the call),
so each of these would cost a round trip, or the whole answer.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from homeassistant.helpers import llm

from .compat import tool_parameters_schema
from .const import LOGGER

COMPACT_DESCRIPTION_LENGTH = 160
COMPACT_MAX_ITEMS = 4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_CODE_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def format_tool(
    tool: llm.Tool, custom_serializer: Callable[[Any], Any] | None, *, compact: bool
) -> dict[str, Any]:
    """The OpenAI ``tools`` entry for a Home Assistant LLM tool.

    ``compact`` (for small models and contexts) keeps the first sentence of the description
    only: with Home Assistant's Assist API the descriptions are most of the tools' share of
    the prompt (the node renders the arguments compactly itself), and a 1024-token context
    cannot hold them all. It also bounds every list argument (:func:`bound_lists`).
    """
    parameters = tool_parameters_schema(tool.parameters, custom_serializer)
    function: dict[str, Any] = {
        "name": tool.name,
        "parameters": bound_lists(parameters) if compact else parameters,
    }
    if tool.description:
        function["description"] = first_sentence(tool.description) if compact else tool.description
    return {"type": "function", "function": function}


def bound_lists(schema: Any, max_items: int = COMPACT_MAX_ITEMS) -> Any:
    """``schema`` with ``maxItems`` on every array that has none.

    The node's grammar follows the schema exactly, and an unbounded list lets a small model
    repeat items until it runs out of tokens, the call cut off unfinished (observed with
    HassTurnOn's ``domain`` on Home Assistant 2025.4). Home Assistant's tools take a few
    items at most.
    """
    if isinstance(schema, list):
        return [bound_lists(item, max_items) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    bounded = {key: bound_lists(value, max_items) for key, value in schema.items()}
    kind = schema.get("type")
    if (kind == "array" or (isinstance(kind, list) and "array" in kind)) and (
        "maxItems" not in schema
    ):
        bounded["maxItems"] = max_items
    return bounded


def first_sentence(text: str, limit: int = COMPACT_DESCRIPTION_LENGTH) -> str:
    """The first sentence of ``text``, at most ``limit`` characters (cut at a word)."""
    sentence = _SENTENCE_END.split(" ".join(text.split()), maxsplit=1)[0]
    if len(sentence) <= limit:
        return sentence
    return sentence[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def parse_arguments(raw: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments object of a tool call, from what the model wrote.

    Accepts JSON, JSON in a Markdown code fence, Python literals (single quotes, ``True``),
    doubly encoded JSON and a call wrapped once more (``{"name": ..., "arguments": {...}}``).
    Anything else is an empty object (the tool then reports what it misses).
    """
    value: Any = raw
    for _ in range(3):  # a string may hold JSON that holds a string again
        if not isinstance(value, str):
            break
        value = _parse_text(value)
    if not isinstance(value, Mapping):
        LOGGER.debug("Tool arguments are not an object, using none: %r", raw)
        return {}
    if set(value) <= {"name", "arguments", "parameters"} and isinstance(
        inner := value.get("arguments", value.get("parameters")), (Mapping, str)
    ):
        return parse_arguments(inner)
    return dict(value)


def _parse_text(text: str) -> Any:
    text = text.strip()
    if match := _CODE_FENCE.match(text):
        text = match.group(1).strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        pass
    try:
        # Single quotes around keys and strings, JSON otherwise (true/false/null).
        return json.loads(re.sub(r"(?<![\\\w])'|'(?!\w)", '"', text))
    except ValueError:
        LOGGER.debug("Tool arguments are not JSON: %r", text)
        return None


def repair_arguments(arguments: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Fit ``arguments`` to the tool's JSON ``schema`` where a model typically missed it.

    Drops empty values (``None``, ``""``: Home Assistant's intents fail on an empty name) and
    keys the schema does not list (unless it allows more), and coerces each value to its
    property's type: see :func:`coerce_value`.
    """
    properties = schema.get("properties")
    known = properties if isinstance(properties, Mapping) else {}
    allow_extra = not known or schema.get("additionalProperties") not in (False, None)
    repaired: dict[str, Any] = {}
    for key, value in arguments.items():
        if value is None or value == "":
            continue
        if key not in known:
            if allow_extra:
                repaired[key] = value
            else:
                LOGGER.debug("Dropping the unknown tool argument %s=%r", key, value)
            continue
        repaired[key] = coerce_value(value, known[key])
    return repaired


def coerce_value(value: Any, schema: Any) -> Any:
    """``value`` converted to what ``schema`` asks for, when there is a safe conversion.

    Strings holding JSON arrays or objects are parsed; an enum value matches regardless of
    case; ``"5"`` becomes 5 for an integer, ``5`` becomes ``"5"`` for a string, ``"on"``
    becomes ``True`` for a boolean; a single value becomes a one-item list for an array, and a
    one-item list its item where one value is asked for. A value that fits stays as it is,
    and one that cannot be converted is passed on for the tool to reject.
    """
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, str) and value.strip()[:1] in "[{" and not _allows(schema, "string"):
        with suppress(ValueError):
            value = json.loads(value)
    if isinstance(enum := schema.get("enum"), list):
        return _coerce_enum(value, enum)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alternatives, list):
        return _coerce_alternatives(value, [a for a in alternatives if isinstance(a, Mapping)])
    kind = schema.get("type")
    if isinstance(kind, list):
        return _coerce_alternatives(value, [{**schema, "type": k} for k in kind])
    if kind == "array":
        items = schema.get("items", {})
        values = value if isinstance(value, list) else [value]
        return [coerce_value(item, items) for item in values]
    if isinstance(value, list) and len(value) == 1 and kind is not None:
        value = value[0]
    if kind == "object":
        return repair_arguments(value, schema) if isinstance(value, Mapping) else value
    if kind == "string":
        return _to_string(value)
    if kind == "integer":
        return _to_integer(value)
    if kind == "number":
        return _to_number(value)
    if kind == "boolean":
        return _to_boolean(value)
    return value


def _allows(schema: Mapping[str, Any], kind: str) -> bool:
    declared = schema.get("type")
    if declared == kind or (isinstance(declared, list) and kind in declared):
        return True
    alternatives = schema.get("anyOf") or schema.get("oneOf") or []
    return any(isinstance(a, Mapping) and _allows(a, kind) for a in alternatives)


def _coerce_enum(value: Any, enum: list[Any]) -> Any:
    if value in enum:
        return value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
        if value in enum:
            return value
    if isinstance(value, str):
        folded = value.strip().casefold()
        for option in enum:
            if isinstance(option, str) and option.casefold() == folded:
                return option
    return value


def _coerce_alternatives(value: Any, alternatives: list[Mapping[str, Any]]) -> Any:
    for alternative in alternatives:
        if _fits(value, alternative):
            return coerce_value(value, alternative)
    for alternative in alternatives:
        if _fits(coerced := coerce_value(value, alternative), alternative):
            return coerced
    return value


def _fits(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether ``value`` has the JSON type ``schema`` declares (a shallow check)."""
    if isinstance(enum := schema.get("enum"), list):
        return value in enum
    kind = schema.get("type")
    if kind is None:
        return True
    if isinstance(kind, list):
        return any(_fits(value, {**schema, "type": k}) for k in kind)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, Mapping)
    return kind == "null" and value is None


def _to_string(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _to_integer(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _to_number(value)


def _to_number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    return value


def _to_boolean(value: Any) -> Any:
    if isinstance(value, str):
        folded = value.strip().casefold()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return False
    elif isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value
