"""The typed decoders accept what the emitters send and nothing the schema files refuse."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from inference_server.analytics import decoding
from inference_server.analytics.decoding import (
    DECODED_TYPES,
    UntranslatableSchema,
    decode_checked,
    decoder,
    decoders,
    struct_type,
)
from inference_server.analytics.events import (
    ACCEPTED_VERSIONS,
    InferenceEvent,
    PowerEvent,
    encode,
    envelope,
)
from inference_server.analytics.kafka import parse, topic_suffix
from inference_server.analytics.schema import EventSchemaError, schema, validate_event
from inference_server.analytics.store.base import rows_by_table
from tests.server.analytics.test_events import SAMPLES

TOPICS = [(t, v) for t, versions in ACCEPTED_VERSIONS.items() for v in versions]


def _inference_v1() -> dict[str, Any]:
    event = envelope(
        InferenceEvent(model="m", route="/v1/chat", status=200, latency_ms=3.0), node_id="n"
    )
    del event["data"]["served_for"]
    return {**event, "version": 1}


def valid_events(type_: str, version: int) -> list[dict[str, Any]]:
    """Events of one topic version as nodes send them (every optional field set and unset)."""
    if (type_, version) == ("inference", 1):
        return [_inference_v1()]
    events = [envelope(p, node_id="n1") for p in SAMPLES if type_ == p.TYPE]
    if type_ == "inference":
        events.append(
            envelope(
                InferenceEvent(
                    model="m",
                    route="/v1/chat/completions",
                    status=502,
                    latency_ms=7,
                    peer="cloud-1",
                    served_for="edge-1",
                ),
                node_id="cloud-1",
            )
        )
        unset = copy.deepcopy(events[0])
        del unset["data"]["peer"], unset["data"]["served_for"]
        events.append(unset)
    if type_ == "power":
        events.append(envelope(PowerEvent(kind="reading", watts=6, source="ina219"), node_id="n"))
    return events


VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    1.5,
    -0.5,
    200.0,
    2,
    2.0,
    599,
    600,
    2**31 - 1,
    2**31,
    2**63,
    2**64,
    1e300,
    "",
    "x",
    "x" * 65,
    "x" * 300,
    "edge",
    "inference",
    "power_save",
    "00000000-0000-7000-8000-00000000000A",
    "00000000-0000-7000-8000-00000000000a\n",
    [],
    ["a"],
    ["a"] * 300,
    {},
]


def mutations(event: dict[str, Any]) -> list[dict[str, Any]]:
    """Every field of the envelope and of its data removed, or set to each of :data:`VALUES`,
    and an unknown field added at both levels."""
    out = []
    for where in ((), ("data",)):
        target = event if not where else event["data"]
        for key in list(target):
            for value in [*VALUES, ...]:
                changed = copy.deepcopy(event)
                part = changed if not where else changed["data"]
                if value is ...:
                    del part[key]
                else:
                    part[key] = value
                out.append(changed)
        extra = copy.deepcopy(event)
        (extra if not where else extra["data"])["surprise"] = 1
        out.append(extra)
    return out


def reference_accepts(raw: bytes) -> bool:
    try:
        validate_event(orjson.loads(raw))
    except (ValueError, EventSchemaError):
        return False
    return True


@pytest.mark.parametrize(("type_", "version"), TOPICS, ids=str)
def test_nothing_the_reference_refuses_is_accepted(type_: str, version: int) -> None:
    """Every schema file translates (so every keyword in use is handled), and over a few
    thousand mutations of valid events the typed decoder accepts a subset of what the
    reference accepts, and refuses a fair share (so the comparison is not empty)."""
    decode = decoder(type_, version)
    accepted = refused = 0
    for valid in valid_events(type_, version):
        raw = encode(valid)
        assert reference_accepts(raw)
        assert decode_checked(decode, raw) is not None, valid
        for event in mutations(valid):
            raw = json.dumps(event).encode()
            if decode_checked(decode, raw) is None:
                refused += 1
            else:
                accepted += 1
                assert reference_accepts(raw), event
    assert accepted > 20 and refused > 200, (accepted, refused)


def test_the_stricter_cases_fall_back_to_the_reference() -> None:
    """What JSON Schema takes and the typed decoder refuses still reaches the store, as the
    dict the reference checked; what neither takes is rejected with the reference's reason."""
    current = envelope(
        InferenceEvent(model="m", route="/v1/chat", status=200, latency_ms=1.5), node_id="n"
    )
    float_status = {**current, "data": {**current["data"], "status": 200.0}}
    wrong_side = {**current, "data": {**current["data"], "side": "moon"}}
    values = [encode(current), encode(float_status), encode(_inference_v1()), encode(wrong_side)]
    events, rejected = parse([("inference.v2", values)], validate=True)
    assert [type(e) is dict for e in events] == [False, True, True]
    assert len(rejected) == 1 and rejected[0].reason.startswith("inference.v2: data/side: 'moon'")
    assert (rejected[0].topic, rejected[0].value) == ("inference.v2", values[3])
    rows = rows_by_table(events, float)["analytics_inference"]
    assert [r[7] for r in rows] == [200, 200.0, 200]
    assert [r[-1] for r in rows] == [None, None, None]  # served_for: v1 has none


