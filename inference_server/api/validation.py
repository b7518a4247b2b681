"""Request bodies validated with voluptuous into plain dicts, errors naming the field.

OpenAI clients send many optional fields; unknown ones are tolerated (SDKs add new ones every
release) but every field we read is checked here, so handlers work on trusted values and a wrong
type becomes a 400 that says which field and why.
"""

from __future__ import annotations

import json
import re
from typing import Any

import voluptuous as vol
from aiohttp import web

from inference_server.api.errors import ApiError


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise vol.Invalid("expected a number")
    return float(value)


def _float_range(minimum: float, maximum: float) -> vol.All:
    return vol.All(_number, vol.Range(min=minimum, max=maximum))


def _integer(value: Any) -> int:
    """JSON integers only: ``true`` is not 1 and ``"3"`` is not 3 on this API.

    ``3.0`` is 3: JSON Schema counts a number without a fraction as an integer, and so do
    generated clients.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise vol.Invalid("expected an integer")
    return value


def nullable(validator: Any) -> Any:
    """``null`` or whatever ``validator`` accepts, with the validator's own message on error.

    ``vol.Any(None, validator)`` would answer every mistake with "not a valid value".
    """
    checked = vol.Schema(validator)

    def validate(value: Any) -> Any:
        return None if value is None else checked(value)

    return validate


def _int_range(minimum: int, maximum: int | None = None) -> vol.All:
    return vol.All(_integer, vol.Range(min=minimum, max=maximum))


number_range = _float_range
"""A JSON number (not a boolean, not a numeric string) within bounds: for other API modules."""

integer_range = _int_range
"""A JSON integer (``3.0`` counts, ``true`` does not) within bounds: for other API modules."""


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if len(value) > 4:
            raise vol.Invalid("at most 4 stop sequences are allowed")
        return [v for v in value if v]
    raise vol.Invalid("expected a string or a list of strings")


def _unsupported_unless(default: Any, what: str) -> vol.Any:
    """Fields we do not implement are accepted only at their no-op value, never ignored."""
    return vol.Any(None, default, msg=f"{what} is not supported by this server")


def _penalty(value: Any) -> float:
    number = _float_range(-2.0, 2.0)(value)
    if number != 0:
        raise vol.Invalid("presence and frequency penalties are not supported (use 0)")
    return float(number)


SAMPLING: dict[Any, Any] = {
    vol.Optional("model"): nullable(vol.All(str, vol.Length(min=1, max=256))),
    vol.Optional("max_tokens"): nullable(_int_range(1)),
    vol.Optional("temperature"): nullable(_float_range(0.0, 2.0)),
    vol.Optional("top_p"): nullable(_float_range(0.0, 1.0)),
    vol.Optional("stop"): _stop,
    vol.Optional("seed"): nullable(_int_range(-(2**63), 2**63 - 1)),
    vol.Optional("stream"): vol.Any(None, bool, msg="expected a boolean"),
    vol.Optional("stream_options"): vol.Any(
        None, {vol.Optional("include_usage"): vol.Any(bool, msg="expected a boolean")}
    ),
    vol.Optional("n"): _unsupported_unless(1, "n other than 1"),
    vol.Optional("logprobs"): _unsupported_unless(False, "logprobs"),
    vol.Optional("top_logprobs"): _unsupported_unless(0, "top_logprobs"),
    vol.Optional("presence_penalty"): nullable(_penalty),
    vol.Optional("frequency_penalty"): nullable(_penalty),
    vol.Optional("user"): vol.Any(None, str, msg="expected a string"),
}

CHAT_SCHEMA = vol.Schema(
    {
        **SAMPLING,
        vol.Required("messages"): vol.All(list, vol.Length(min=1, msg="at least one message")),
        vol.Optional("max_completion_tokens"): nullable(_int_range(1)),
        vol.Optional("response_format"): vol.Any(None, dict, msg="expected an object"),
        vol.Optional("tools"): vol.Any(None, list, msg="expected a list of tools"),
        vol.Optional("tool_choice"): vol.Any(None, str, dict, msg="expected a string or object"),
        vol.Optional("parallel_tool_calls"): vol.Any(None, bool, msg="expected a boolean"),
    },
    extra=vol.ALLOW_EXTRA,
)

COMPLETION_SCHEMA = vol.Schema(
    {
        **SAMPLING,
        vol.Required("prompt"): vol.Any(
            str,
            vol.All([str], vol.Length(min=1, max=1)),
            msg="expected a string (or a list holding one string)",
        ),
        vol.Optional("echo"): _unsupported_unless(False, "echo"),
        vol.Optional("best_of"): _unsupported_unless(1, "best_of other than 1"),
        vol.Optional("suffix"): _unsupported_unless("", "suffix"),
    },
    extra=vol.ALLOW_EXTRA,
)

EMBEDDINGS_SCHEMA = vol.Schema(
    {
        vol.Optional("model"): nullable(vol.All(str, vol.Length(min=1, max=256))),
        vol.Required("input"): vol.Any(
            vol.All(str, vol.Length(min=1, msg="the input must not be empty")),
            vol.All(
                [vol.All(str, vol.Length(min=1, msg="an input must not be empty"))],
                vol.Length(min=1, max=256, msg="between 1 and 256 inputs"),
            ),
            msg="expected a non-empty string or a list of non-empty strings",
        ),
        vol.Optional("encoding_format"): vol.In(("float", "base64")),
        vol.Optional("dimensions"): _unsupported_unless(None, "dimensions"),
        vol.Optional("user"): vol.Any(None, str, msg="expected a string"),
    },
    extra=vol.ALLOW_EXTRA,
)


def _param(error: vol.Invalid) -> str:
    parts: list[str] = []
    for part in error.path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            # A key of "" is named as such, so the message never loses its subject.
            parts.append(("." if parts else "") + (str(part) or '""'))
    return "".join(parts)


def validate(schema: vol.Schema, data: Any) -> dict[str, Any]:
    """Run a schema; the first error becomes a 400 naming the field (OpenAI's ``param``)."""
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object", code="invalid_body")
    try:
        result: dict[str, Any] = schema(data)
    except vol.MultipleInvalid as err:
        first = err.errors[0]
        param = _param(first)
        message = first.error_message or str(first)
        if message == "required key not provided":
            message = "is required"
        elif message == "extra keys not allowed":
            message = "is not a known field"
        raise ApiError(
            400, f"{param}: {message}" if param else message, param=param or None
        ) from err
    return result


def query_integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter, as OpenAPI's ``type: integer`` reads it.

    ``0.5``, ``1e3``, `` 5`` and ``5_0`` are refused, not truncated or parsed the Python way.
    """
    given = request.query.getall(name, [])
    if not given:
        return default
    if len(given) > 1 or not re.fullmatch(r"-?[0-9]+", given[0]):
        raise ApiError(400, f"{name}: expected an integer", param=name)
    value = int(given[0])
    if not low <= value <= high:
        raise ApiError(400, f"{name}: must be between {low} and {high}", param=name)
    return value


def query_flag(request: web.Request, name: str) -> bool | None:
    """A ``0``/``1`` query parameter (absent: ``None``); anything else is a 400, not "false"."""
    given = request.query.getall(name, [])
    if not given:
        return None
    if len(given) > 1 or given[0] not in ("0", "1"):
        raise ApiError(400, f"{name}: expected 0 or 1", param=name)
    return given[0] == "1"


async def read_json(request: web.Request) -> Any:
    """Parse the body; malformed JSON is the client's mistake (400), not ours."""
    return parse_json(await read_body(request))


async def read_body(request: web.Request) -> bytes:
    """The raw body (a request without one is a 400); :func:`parse_json` reads it."""
    if not request.can_read_body:
        raise ApiError(400, "The request needs a JSON body", code="invalid_body")
    return await request.read()


def parse_json(raw: bytes) -> Any:
    """A body as JSON; malformed JSON is the client's mistake (400), not ours."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        detail = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8"
        raise ApiError(
            400, f"The request body is not valid JSON: {detail}", code="invalid_json"
        ) from err
