"""Validation of events against the JSON Schema files in ``schemas/`` (one per topic version).

The schema files are the contract with every consumer of the topics (our sink, a user's own
Kafka consumer, Grafana queries); the producer checks each event before it is spooled, so a bug
in an emitter fails loudly where it happens instead of poisoning a topic, and the sink checks
again because anything may have been written to a topic by someone else.

Two maintained libraries, each where it is best: ``jsonschema-rs`` (Rust) builds a validator
per schema once and checks a valid event in about a microsecond (``fastjsonschema`` took ~5 µs,
``jsonschema`` ~200 µs: at 100k events/s the check alone would take the whole core); the
reference ``jsonschema`` explains a failure (``best_match``: the field path and the rule) for
the error a person reads. Where they disagree, the stricter answer wins: ``jsonschema-rs``
refuses NaN and infinities, which are not JSON at all.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from inference_server.analytics.events import ACCEPTED_VERSIONS


class EventSchemaError(ValueError):
    """An event does not match its topic's schema; ``str()`` names the topic, field and rule."""


@cache
def schema(type_: str, version: int) -> dict[str, Any]:
    text = resources.files(__package__).joinpath("schemas", f"{type_}.v{version}.json")
    loaded: dict[str, Any] = json.loads(text.read_text("utf-8"))
    return loaded


@cache
def _validator(type_: str, version: int) -> Draft202012Validator:
    return Draft202012Validator(schema(type_, version))


@cache
def _fast(type_: str, version: int) -> Any:
    return jsonschema_rs.validator_for(schema(type_, version))


def validate_event(event: Any) -> None:
    """Raise :class:`EventSchemaError` unless ``event`` is a valid envelope of a known topic."""
    if not isinstance(event, dict):
        raise EventSchemaError(f"an event must be a JSON object, not {type(event).__name__}")
    type_, version = event.get("type"), event.get("version")
    if not isinstance(type_, str) or type_ not in ACCEPTED_VERSIONS:
        known = ", ".join(sorted(ACCEPTED_VERSIONS))
        raise EventSchemaError(f"unknown event type {type_!r} (known: {known})")
    if type(version) is not int or version not in ACCEPTED_VERSIONS[type_]:
        expected = " or ".join(str(v) for v in ACCEPTED_VERSIONS[type_])
        raise EventSchemaError(
            f"{type_}: version {version!r} is not supported (expected {expected})"
        )
    fast = _fast(type_, version)
    if fast.is_valid(event):
        return
    validator = _validator(type_, version)
    error = best_match(validator.iter_errors(event))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(event)"
        raise EventSchemaError(f"{type_}.v{version}: {where}: {error.message}")
    # The reference accepts what jsonschema-rs refuses (a NaN or an infinity): refused.
    for rs_error in fast.iter_errors(event):
        where = "/".join(str(p) for p in rs_error.instance_path) or "(event)"
        raise EventSchemaError(
            f"{type_}.v{version}: {where}: {rs_error.message} (NaN and infinity are not JSON)"
        )
