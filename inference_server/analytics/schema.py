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

An event this node builds itself (:func:`validate_own_event`) has its envelope right by
construction (a fresh UUIDv7, the payload class's type and version, the clock, the node id the
producer checked once) and only its ``data`` is checked against the topic's schema: half the
cost of the whole envelope (0.9 against 1.6 µs, most of it the id's pattern), at 100k events/s
a fifteenth of the one core a process has. Every other event is checked whole.
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


def _data_validators() -> dict[tuple[str, int], Any]:
    """The ``data`` part of each known topic version's schema (the envelope is the same in
    every file: tests/server/analytics/test_events.py holds them together)."""
    validators = {}
    for type_, versions in ACCEPTED_VERSIONS.items():
        for version in versions:
            whole = schema(type_, version)
            part = {"$schema": whole["$schema"], **whole["properties"]["data"]}
            validators[type_, version] = jsonschema_rs.validator_for(part)
    return validators


_DATA = _data_validators()


def validate_own_event(event: dict[str, Any]) -> None:
    """:func:`validate_event` of an envelope :func:`~.events.envelope_data` built on this node
    with a valid node id: its ``data`` checked, the rest trusted (see the module's text). A
    failure is explained by the whole check, so the message is the same as it would be."""
    fast = _DATA.get((event["type"], event["version"]))
    if fast is not None and fast.is_valid(event["data"]):
        return
    validate_event(event)  # raises: the whole check refuses what a part of it refused
    raise EventSchemaError(f"{event['type']}.v{event['version']}: data: refused")


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