@pytest.mark.parametrize("payload", [*SAMPLES, PowerEvent(kind="reading", watts=4.25)])
def test_typed_rows_are_the_dict_rows(payload: Any) -> None:
    event = envelope(payload, node_id="n1")
    typed, _ = parse([(f"{payload.TYPE}.v{payload.VERSION}", [encode(event)])], validate=True)
    assert (type(typed[0]) is dict) == (payload.TYPE not in DECODED_TYPES)
    assert rows_by_table(typed, float) == rows_by_table([event], float)


def test_a_schema_that_does_not_translate_is_checked_the_slow_way(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    whole = copy.deepcopy(schema("power", 1))
    whole["properties"]["data"]["properties"]["watts"]["multipleOf"] = 0.5
    monkeypatch.setattr(decoding, "schema", lambda t, v: whole if t == "power" else schema(t, v))
    decoding.decoder.cache_clear()
    try:
        assert sorted(decoding.decoders()) == ["inference.v1", "inference.v2"]
    finally:
        decoding.decoder.cache_clear()
    assert "power.v1 is checked the slow way: PowerV1DataWatts: multipleOf" in caplog.text


def test_decoded_topics_and_their_suffixes() -> None:
    assert sorted(decoders()) == ["inference.v1", "inference.v2", "power.v1"]
    assert topic_suffix("prime_spark.inference.v2") == "inference.v2"
    assert topic_suffix("site.a.prime_spark.power.v1") == "power.v1"


@pytest.mark.parametrize(
    "node",
    [
        {"type": "object", "properties": {}},  # additional properties allowed
        {"type": "string", "format": "uuid"},  # a format with nothing checking it
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        {"type": ["string", "integer"]},
        {"type": "number", "exclusiveMinimum": 0},
        {"enum": [1.5, 2]},
        {"type": "integer", "minimum": 0.5},
    ],
)
def test_what_is_not_translated_is_said(node: dict[str, Any]) -> None:
    with pytest.raises(UntranslatableSchema):
        struct_type(node, "Node")


def test_a_pattern_is_matched_as_json_schema_matches_it() -> None:
    whole = schema("power", 1)
    decode = decoder("power", 1)
    event = envelope(PowerEvent(kind="reading", watts=1.0), node_id="n")
    assert decode_checked(decode, encode(event)) is not None
    for event_id in (event["event_id"] + "\n", "\u0660" * 8 + event["event_id"][8:]):
        raw = encode({**event, "event_id": event_id})
        assert decode_checked(decode, raw) is None
        assert not reference_accepts(raw)
    assert whole["properties"]["event_id"]["pattern"].endswith("$")
