"""``response_format`` → a GBNF grammar that llama.cpp enforces while sampling.

A small local model cannot be trusted to emit valid JSON, let alone JSON that fits a schema;
a grammar makes it impossible to do otherwise. We reuse llama-cpp-python's JSON-schema converter
(the port of llama.cpp's ``json_schema_to_grammar``) and only patch what matters for correctness:

* integer ``minimum``/``maximum`` (the Python port ignores them; HA tools use them, e.g. a
  brightness of 0-100), enforced exactly with digit-range rules;
* string characters exclude raw control characters, so every output is valid JSON (the port
  allows a bare newline inside a string, which ``json.loads`` rejects);
* ``"type": [..]`` unions keep the other keywords (bounds, properties) of each member.

Keywords the converter does not understand (``not``, ``if``, number bounds, ...) are ignored:
the output then still matches the rest of the schema. Objects never get properties the schema
does not list unless it says ``additionalProperties``, which keeps tiny models on track.

Compiled grammars are cached (LRU) by the schema's JSON text, because Home Assistant sends the
same schema and tools with every request.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from llama_cpp.llama_grammar import RESERVED_NAMES, BuiltinRule, SchemaConverter

from inference_server.chat.errors import ChatFormatError

MAX_REPETITIONS = 1000
"""Largest minItems/maxItems/minLength/maxLength we expand into grammar rules (DoS guard)."""
MAX_GRAMMAR_CHARS = 256 * 1024
"""A grammar bigger than this is refused: it would take llama.cpp longer to build than to use."""
_MAX_INT_DIGITS = 16
"""Unbounded integers are capped at 16 digits, as the converter does for ``integer``."""

_JSON_CHAR = BuiltinRule(
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    [],
)
"""One JSON string character: anything but a quote, backslash or control char, or an escape."""

_REPETITION_KEYS = ("minItems", "maxItems", "minLength", "maxLength")
_CONVERTER_ERRORS = (
    AssertionError,
    AttributeError,
    IndexError,
    KeyError,
    RecursionError,
    TypeError,
    ValueError,
)
"""What llama_cpp's converter raises on schemas it cannot handle (it uses asserts for many)."""


# --------------------------------------------------------------------------- integer ranges


@dataclass(frozen=True, slots=True)
class DigitRun:
    """Decimal numbers written ``prefix``, one digit in ``low..high``, then ``tail_min`` to
    ``tail_max`` free digits. A union of runs describes an integer interval exactly."""

    prefix: str
    low: int
    high: int
    tail_min: int
    tail_max: int

    def gbnf(self) -> str:
        parts: list[str] = []
        if self.prefix:
            parts.append(f'"{self.prefix}"')
        parts.append(f'"{self.low}"' if self.low == self.high else f"[{self.low}-{self.high}]")
        if self.tail_max == 1 and self.tail_min == 1:
            parts.append("[0-9]")
        elif self.tail_max > 0:
            count = (
                f"{self.tail_min}"
                if self.tail_min == self.tail_max
                else f"{self.tail_min},{self.tail_max}"
            )
            parts.append(f"[0-9]{{{count}}}")
        return " ".join(parts)

    def regex(self) -> str:
        """The same run as a Python regex (used by tests to check runs against brute force)."""
        digit = str(self.low) if self.low == self.high else f"[{self.low}-{self.high}]"
        return f"{self.prefix}{digit}[0-9]{{{self.tail_min},{self.tail_max}}}"


