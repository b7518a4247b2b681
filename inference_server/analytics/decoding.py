"""Decoding and checking an event in one pass, with types derived from the schema files.

The sink must check every event it takes from Kafka (anyone may write to a topic). Decoding
with orjson and then checking with jsonschema-rs costs two passes over each event: the JSON
into Python objects, then those objects into the validator's own values, which is most of the
check's cost. msgspec decodes straight into a typed object and checks every type and bound
while it parses; for an inference event that costs about as much CPU as orjson's decode
alone (bench/RESULTS.md, analytics section: 2.8 against 7.9 µs for both steps before).

The types are not a second copy of the contract: :func:`struct_type` translates the schema
file, and translates only what it can translate exactly or more strictly (below). Anything
msgspec refuses takes the reference way (orjson, then :func:`~.schema.validate_event`), which
accepts what JSON Schema accepts (``200.0`` for an integer, a v1 event on a v2 topic) or says
why not. So this path may only ever accept sooner; it never decides a rejection, and
tests/server/analytics/test_decoding.py holds it to accepting nothing the reference refuses.

Stricter than the schema, on purpose, each case then checked by the reference:

* ``integer`` takes JSON integers only (not ``200.0``) and only within 64 bits (orjson, the
  reference's decoder, reads a larger one as a float; no integer column could hold it);
* ``const`` and ``enum`` take values of the literal's own JSON kind (``2``, not ``2.0``);
* a ``pattern``'s trailing ``$`` is ``\\Z`` (Python's ``$`` also matches before a final
  newline, JSON Schema's does not), and every pattern is ASCII-only (``\\d`` is ``[0-9]``, as
  in JSON Schema's regular expressions);
* ``format`` is an annotation in draft 2020-12, as the reference treats it, and is accepted
  only beside a ``pattern`` (which is what is checked).

Only the types stored in columns (inference and power) are decoded this way: their rows are
read off the typed object. The other types keep their ``data`` as JSON, and a typed object
would write an absent optional field back as ``null``; they are few and take the reference way.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from inference_server.analytics.events import ACCEPTED_VERSIONS
from inference_server.analytics.schema import schema

_LOGGER = logging.getLogger(__name__)

DECODED_TYPES = ("inference", "power")
"""The event types read from Kafka with a typed decoder (see the module's text)."""

INT64 = (-(2**63), 2**63 - 1)
_IGNORED = frozenset({"description", "title", "$schema", "$id", "$comment"})
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)


class UntranslatableSchema(ValueError):
    """A schema uses a keyword (or a form of one) that :func:`struct_type` does not translate."""


def struct_type(node: dict[str, Any], name: str) -> Any:
    """The msgspec type of one schema node (an object becomes a Struct named ``name``)."""
    keys = set(node) - _IGNORED
    if "const" in node:
        _only(keys, {"const"}, name)
        return _literal([node["const"]], name)
    if "enum" in node:
        _only(keys, {"enum"}, name)
        return _literal(node["enum"], name)
    kinds = node.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    nullable = "null" in kinds
    kinds = [k for k in kinds if k != "null"]
    if len(kinds) != 1:
        raise UntranslatableSchema(f"{name}: type {node.get('type')!r}")
    kind = kinds[0]
    built: Any
    if kind == "object":
        _only(keys, {"type", "properties", "required", "additionalProperties"}, name)
        built = _struct(node, name)
    elif kind == "string":
        _only(keys, {"type", "minLength", "maxLength", "pattern", "format"}, name)
        if "format" in node and "pattern" not in node:
            raise UntranslatableSchema(f"{name}: format without a pattern")
        meta = Meta(
            min_length=node.get("minLength"),
            max_length=node.get("maxLength"),
            pattern=_pattern(node["pattern"]) if "pattern" in node else None,
        )
        built = Annotated[str, meta]
    elif kind == "integer":
        _only(keys, {"type", "minimum", "maximum"}, name)
        built = Annotated[int, _int_bounds(node)]
    elif kind == "number":
        _only(keys, {"type", "minimum", "maximum"}, name)
        floats = Meta(ge=node.get("minimum"), le=node.get("maximum"))
        # int first: an integer stays an int, as orjson and the store keep it
        built = Annotated[int, _int_bounds(node)] | Annotated[float, floats]
    elif kind == "boolean":
        _only(keys, {"type"}, name)
        built = bool
    elif kind == "array":
        _only(keys, {"type", "items", "maxItems"}, name)
        item = struct_type(node.get("items", {}), f"{name}Item")
        built = Annotated[list[item], Meta(max_length=node.get("maxItems"))]  # type: ignore[valid-type]
    else:
        raise UntranslatableSchema(f"{name}: type {kind!r}")
    return built | None if nullable else built


