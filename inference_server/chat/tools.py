"""OpenAI function calling for local models: validate, describe, constrain, parse back.

A model of a few hundred million parameters cannot reliably follow a tool-calling format, so we
do not ask it to: the tool description in the prompt tells it *what* to call, and a GBNF grammar
makes any other shape impossible. The call format is one for every model
(:mod:`inference_server.chat.callformat`)::

    <tool_call>
    {"name": "set_light", "arguments": {"entity_id": "light.kitchen", "brightness": 40}}
    </tool_call>

``tool_choice`` decides the grammar:

* ``"required"`` / a named function: the output must be a call (to that function), with
  arguments that satisfy its ``parameters`` schema (integer bounds included);
* ``"auto"``: a call, *or* a plain answer whose first character is neither ``<`` nor
  whitespace. The marker decides on the first token, so even a tiny model can do both: it
  either starts ``<tool_call>`` (and is then held to a valid call) or writes text. With a
  JSON ``response_format`` the plain branch is that JSON instead of free text;
* ``"none"``: tools are neither described nor enforced.

Parallel calls: one call per reply unless the request sets ``parallel_tool_calls: true`` (then up
to :data:`MAX_PARALLEL_CALLS`). OpenAI's default is ``true``; ours is not, because small models
given the chance tend to repeat the same call until ``max_tokens``. Identical calls in one reply
are dropped either way.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from inference_server.chat.callformat import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from inference_server.chat.errors import ChatFormatError
from inference_server.chat.grammar import (
    TEXT_FORMAT,
    GrammarBuilder,
    ResponseFormat,
)
from inference_server.chat.messages import ToolCall

ToolChoiceMode = Literal["none", "auto", "required"]
FinishReason = Literal["stop", "length", "tool_calls"]

MAX_TOOLS = 128
MAX_PARALLEL_CALLS = 8
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_EMPTY_PARAMETERS = '{"type":"object","properties":{}}'
_ID_ALPHABET = string.ascii_letters + string.digits
_CALL_BLOCK_RE = re.compile(
    re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CALL_CLOSE), re.DOTALL
)


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolFunction:
    """One declared function. ``parameters_json`` is its arguments schema as JSON text
    (hashable; the grammar cache key)."""

    name: str
    description: str | None = None
    parameters_json: str = _EMPTY_PARAMETERS

    def parameters(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.parameters_json)
        return loaded


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolConfig:
    """The request's tools and what it wants done with them."""

    tools: tuple[ToolFunction, ...] = ()
    mode: ToolChoiceMode = "none"
    forced: str | None = None
    """The one function ``tool_choice`` names (``mode`` is then ``required``)."""
    parallel: bool = False

    @property
    def active(self) -> bool:
        """Tools are described, enforced and parsed (there are tools and choice is not none)."""
        return bool(self.tools) and self.mode != "none"

    def candidates(self) -> tuple[ToolFunction, ...]:
        """The functions the model may call in this request."""
        if self.forced is not None:
            return tuple(tool for tool in self.tools if tool.name == self.forced)
        return self.tools


NO_TOOLS = ToolConfig()


# --------------------------------------------------------------------------- validation


def parse_tools(
    tools: object,
    tool_choice: object = None,
    parallel_tool_calls: object = None,
) -> ToolConfig:
    """Validate ``tools``, ``tool_choice`` and ``parallel_tool_calls`` from the request body.

    Every ``parameters`` schema is compiled into a grammar here (and cached), so a schema we
    cannot enforce is a 400 naming ``tools[i].function.parameters`` before any generation.
    """
    functions = _parse_tool_list(tools)
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise ChatFormatError("expected a boolean", param="parallel_tool_calls")
    mode, forced = _parse_choice(tool_choice, functions)
    config = ToolConfig(
        tools=functions, mode=mode, forced=forced, parallel=parallel_tool_calls is True
    )
    for index, tool in enumerate(functions):
        _cached_arguments_check(tool.parameters_json, f"tools[{index}].function.parameters")
    return config