def _same_length_runs(low: int, high: int, length: int) -> list[DigitRun]:
    """Runs for ``low..high`` where both have ``length`` digits: greedily take the largest
    aligned block (``d000..d999``) starting at ``low``, widening the digit while it fits."""
    runs: list[DigitRun] = []
    start = low
    while start <= high:
        free = 0
        while (
            free + 1 < length
            and start % 10 ** (free + 1) == 0
            and start + 10 ** (free + 1) - 1 <= high
        ):
            free += 1
        step = 10**free
        digit = (start // step) % 10
        count = 1
        while digit + count <= 9 and start + (count + 1) * step - 1 <= high:
            count += 1
        end = start + count * step - 1
        text = str(start)
        runs.append(
            DigitRun(
                prefix=text[: length - free - 1],
                low=digit,
                high=digit + count - 1,
                tail_min=free,
                tail_max=free,
            )
        )
        start = end + 1
    return runs


def natural_runs(low: int, high: int | None) -> list[DigitRun]:
    """Runs matching exactly the integers ``low..high`` (``high=None``: unbounded, up to 16
    digits), for ``0 <= low``, written without leading zeros."""
    runs: list[DigitRun] = []
    length = len(str(low))
    start = low
    while high is None or start <= high:
        top = 10**length - 1
        if high is not None:
            top = min(top, high)
        runs.extend(_same_length_runs(start, top, length))
        start = top + 1
        length += 1
        if high is None:
            if length <= _MAX_INT_DIGITS:
                runs.append(DigitRun("", 1, 9, length - 1, _MAX_INT_DIGITS - 1))
            break
    return runs


def integer_range_alternatives(low: int | None, high: int | None) -> list[str]:
    """GBNF alternatives for the JSON integers in ``[low, high]`` (either side may be open)."""
    if low is not None and high is not None and low > high:
        raise ChatFormatError(f"minimum {low} is greater than maximum {high}")
    alternatives: list[str] = []
    if low is None or low < 0:
        magnitude_low = -high if high is not None and high < 0 else 1
        magnitude_high = None if low is None else -low
        negative = " | ".join(r.gbnf() for r in natural_runs(magnitude_low, magnitude_high))
        alternatives.append(f'"-" ({negative})')
    if high is None or high >= 0:
        alternatives.extend(r.gbnf() for r in natural_runs(max(low or 0, 0), high))
    return alternatives


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def integer_bounds(schema: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Inclusive integer bounds from minimum/maximum/exclusive* (draft 4 booleans or numbers)."""
    low: int | None = None
    high: int | None = None
    minimum = _number(schema.get("minimum"))
    maximum = _number(schema.get("maximum"))
    if minimum is not None:
        low = (
            math.floor(minimum) + 1
            if schema.get("exclusiveMinimum") is True
            else math.ceil(minimum)
        )
    if maximum is not None:
        high = (
            math.ceil(maximum) - 1
            if schema.get("exclusiveMaximum") is True
            else math.floor(maximum)
        )
    exclusive_min = _number(schema.get("exclusiveMinimum"))
    exclusive_max = _number(schema.get("exclusiveMaximum"))
    if exclusive_min is not None:
        value = math.floor(exclusive_min) + 1
        low = value if low is None else max(low, value)
    if exclusive_max is not None:
        value = math.ceil(exclusive_max) - 1
        high = value if high is None else min(high, value)
    return low, high


# --------------------------------------------------------------------------- the converter


_SchemaConverterBase: Any = SchemaConverter
"""Typed as ``Any``: llama_cpp's converter has no annotations, and mypy --strict would flag
every call into it."""


class _Converter(_SchemaConverterBase):  # type: ignore[misc]
    """llama_cpp's converter with the fixes listed in the module docstring."""

    def __init__(self) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def visit(self, schema: Any, name: str) -> str:
        if not isinstance(schema, Mapping):
            raise ChatFormatError(f"expected a schema object, got {json.dumps(schema)}")
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
        schema_type = schema.get("type")
        if isinstance(schema_type, list) and not any(
            key in schema for key in ("$ref", "oneOf", "anyOf", "const", "enum")
        ):
            members = [{**schema, "type": member} for member in schema_type]
            return str(self._add_rule(rule_name, self._generate_union_rule(name, members)))
        if schema_type == "integer" and not any(
            key in schema for key in ("$ref", "oneOf", "anyOf", "const", "enum")
        ):
            low, high = integer_bounds(schema)
            if low is not None or high is not None:
                alternatives = " | ".join(integer_range_alternatives(low, high))
                return str(self._add_rule(rule_name, f"({alternatives}) space"))
        return str(super().visit(schema, name))

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        return str(super()._add_primitive(name, _JSON_CHAR if name == "char" else rule))


class GrammarBuilder:
    """Collects several schemas and hand-written rules into one grammar (root rule ``root``).

    Tool calling needs this: one grammar holding every tool's arguments schema plus the
    wrapper rules around them. Each schema's local ``$ref``s are renamed under its own tag
    first, because the converter names referenced rules by their last path segment only and
    two tools with a ``#/$defs/Item`` each would otherwise share one rule.
    """

    def __init__(self) -> None:
        self._converter = _Converter()
        self._defs: dict[str, Any] = {}

    def add_schema(self, schema: Mapping[str, Any], name: str, *, param: str) -> str:
        """Add rules for ``schema`` under ``name``; return the rule that matches it."""
        check_schema_limits(schema, param)
        tag = _rule_safe(name)
        namespaced = _namespace_refs(schema, tag, param)
        try:
            resolved = self._converter.resolve_refs(
                {"$defs": namespaced.defs, "schema": namespaced.schema}, f"schema-{tag}"
            )
            return str(self._converter.visit(resolved["schema"], name))
        except ChatFormatError as err:
            raise ChatFormatError(err.detail, param=param) from err
        except _CONVERTER_ERRORS as err:
            raise ChatFormatError(
                f"cannot turn this JSON schema into a grammar ({_describe(err)})", param=param
            ) from err

    def add_rule(self, name: str, body: str) -> str:
        return str(self._converter._add_rule(name, body))

    def grammar(self, *, param: str) -> str:
        text = str(self._converter.format_grammar())
        if len(text) > MAX_GRAMMAR_CHARS:
            raise ChatFormatError(
                f"the schema is too large to enforce ({len(text)} grammar characters, at most "
                f"{MAX_GRAMMAR_CHARS})",
                param=param,
            )
        return text


@dataclass(frozen=True, slots=True)
class _Namespaced:
    schema: Any
    defs: dict[str, Any]


def _rule_safe(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in name) or "x"


def _namespace_refs(schema: Mapping[str, Any], tag: str, param: str) -> _Namespaced:
    """Copy ``schema`` with every ``#/...`` ref pointing into a ``$defs`` entry unique to
    ``tag``; only local refs are allowed (we never fetch remote schemas)."""
    root = copy.deepcopy(dict(schema))
    defs: dict[str, Any] = {}

    def target(pointer: str) -> Any:
        node: Any = root
        for raw in pointer.lstrip("#").split("/")[1:] if pointer != "#" else []:
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, Mapping) and key in node:
                node = node[key]
            else:
                raise ChatFormatError(f"$ref {pointer} points to nothing", param=param)
        return node

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, Mapping):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#"):
                raise ChatFormatError(
                    f"only local $refs (#/...) are supported, not {ref}", param=param
                )
            key = f"{tag}-{_rule_safe(ref.lstrip('#/') or 'root')}"
            if key not in defs:
                defs[key] = {}  # placeholder first: recursive schemas refer to themselves
                defs[key] = rewrite(target(ref))
            return {**{k: v for k, v in node.items() if k != "$ref"}, "$ref": f"#/$defs/{key}"}
        return {key: rewrite(value) for key, value in node.items()}

    return _Namespaced(schema=rewrite(root), defs=defs)


