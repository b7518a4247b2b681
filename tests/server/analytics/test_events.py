"""Each topic's dataclass and its schema file agree, and the wire form validates."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from inference_server.analytics.events import (
    ACCEPTED_VERSIONS,
    NODE_ID_MAX_LENGTH,
    PAYLOAD_TYPES,
    AgentTaskEvent,
    InferenceEvent,
    LinkEvent,
    MemoryEvent,
    NodeHealthEvent,
    PowerEvent,
    RoutingEvent,
    envelope,
    envelope_data,
    sink_topics,
    topic_name,
)
from inference_server.analytics.requests import InferenceRecord, _ms, inference_data
from inference_server.analytics.schema import (
    EventSchemaError,
    schema,
    validate_event,
    validate_own_event,
)

SAMPLES = [
    InferenceEvent(model="m", route="/v1/chat/completions", status=200, latency_ms=12.5),
    RoutingEvent(mode="edge_first", decision="cloud", reason="edge queue full", fallback=True),
    PowerEvent(kind="mode_change", mode="power_save", previous_mode="balanced"),
    MemoryEvent(operation="demote", tier="hot", to_tier="warm", bytes=1024),
    AgentTaskEvent(task_id="t1", state="succeeded", duration_ms=40.0),
    NodeHealthEvent(
        ready=True,
        state="ready",
        slots_busy=0,
        slots_total=4,
        queue_depth=0,
        loaded_models=["gemma"],
        uptime_seconds=3.0,
    ),
    LinkEvent(interface="wg0", status="up", handshake_age_seconds=12.0),
]


def test_every_topic_has_a_sample_and_names_are_versioned() -> None:
    assert {type(s) for s in SAMPLES} == set(PAYLOAD_TYPES)
    assert topic_name("prime_spark", "agent_task") == "prime_spark.agent_task.v1"


OPTIONAL: dict[str, set[str]] = {"inference": {"peer", "served_for"}, "routing": {"peer"}}


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.TYPE)
def test_dataclass_matches_schema_file(payload: Any) -> None:
    data_schema = schema(payload.TYPE, payload.VERSION)["properties"]["data"]
    fields = {f.name for f in dataclasses.fields(payload)}
    assert fields == set(data_schema["properties"])
    # Fields added to a topic after release stay optional, so older producers' events
    # (the ingest route, a node not yet upgraded) still validate; everything else is required.
    added = OPTIONAL.get(payload.TYPE, set())
    assert set(data_schema["required"]) == fields - added
    event = envelope(payload, node_id="n1")
    validate_event(event)
    assert len(event["event_id"]) == 36


def test_violations_name_the_topic_and_field() -> None:
    event = envelope(MemoryEvent(operation="get", tier="hot"), node_id="n1")
    event["data"]["tier"] = "lukewarm"
    with pytest.raises(EventSchemaError, match=r"^memory\.v1: data/tier: 'lukewarm' is not one of"):
        validate_event(event)
    event = envelope(LinkEvent(interface="wg0", status="up"), node_id="n1")
    event["version"] = 2
    with pytest.raises(EventSchemaError, match="version 2 is not supported"):
        validate_event(event)
    event = envelope(LinkEvent(interface="wg0", status="up"), node_id="n1")
    event["surprise"] = 1
    with pytest.raises(EventSchemaError, match="Additional properties"):
        validate_event(event)
    with pytest.raises(EventSchemaError, match="JSON object"):
        validate_event([1])


def test_every_schema_file_has_the_same_envelope() -> None:
    """An event built here is checked for its data only (its envelope is right by construction):
    that holds only while the envelope is the same in every file."""
    envelopes = []
    for type_, versions in ACCEPTED_VERSIONS.items():
        for version in versions:
            whole = schema(type_, version)
            properties = dict(whole["properties"])
            del properties["data"]
            assert properties.pop("type") == {"const": type_}
            assert properties.pop("version") == {"const": version}
            envelopes.append((properties, whole["required"], whole["additionalProperties"]))
    assert all(e == envelopes[0] for e in envelopes)
    assert envelopes[0][0]["node_id"]["maxLength"] == NODE_ID_MAX_LENGTH


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.TYPE)
def test_an_own_event_is_refused_with_the_whole_check_s_message(payload: Any) -> None:
    event = envelope(payload, node_id="n1")
    validate_own_event(event)
    field = next(iter(event["data"]))
    event["data"][field] = {"not": "a value of any field"}
    with pytest.raises(EventSchemaError, match=rf"^{payload.TYPE}\.v\d: data/{field}: ") as own:
        validate_own_event(event)
    with pytest.raises(EventSchemaError) as whole:
        validate_event(event)
    assert str(own.value) == str(whole.value)
    event["data"][field] = float("nan")
    with pytest.raises(EventSchemaError, match=rf"data/{field}: "):
        validate_own_event(event)


def test_events_without_the_added_peer_field_still_validate() -> None:
    for payload in (
        InferenceEvent(model="m", route="/v1/chat/completions", status=200, latency_ms=1.0),
        RoutingEvent(mode="edge_first", decision="edge", reason="edge: edge first"),
    ):
        event = envelope(payload, node_id="old-node")
        del event["data"]["peer"]
        validate_event(event)


def test_older_inference_versions_are_still_accepted() -> None:
    """v2 added ``served_for``; v1 events (an old spool, a node not yet upgraded) still pass,
    each against its own schema file, and a version nobody wrote is refused."""
    current = envelope(
        InferenceEvent(
            model="m", route="/v1/chat/completions", status=200, latency_ms=1.0, served_for="edge"
        ),
        node_id="cloud",
    )
    assert current["version"] == 2
    validate_event(current)
    old = {**current, "version": 1, "data": dict(current["data"])}
    del old["data"]["served_for"]
    validate_event(old)
    old["data"]["served_for"] = "edge"  # not a v1 field
    with pytest.raises(EventSchemaError, match=r"^inference\.v1: data: Additional properties"):
        validate_event(old)
    del old["data"]["served_for"]
    # v1 first set no maximum on token counts; a count the stores cannot hold stalled the sink.
    for huge in (2**31, 10**30):
        with pytest.raises(
            EventSchemaError, match=r"^inference\.v1: data/prompt_tokens: .*2147483647"
        ):
            validate_event({**old, "data": {**old["data"], "prompt_tokens": huge}})
    validate_event({**old, "data": {**old["data"], "prompt_tokens": 2**31 - 1}})
    with pytest.raises(EventSchemaError, match=r"version 3 is not supported \(expected 1 or 2\)"):
        validate_event({**current, "version": 3})
    assert "prime_spark.inference.v1" in sink_topics("prime_spark")
    assert "prime_spark.inference.v2" in sink_topics("prime_spark")


def test_a_type_or_version_of_the_wrong_kind_is_refused() -> None:
    """``True == 1`` and ``2.0 == 2`` in Python, and JSON Schema's ``const`` takes ``2.0`` for 2:
    the version must still be a JSON integer, the type a string."""
    event = envelope(
        InferenceEvent(model="m", route="/v1/chat/completions", status=200, latency_ms=1.0),
        node_id="n1",
    )
    validate_event(event)
    for version in (True, 2.0, "2", None):
        with pytest.raises(EventSchemaError, match=r"^inference: version .* is not supported"):
            validate_event({**event, "version": version})
    for type_ in (["inference"], None, 7):
        with pytest.raises(EventSchemaError, match=r"^unknown event type"):
            validate_event({**event, "type": type_})


def test_nan_and_infinity_are_refused_though_the_reference_validator_takes_them() -> None:
    """They are not JSON: the sink (and anyone's consumer) could not read them back."""
    for bad in (float("nan"), float("inf")):
        event = envelope(
            InferenceEvent(model="m", route="/v1/chat/completions", status=200, latency_ms=bad),
            node_id="n1",
        )
        # (an infinity is now also above latency's bound, which may say so first)
        with pytest.raises(
            EventSchemaError, match=r"^inference\.v2: data/latency_ms: .*(not JSON|maximum)"
        ):
            validate_event(event)


def test_the_api_document_carries_every_schema_file() -> None:
    """POST /api/v1/analytics/events is fuzzed against the document: its event schemas must be
    the files the server validates with (they had drifted: states, operations and fields the
    server accepted were missing from the document)."""
    document = json.loads(
        (Path(__file__).parents[3] / "inference_server/api/openapi.json").read_text()
    )
    components = document["components"]["schemas"]
    envelope = {ref["$ref"].rsplit("/", 1)[1] for ref in components["AnalyticsEvent"]["oneOf"]}
    expected: set[str] = set()
    for type_, versions in ACCEPTED_VERSIONS.items():
        for version in versions:
            name = f"AnalyticsEvent_{type_}" + ("" if version == versions[-1] else f"_v{version}")
            expected.add(name)
            file = {k: v for k, v in schema(type_, version).items() if k not in ("$schema", "$id")}
            assert components.get(name) == file, f"{name} is not schemas/{type_}.v{version}.json"
    assert envelope == expected


def test_unbounded_numbers_are_refused_before_a_store_sums_them() -> None:
    """PostgreSQL's float8 sum raises on overflow and the energy integral became NaN in JSON:
    latencies beyond a day and power beyond a megawatt are refused (found by bench/fuzz.py)."""
    inference = envelope(
        InferenceEvent(model="m", route="/v1/completions", status=200, latency_ms=86_400_000.0),
        node_id="n",
    )
    validate_event(inference)
    for field in ("latency_ms", "generation_ms"):
        too_long = {**inference, "data": {**inference["data"], field: 86_400_001.0}}
        with pytest.raises(EventSchemaError, match=rf"data/{field}: .*maximum of 86400000"):
            validate_event(too_long)
    power = envelope(PowerEvent(kind="reading", watts=1_000_000.0, source="meter"), node_id="n")
    validate_event(power)
    with pytest.raises(EventSchemaError, match=r"data/watts: .*maximum of 1000000"):
        validate_event({**power, "data": {**power["data"], "watts": 1.6e73}})


def test_times_past_the_year_9999_are_refused() -> None:
    """PostgreSQL's store turns the time into a ``datetime``, which ends with 9999: a later
    one raised on every retry of its batch, and the sink stopped at that batch's offsets."""
    last = 253402300799  # 9999-12-31T23:59:59Z
    event = envelope(PowerEvent(kind="reading", watts=1.0), node_id="n", occurred_at=last)
    validate_event(event)
    for later in (last + 1, 1e300):
        with pytest.raises(EventSchemaError, match=r"occurred_at: .*maximum of 253402300799"):
            validate_event({**event, "occurred_at": later})


def test_inference_data_is_the_dataclass_dict() -> None:
    """The request path builds the inference event's ``data`` without the dataclass: it must be
    the dataclass's dict, field for field and in order, and its envelope the usual one."""
    record = InferenceRecord(model="gemma", side="cloud", peer="p1", cache="exact",
                             prompt_tokens=7, completion_tokens=3, generation_seconds=0.0123456,
                             served_for="edge-1")  # fmt: skip
    data = inference_data(record, model="gemma", route="/v1/chat/completions", status=200,
                          stream=True, elapsed=0.0456789)  # fmt: skip
    expected = InferenceEvent(
        model="gemma", side="cloud", route="/v1/chat/completions", status=200, prompt_tokens=7,
        completion_tokens=3, latency_ms=45.679, generation_ms=12.346, cache="exact", stream=True,
        peer="p1", served_for="edge-1",
    ).data()  # fmt: skip
    assert data == expected and list(data) == list(expected)
    assert list(data) == [field.name for field in dataclasses.fields(InferenceEvent)]
    event = envelope_data(InferenceEvent, data, node_id="node-1")
    reference = envelope(InferenceEvent(**data), node_id="node-1")
    assert list(event) == list(reference)
    assert {k: v for k, v in event.items() if k not in ("event_id", "occurred_at")} == {
        k: v for k, v in reference.items() if k not in ("event_id", "occurred_at")
    }
    validate_event(event)


def test_request_milliseconds_are_what_round_gives() -> None:
    """The request path rounds latencies without ``round`` (a third of its time): same floats,
    and what is no duration still reaches the schema check as ``round`` leaves it."""
    rng = random.Random(7)
    samples = [rng.random() * scale for scale in (1e-3, 1.0, 60.0, 86_400.0) for _ in range(5000)]
    samples += [0.0, 0.0005, 0.0125, 1e-7, 86_400.0, 1e9, -0.25]
    for seconds in samples:
        assert _ms(seconds) == round(seconds * 1000, 3), seconds
    assert math.isnan(_ms(float("nan")))
    assert _ms(float("inf")) == float("inf")
