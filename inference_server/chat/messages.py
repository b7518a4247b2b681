"""Typed, validated OpenAI chat messages.

The API hands us ``body["messages"]`` as decoded JSON. Everything downstream (templates, tool
prompts) works on :class:`ChatMessage` values instead, so a template never meets a ``None`` where
it expected text, and a client's mistake is reported once, here, naming the exact field
(``messages[2].role: expected one of ...``) rather than surfacing as a Jinja error or a 500.

We are lenient where OpenAI clients differ harmlessly (unknown keys are ignored, ``arguments`` may
arrive as an object instead of a JSON string, a tool message may omit ``name``) and strict where
guessing would change the meaning (unknown roles, image parts we cannot see).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from inference_server.chat.errors import ChatFormatError

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "developer", "user", "assistant", "tool")

_UNSUPPORTED_PARTS = {
    "image_url": "image",
    "input_image": "image",
    "image": "image",
    "input_audio": "audio",
    "audio": "audio",
    "file": "file",
    "input_file": "file",
}
"""Content part types OpenAI defines that a text-only model cannot honour; named in the error."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCall:
    """One function call made by the assistant, in OpenAI's shape.

    ``arguments`` stays a JSON string (as OpenAI sends and returns it) so a call we did not
    generate round-trips unchanged; :meth:`arguments_object` decodes it for templates.
    """

    id: str
    name: str
    arguments: str

    def arguments_object(self) -> Any:
        """The decoded arguments, or the raw string when they are not valid JSON."""
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ChatMessage:
    """One message; ``content`` is plain text (text parts joined), ``None`` only for an
    assistant turn that consists solely of tool calls."""

    role: Role
    content: str | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    """For ``role == "tool"``: the id of the call this message answers."""


def parse_messages(raw: object, *, field: str = "messages") -> tuple[ChatMessage, ...]:
    """Validate ``body["messages"]`` and return typed messages.

    Raises :class:`ChatFormatError` naming the first offending field. A tool message without
    ``name`` gets the function name from the assistant call it answers, because prompt formats
    (ours and most GGUF templates) show the tool's name next to its result.
    """
    if not isinstance(raw, list):
        raise ChatFormatError("expected a list of messages", param=field)
    if not raw:
        raise ChatFormatError("at least one message is required", param=field)
    messages: list[ChatMessage] = []
    call_names: dict[str, str] = {}
    for index, item in enumerate(raw):
        message = _parse_message(item, f"{field}[{index}]", call_names)
        for call in message.tool_calls:
            call_names[call.id] = call.name
        messages.append(message)
    return tuple(messages)


def _parse_message(item: object, where: str, call_names: Mapping[str, str]) -> ChatMessage:
    if not isinstance(item, Mapping):
        raise ChatFormatError("expected an object with 'role' and 'content'", param=where)
    role = item.get("role")
    if role not in ROLES:
        shown = "missing" if role is None else f"got {json.dumps(role)}"
        raise ChatFormatError(
            f"expected one of {', '.join(ROLES)} ({shown})", param=f"{where}.role"
        )
    role = cast("Role", role)
    name = _optional_str(item.get("name"), f"{where}.name")
    raw_content = item.get("content")

    if role == "assistant":
        tool_calls = _parse_tool_calls(item.get("tool_calls"), f"{where}.tool_calls")
        content = None if raw_content is None else _content(raw_content, f"{where}.content")
        if content is None and not tool_calls:
            content = ""
        return ChatMessage(role=role, content=content, name=name, tool_calls=tool_calls)

    if item.get("tool_calls") is not None:
        raise ChatFormatError(
            "only assistant messages carry tool calls", param=f"{where}.tool_calls"
        )
    if raw_content is None:
        raise ChatFormatError("is required for this role", param=f"{where}.content")
    content = _content(raw_content, f"{where}.content")

    if role == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise ChatFormatError(
                "is required on tool messages (the id of the call this result answers)",
                param=f"{where}.tool_call_id",
            )
        return ChatMessage(
            role=role,
            content=content,
            name=name or call_names.get(call_id),
            tool_call_id=call_id,
        )
    return ChatMessage(role=role, content=content, name=name)


def _optional_str(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ChatFormatError("expected a string", param=where)
    return value or None


def _content(value: object, where: str) -> str:
    """A string, or a list of text parts joined by newlines (how OpenAI-compatible servers
    flatten parts for text-only templates)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ChatFormatError("expected a string or a list of content parts", param=where)
    texts: list[str] = []
    for index, part in enumerate(value):
        part_where = f"{where}[{index}]"
        if not isinstance(part, Mapping):
            raise ChatFormatError('expected an object like {"type": "text", ...}', param=part_where)
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text", "refusal"):
            key = "refusal" if kind == "refusal" else "text"
            text = part.get(key)
            if not isinstance(text, str):
                raise ChatFormatError("expected a string", param=f"{part_where}.{key}")
            texts.append(text)
        elif isinstance(kind, str) and kind in _UNSUPPORTED_PARTS:
            raise ChatFormatError(
                f"{_UNSUPPORTED_PARTS[kind]} content ('{kind}') is not supported yet; "
                "this server accepts text parts only",
                param=f"{part_where}.type",
            )
        else:
            raise ChatFormatError("expected 'text'", param=f"{part_where}.type")
    return "\n".join(texts)


def _parse_tool_calls(value: object, where: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ChatFormatError("expected a list of tool calls", param=where)
    calls: list[ToolCall] = []
    for index, raw in enumerate(value):
        call_where = f"{where}[{index}]"
        if not isinstance(raw, Mapping):
            raise ChatFormatError("expected an object", param=call_where)
        kind = raw.get("type", "function")
        if kind != "function":
            raise ChatFormatError("expected 'function'", param=f"{call_where}.type")
        call_id = raw.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise ChatFormatError("expected a non-empty string", param=f"{call_where}.id")
        function = raw.get("function")
        if not isinstance(function, Mapping):
            raise ChatFormatError(
                "expected an object with 'name' and 'arguments'", param=f"{call_where}.function"
            )
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ChatFormatError(
                "expected a non-empty string", param=f"{call_where}.function.name"
            )
        calls.append(
            ToolCall(
                id=call_id,
                name=name,
                arguments=_arguments(function.get("arguments"), f"{call_where}.function.arguments"),
            )
        )
    return tuple(calls)


def _arguments(value: object, where: str) -> str:
    """OpenAI sends a JSON string; some clients send the object itself. Keep a string."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False)
    raise ChatFormatError("expected a JSON string", param=where)