def check_schema_limits(schema: Any, param: str, _depth: int = 0) -> None:
    """Refuse schemas whose expansion would be huge (``maxItems: 1000000``) or absurdly deep."""
    if _depth > 64:
        raise ChatFormatError("the schema nests deeper than 64 levels", param=param)
    if isinstance(schema, list):
        for item in schema:
            check_schema_limits(item, param, _depth + 1)
    elif isinstance(schema, Mapping):
        for key in _REPETITION_KEYS:
            value = schema.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_REPETITIONS:
                raise ChatFormatError(
                    f"{key} {value} is larger than this server can enforce ({MAX_REPETITIONS})",
                    param=param,
                )
        for value in schema.values():
            check_schema_limits(value, param, _depth + 1)


def _describe(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------- response_format


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseFormat:
    """A validated ``response_format``. ``schema_json`` is the schema as JSON text: hashable,
    and the cache key for its grammar."""

    type: Literal["text", "json_object", "json_schema"]
    schema_json: str | None = None
    name: str | None = None
    strict: bool = False

    @property
    def constrains(self) -> bool:
        return self.type != "text"

    def schema(self) -> dict[str, Any]:
        """The JSON schema the output must satisfy (``{"type": "object"}`` for json_object)."""
        if self.schema_json is None:
            return {"type": "object"}
        loaded: dict[str, Any] = json.loads(self.schema_json)
        return loaded


TEXT_FORMAT = ResponseFormat(type="text")


def parse_response_format(raw: object, *, param: str = "response_format") -> ResponseFormat:
    """Validate OpenAI's ``response_format`` (``None`` means text)."""
    if raw is None:
        return TEXT_FORMAT
    if not isinstance(raw, Mapping):
        raise ChatFormatError('expected an object like {"type": "json_object"}', param=param)
    kind = raw.get("type")
    if kind == "text":
        return TEXT_FORMAT
    if kind == "json_object":
        return ResponseFormat(type="json_object")
    if kind != "json_schema":
        raise ChatFormatError(
            f"expected one of text, json_object, json_schema (got {json.dumps(kind)})",
            param=f"{param}.type",
        )
    spec = raw.get("json_schema")
    where = f"{param}.json_schema"
    if not isinstance(spec, Mapping):
        raise ChatFormatError("expected an object with 'name' and 'schema'", param=where)
    name = spec.get("name")
    if not isinstance(name, str):
        # OpenAI requires the name; so does the document.
        message = "is required" if name is None else "expected a string"
        raise ChatFormatError(message, param=f"{where}.name")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise ChatFormatError("expected a boolean", param=f"{where}.strict")
    schema = spec.get("schema")
    if schema is None:
        # OpenAI's schema is optional: without one, any JSON object (as json_object).
        return ResponseFormat(type="json_schema", name=name, strict=bool(strict))
    if not isinstance(schema, Mapping):
        raise ChatFormatError("expected a JSON schema object", param=f"{where}.schema")
    fmt = ResponseFormat(
        type="json_schema",
        schema_json=json.dumps(schema, ensure_ascii=False, separators=(",", ":")),
        name=name,
        strict=bool(strict),
    )
    # Compile now: a schema we cannot enforce is the client's 400, not a failure mid-generation.
    schema_grammar(fmt.schema_json or "", param=f"{where}.schema")
    return fmt


def response_format_grammar(fmt: ResponseFormat) -> str | None:
    """The grammar that enforces ``fmt``, or ``None`` for plain text."""
    if not fmt.constrains:
        return None
    return schema_grammar(fmt.schema_json or '{"type":"object"}', param="response_format")


def schema_grammar(schema_json: str, *, param: str) -> str:
    """GBNF (root rule ``root``) for the JSON schema given as JSON text; cached."""
    try:
        return _cached_schema_grammar(schema_json)
    except ChatFormatError as err:
        raise ChatFormatError(err.detail, param=param) from err


@lru_cache(maxsize=128)
def _cached_schema_grammar(schema_json: str) -> str:
    schema = json.loads(schema_json)
    builder = GrammarBuilder()
    rule = builder.add_schema(schema, "output", param="")
    builder.add_rule("root", rule)
    return builder.grammar(param="")