def _parse_tool_list(tools: object) -> tuple[ToolFunction, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise ChatFormatError("expected a list of tools", param="tools")
    if len(tools) > MAX_TOOLS:
        raise ChatFormatError(f"at most {MAX_TOOLS} tools are supported", param="tools")
    seen: set[str] = set()
    out: list[ToolFunction] = []
    for index, raw in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(raw, Mapping):
            raise ChatFormatError(
                'expected an object like {"type": "function", "function": {...}}', param=where
            )
        if raw.get("type", "function") != "function":
            raise ChatFormatError(
                f"expected 'function' (got {json.dumps(raw.get('type'))})", param=f"{where}.type"
            )
        function = raw.get("function")
        if not isinstance(function, Mapping):
            raise ChatFormatError(
                "expected an object with 'name', 'description' and 'parameters'",
                param=f"{where}.function",
            )
        name = function.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ChatFormatError(
                "expected 1-64 characters of a-z, A-Z, 0-9, _ . : -", param=f"{where}.function.name"
            )
        if name in seen:
            raise ChatFormatError(
                f"the tool name '{name}' is used twice", param=f"{where}.function.name"
            )
        seen.add(name)
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise ChatFormatError("expected a string", param=f"{where}.function.description")
        parameters = function.get("parameters")
        params_where = f"{where}.function.parameters"
        if parameters is None:
            parameters_json = _EMPTY_PARAMETERS
        else:
            if not isinstance(parameters, Mapping):
                raise ChatFormatError("expected a JSON schema object", param=params_where)
            if parameters.get("type", "object") != "object":
                raise ChatFormatError(
                    'the arguments schema must have "type": "object"', param=params_where
                )
            parameters_json = json.dumps(parameters, ensure_ascii=False, separators=(",", ":"))
        out.append(
            ToolFunction(
                name=name, description=description or None, parameters_json=parameters_json
            )
        )
    return tuple(out)


def _parse_choice(
    choice: object, functions: tuple[ToolFunction, ...]
) -> tuple[ToolChoiceMode, str | None]:
    if choice is None:
        return ("auto" if functions else "none"), None
    if choice in ("none", "auto", "required"):
        if choice == "required" and not functions:
            raise ChatFormatError(
                "'required' needs at least one tool in 'tools'", param="tool_choice"
            )
        modes: dict[object, ToolChoiceMode] = {
            "none": "none",
            "auto": "auto",
            "required": "required",
        }
        return modes[choice], None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if choice.get("type", "function") != "function" or not isinstance(name, str):
            raise ChatFormatError(
                'expected {"type": "function", "function": {"name": ...}}', param="tool_choice"
            )
        known = [tool.name for tool in functions]
        if name not in known:
            listed = ", ".join(known) if known else "none are given"
            raise ChatFormatError(
                f"no tool named '{name}' in 'tools' ({listed})", param="tool_choice.function.name"
            )
        return "required", name
    raise ChatFormatError(
        'expected "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


@lru_cache(maxsize=256)
def _cached_arguments_check(parameters_json: str, param: str) -> None:
    builder = GrammarBuilder()
    builder.add_schema(json.loads(parameters_json), "args", param=param)
    builder.grammar(param=param)


# --------------------------------------------------------------------------- the prompt


def tools_prompt(config: ToolConfig) -> str | None:
    """The system-prompt text that describes the callable tools and the call format."""
    if not config.active:
        return None
    lines = [
        "# Tools",
        "",
        "You can call these tools. Each is listed with what it does and its arguments "
        "(a ? marks an optional one):",
        "",
    ]
    for tool in config.candidates():
        summary = f"- {tool.name}"
        if tool.description:
            summary += f": {tool.description.strip()}"
        lines.append(summary)
        lines.append(f"  arguments: {schema_signature(tool.parameters())}")
    lines += [
        "",
        "To call a tool, reply with only this:",
        TOOL_CALL_OPEN,
        '{"name": "<tool name>", "arguments": {<arguments>}}',
        TOOL_CALL_CLOSE,
    ]
    if config.parallel:
        lines.append("To call several tools at once, write one such block per call.")
    lines.append("The result of a call comes back in a <tool_response> block.")
    if config.forced is not None:
        lines.append(f"You must call the tool {config.forced} now.")
    elif config.mode == "required":
        lines.append("You must call one of the tools now.")
    else:
        lines.append("If no tool is needed, answer directly in plain text instead.")
    return "\n".join(lines)


def schema_signature(schema: Any, _depth: int = 0) -> str:
    """A compact, TypeScript-like rendering of a JSON schema for the prompt.

    ``{area?: "Kitchen" | "Office", brightness?: integer 0..100}`` costs a fraction of the
    tokens of the JSON schema (Home Assistant sends a dozen tools with the same enums) and is
    easier for a small model to read. The grammar, not this text, enforces the schema, so
    anything unusual is simply shown as compact JSON.
    """
    if not isinstance(schema, Mapping) or _depth > 6:
        return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    if isinstance(schema.get("enum"), list):
        return " | ".join(json.dumps(value, ensure_ascii=False) for value in schema["enum"])
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alternatives, list):
        return " | ".join(schema_signature(item, _depth + 1) for item in alternatives)
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(schema_signature({**schema, "type": item}, _depth + 1) for item in kind)
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if not isinstance(properties, Mapping) or not properties:
            return "{}" if "additionalProperties" not in schema else "object"
        required = schema.get("required") or []
        fields = []
        for name, item in properties.items():
            mark = "" if name in required else "?"
            text = f"{name}{mark}: {schema_signature(item, _depth + 1)}"
            if isinstance(item, Mapping) and isinstance(item.get("description"), str):
                text += f" ({item['description'].strip()})"
            fields.append(text)
        return "{" + ", ".join(fields) + "}"
    if kind == "array":
        items = schema.get("items")
        return f"list of ({schema_signature(items, _depth + 1)})" if items else "list"
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"{kind} {low}..{high}"
        if low is not None:
            return f"{kind} >= {low}"
        if high is not None:
            return f"{kind} <= {high}"
        return str(kind)
    if kind == "string" and isinstance(schema.get("format"), str):
        return f"string ({schema['format']})"
    if isinstance(kind, str):
        return kind
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- the grammar


def tool_grammar(config: ToolConfig, response_format: ResponseFormat = TEXT_FORMAT) -> str | None:
    """The GBNF grammar for this request's output, or ``None`` when tools are off."""
    if not config.active:
        return None
    key = json.dumps(
        {
            "tools": [[tool.name, tool.parameters_json] for tool in config.candidates()],
            "mode": config.mode,
            "parallel": config.parallel,
            "format": (
                (response_format.schema_json or '{"type":"object"}')
                if response_format.constrains
                else None
            ),
        },
        ensure_ascii=False,
    )
    return _cached_tool_grammar(key)


def _literal(text: str) -> str:
    """A GBNF string literal."""
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


@lru_cache(maxsize=64)
def _cached_tool_grammar(key: str) -> str:
    spec = json.loads(key)
    builder = GrammarBuilder()
    alternatives: list[str] = []
    for index, (name, parameters_json) in enumerate(spec["tools"]):
        args_rule = builder.add_schema(
            json.loads(parameters_json), f"call{index}-args", param="tools"
        )
        alternatives.append(
            builder.add_rule(
                f"call{index}",
                " ".join(
                    (
                        '"{" space',
                        _literal('"name"'),
                        'space ":" space',
                        _literal(json.dumps(name, ensure_ascii=False)),
                        'space "," space',
                        _literal('"arguments"'),
                        'space ":" space',
                        args_rule,
                        '"}" space',
                    )
                ),
            )
        )
    call = builder.add_rule("call", " | ".join(alternatives))
    opening, closing = _literal(TOOL_CALL_OPEN + "\n"), _literal("\n" + TOOL_CALL_CLOSE)
    block = builder.add_rule("tool-call", f"{opening} {call} {closing}")
    calls = (
        builder.add_rule("tool-calls", f'{block} ("\\n" {block}){{0,{MAX_PARALLEL_CALLS - 1}}}')
        if spec["parallel"]
        else block
    )
    if spec["mode"] == "required":
        builder.add_rule("root", calls)
    else:
        if spec["format"] is not None:
            answer = builder.add_schema(
                json.loads(spec["format"]), "answer", param="response_format"
            )
        else:
            answer = builder.add_rule("answer", r"[^<\x00-\x20] [^\x00]*")
        builder.add_rule("root", f"{calls} | {answer}")
    return builder.grammar(param="tools")


# --------------------------------------------------------------------------- parsing output


@dataclass(frozen=True, kw_only=True, slots=True)
class AssistantReply:
    """The assistant message parsed from generated text, in OpenAI's shape."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = field(default=())
    finish_reason: FinishReason = "stop"

    def to_message(self) -> dict[str, Any]:
        """``choices[0].message`` for a chat completion response."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return message


def new_call_id() -> str:
    """``call_`` + 24 random letters and digits, like OpenAI's ids."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def parse_tool_output(
    text: str,
    config: ToolConfig,
    *,
    finish_reason: Literal["stop", "length"] = "stop",
    make_id: Callable[[], str] = new_call_id,
) -> AssistantReply:
    """Turn generated text into content or tool calls.

    Calls are read only when tools are active and the text starts with the call marker (the
    grammar guarantees that shape). Output that does not parse as calls to known tools (a
    different engine, a truncated call) is returned as plain content rather than an error,
    so the client always gets what the model said. Complete calls survive a truncated tail;
    a call cut off by ``max_tokens`` with none complete before it is no content at all (the
    half-written markup means nothing to a user), only ``finish_reason: length``.
    """
    stripped = text.lstrip()
    if not config.active or not stripped.startswith(TOOL_CALL_OPEN):
        return AssistantReply(content=text, finish_reason=finish_reason)
    allowed = {tool.name for tool in config.candidates()}
    calls: list[ToolCall] = []
    seen: set[tuple[str, str]] = set()
    position = 0
    for match in _CALL_BLOCK_RE.finditer(stripped):
        if stripped[position : match.start()].strip():
            break  # text between blocks: stop at the first thing that is not a call
        position = match.end()
        parsed = _parse_call(match.group(1), allowed)
        if parsed is None:
            return AssistantReply(content=text, finish_reason=finish_reason)
        name, arguments = parsed
        if (name, arguments) in seen:
            continue
        seen.add((name, arguments))
        calls.append(ToolCall(id=make_id(), name=name, arguments=arguments))
    if not calls:
        if finish_reason == "length" and not _CALL_BLOCK_RE.search(stripped):
            return AssistantReply(content=None, finish_reason=finish_reason)
        return AssistantReply(content=text, finish_reason=finish_reason)
    return AssistantReply(content=None, tool_calls=tuple(calls), finish_reason="tool_calls")


def _parse_call(body: str, allowed: set[str]) -> tuple[str, str] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    name = data.get("name")
    arguments = data.get("arguments", {})
    if not isinstance(name, str) or name not in allowed or not isinstance(arguments, dict):
        return None
    return name, json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