def _struct(node: dict[str, Any], name: str) -> Any:
    if node.get("additionalProperties") is not False:
        raise UntranslatableSchema(f"{name}: only objects without additional properties")
    required = set(node.get("required", ()))
    properties = node.get("properties", {})
    if not required <= set(properties):
        raise UntranslatableSchema(f"{name}: a required field has no property")
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for key, sub in properties.items():
        field_type = struct_type(sub, name + "".join(p.title() for p in key.split("_")))
        # An absent optional field reads as None, which is what its column stores.
        fields.append((key, field_type) if key in required else (key, field_type, None))
    return msgspec.defstruct(
        name,
        fields,
        kw_only=True,
        forbid_unknown_fields=True,
        gc=False,  # decoded JSON holds no cycles: millions of them need not be tracked
    )


def _only(keys: set[str], allowed: set[str], name: str) -> None:
    extra = keys - allowed
    if extra:
        raise UntranslatableSchema(f"{name}: {', '.join(sorted(extra))}")


def _literal(values: list[Any], name: str) -> Any:
    kept = [v for v in values if v is not None]
    if not kept or not all(
        isinstance(v, str) or (type(v) is int and INT64[0] <= v <= INT64[1]) for v in kept
    ):
        raise UntranslatableSchema(f"{name}: literals other than strings and integers")
    literal: Any = Literal[tuple(kept)]
    return literal | None if len(kept) < len(values) else literal


def _int_bounds(node: dict[str, Any]) -> Meta:
    low, high = node.get("minimum", INT64[0]), node.get("maximum", INT64[1])
    if not all(type(b) is int for b in (low, high)):
        raise UntranslatableSchema("integer bounds that are not integers")
    return Meta(ge=max(low, INT64[0]), le=min(high, INT64[1]))


def _pattern(pattern: str) -> str:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + "\\Z"
    re.compile(pattern)  # raises on what Python's engine cannot read
    return "(?a)" + pattern


@cache
def decoder(type_: str, version: int) -> msgspec.json.Decoder[Any]:
    """The typed decoder of one topic version's whole envelope."""
    return msgspec.json.Decoder(struct_type(schema(type_, version), f"{type_.title()}V{version}"))


def decoders() -> dict[str, msgspec.json.Decoder[Any]]:
    """The decoders of :data:`DECODED_TYPES`, by topic suffix (``inference.v2``: the spool's
    topic, and a Kafka topic without its prefix). A schema that does not translate (a
    keyword added to a file, say) leaves its topic to the reference check, with a warning: a
    slower sink, never a server that does not start (test_decoding.py fails on it first)."""
    found = {}
    for type_ in DECODED_TYPES:
        for version in ACCEPTED_VERSIONS[type_]:
            try:
                found[f"{type_}.v{version}"] = decoder(type_, version)
            except UntranslatableSchema as err:
                _LOGGER.warning("%s.v%s is checked the slow way: %s", type_, version, err)
    return found


def decode_checked(decoder: msgspec.json.Decoder[Any], value: bytes) -> Any | None:
    """The typed event, or None when msgspec refuses it (the reference then decides)."""
    try:
        return decoder.decode(value)
    except _DECODE_ERRORS:
        return None
