"""Every subsystem's analytics events, end to end on real server processes: an edge node with a
real cloud peer (two servers on loopback, as in ``test_routing``), read back from the edge's
embedded SQLite store, the same rows the summary API and the Kafka/PostgreSQL sink work on.

The edge runs every subsystem at once: routing to the cloud peer, power telemetry (``vcgencmd``
replaced by a script printing a captured Pi 5 ``pmic_read_adc``, the hardware we lack), memory
with a one-item hot tier (so the mover demotes and a read promotes), the in-process agent broker
with the test agents, and the link monitor reading a captured ``wg show dump`` (no kernel
WireGuard needed to see what it emits).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from inference_server.analytics.schema import validate_event
from inference_server.power.telemetry import parse_pmic
from tests.server.agents.conftest import FAST_AGENTS, submit, wait_task
from tests.server.analytics.conftest import (  # noqa: F401 - fixtures
    kafka_bootstrap,
    pg_dsn,
    topic_prefix,
)
from tests.server.api.conftest import MakeServer
from tests.server.server_process import (
    TOKENS,
    ServerProcess,
    first_peer_reachable,
    peer_settings,
    until,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
PMIC = FIXTURES / "pmic_read_adc_pi5.txt"
WG_DUMP = FIXTURES / "wg_show_dump.txt"


def _tool(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def cloud(make_server: MakeServer) -> Iterator[ServerProcess]:
    proc = make_server({"models": {"slots": 2}}, name="emit-cloud").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def edge(
    make_server: MakeServer, cloud: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tools = tmp_path_factory.mktemp("emit-tools")
    vcgencmd = _tool(tools / "vcgencmd", f'[ "$1" = pmic_read_adc ] || exit 2\ncat "{PMIC}"\n')
    wg = _tool(tools / "wg", f'cat "{WG_DUMP}"\n')
    proc = make_server(
        {
            "models": {"slots": 2},
            "routing": {
                "mode": "edge_first",
                "peers": [peer_settings(cloud)],
                "health_interval": 0.5,
            },
            "power": {"pmic_command": vcgencmd},
            "memory": {"hot_max_items": 1, "cache_enabled": False},
            "agents": dict(FAST_AGENTS),
            "link": {"enabled": True, "wg_command": [wg], "poll_interval": 0.5},
        },
        name="emit-edge",
    ).start()
    until(lambda: first_peer_reachable(proc), "the first peer health check")
    yield proc
    proc.stop()


# ---------------------------------------------------------------------------------- helpers


def _events(proc: ServerProcess, type_: str) -> list[dict[str, Any]]:
    """Stored events of one topic, as full envelopes (read from the node's own SQLite store)."""
    path = proc.data_dir / "analytics" / "analytics.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        try:
            rows = db.execute(
                "SELECT event_id, type, version, occurred_at, node_id, data "
                "FROM analytics_all_events WHERE type = ? ORDER BY occurred_at",
                (type_,),
            ).fetchall()
        except sqlite3.OperationalError:  # the store is still creating its tables
            return []
    return [
        {
            "event_id": r[0],
            "type": r[1],
            "version": r[2],
            "occurred_at": r[3],
            "node_id": r[4],
            "data": json.loads(r[5]),
        }
        for r in rows
    ]


def _stored(
    proc: ServerProcess, type_: str, match: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The first stored event of ``type_`` whose data matches; checked against its schema."""
    event = until(lambda: next((e for e in _events(proc, type_) if match(e["data"])), None), what)
    validate_event(event)
    return event  # type: ignore[no-any-return]


def _chat(proc: ServerProcess) -> dict[str, Any]:
    body = {
        "messages": [{"role": "user", "content": f"Say hi ({uuid.uuid4().hex[:6]})."}],
        "max_tokens": 4,
        "temperature": 0,
    }
    status, headers, answer = proc.request(
        "POST", "/v1/chat/completions", body, token=TOKENS["operator"]
    )
    assert status == 200, answer
    return headers


def _set(edge: ServerProcess, path: str, body: dict[str, Any]) -> None:
    status, _, answer = edge.request("PUT", path, body, token=TOKENS["operator"])
    assert status == 200, answer


# ---------------------------------------------------------------------------------- tests


def test_cloud_served_request_counts_as_cloud_in_the_summary(
    edge: ServerProcess, cloud: ServerProcess
) -> None:
    _set(edge, "/api/v1/routing", {"mode": "edge_first"})
    _chat(edge)
    _set(edge, "/api/v1/routing", {"mode": "cloud_first"})
    try:
        headers = _chat(edge)
    finally:
        _set(edge, "/api/v1/routing", {"mode": "edge_first"})
    assert headers.get("x-prime-spark-peer") == "cloud", headers

    routed = _stored(
        edge,
        "routing",
        lambda d: d["decision"] == "cloud",
        "the cloud routing event",
    )["data"]
    assert routed["mode"] == "cloud_first"
    assert routed["peer"] == "cloud"
    assert routed["reason"] == "cloud: cloud first"
    assert routed["private"] is False and routed["fallback"] is False
    edge_routed = _stored(edge, "routing", lambda d: d["decision"] == "edge", "an edge decision")
    assert edge_routed["data"]["peer"] is None and edge_routed["data"]["mode"] == "edge_first"

    served = _stored(edge, "inference", lambda d: d["side"] == "cloud", "the cloud inference")
    assert served["data"]["peer"] == "cloud"
    assert served["data"]["status"] == 200
    assert served["data"]["completion_tokens"] >= 1  # from the peer's usage block
    assert served["data"]["prompt_tokens"] >= 1
    # The cloud answered it itself: its own record says edge (it is the edge of its own work).
    assert _stored(cloud, "inference", lambda d: d["side"] == "edge", "the cloud's own event")

    def shares() -> dict[str, Any] | None:
        status, _, body = edge.request(
            "GET", "/api/v1/analytics/summary?window=5m", token=TOKENS["reader"]
        )
        assert status == 200, body
        return body if body["requests"] >= 2 and body["cloud_share"] else None

    summary = until(shares, "the summary to count the cloud request")
    assert summary["cloud_share"] > 0 and summary["edge_share"] > 0
    assert summary["cloud_share"] + summary["edge_share"] == pytest.approx(1.0)


def _stream(proc: ServerProcess, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON chunks of a streamed call as the client sees them (``[DONE]`` must end it)."""
    request = urllib.request.Request(
        proc.url + path, data=json.dumps({**body, "stream": True}).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {TOKENS['operator']}")
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers.get("x-prime-spark-peer") == "cloud"
        data = [line[6:].strip() for line in response if line.startswith(b"data: ")]
    assert data[-1] == b"[DONE]"
    return [json.loads(chunk) for chunk in data[:-1]]


def test_streamed_cloud_answers_record_the_peers_token_counts(
    edge: ServerProcess, cloud: ServerProcess
) -> None:
    """The edge asks the peer for its usage chunk; the client sees it only when it asked."""
    _set(edge, "/api/v1/routing", {"mode": "cloud_first"})
    since = time.time()
    try:
        chat = {
            "messages": [{"role": "user", "content": f"Count ({uuid.uuid4().hex[:6]})."}],
            "max_tokens": 6,
            "temperature": 0,
        }
        plain = _stream(edge, "/v1/chat/completions", chat)
        asked = _stream(
            edge,
            "/v1/completions",
            {"prompt": "One, two,", "max_tokens": 5, "stream_options": {"include_usage": True}},
        )
    finally:
        _set(edge, "/api/v1/routing", {"mode": "edge_first"})
    assert not any(c.get("usage") for c in plain), "usage the client did not ask for"
    assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in plain)
    usage = [c["usage"] for c in asked if c.get("usage")]
    assert len(usage) == 1 and usage[0]["completion_tokens"] >= 1

    def recorded(route: str) -> dict[str, Any]:
        return _stored(
            edge,
            "inference",
            lambda d: d["side"] == "cloud" and d["stream"] and d["route"] == route,
            f"the streamed cloud inference on {route}",
        )

    for route in ("/v1/chat/completions", "/v1/completions"):
        event = recorded(route)
        assert event["occurred_at"] >= since
        assert event["data"]["peer"] == "cloud"
        assert event["data"]["prompt_tokens"] >= 1, event
        assert event["data"]["completion_tokens"] >= 1, event
    assert recorded("/v1/completions")["data"]["completion_tokens"] == usage[0]["completion_tokens"]
    assert recorded("/v1/completions")["data"]["prompt_tokens"] == usage[0]["prompt_tokens"]


def test_power_readings_and_mode_changes(edge: ServerProcess) -> None:
    expected = parse_pmic(PMIC.read_text())
    assert expected is not None
    reading = _stored(edge, "power", lambda d: d["kind"] == "reading", "a power reading")["data"]
    assert reading["watts"] == pytest.approx(expected.watts)
    assert reading["source"].endswith("vcgencmd pmic_read_adc")
    assert reading["mode"] == "balanced"

    _set(edge, "/api/v1/power", {"mode": "power_save"})
    _set(edge, "/api/v1/power", {"mode": "balanced"})
    change = _stored(
        edge,
        "power",
        lambda d: d["kind"] == "mode_change" and d["mode"] == "power_save",
        "the mode change",
    )["data"]
    assert change["previous_mode"] == "balanced"
    assert change["source"] == "api"
    assert change["watts"] is None

    # Energy per request: the summary integrates the node's own readings over the window.
    def energy() -> dict[str, Any] | None:
        _, _, body = edge.request(
            "GET", "/api/v1/analytics/summary?window=5m", token=TOKENS["reader"]
        )
        return body if body["energy_wh"] is not None else None

    _chat(edge)
    summary = until(energy, "energy from two readings", timeout=45)
    assert summary["energy_wh"] > 0
    assert summary["energy_per_request_wh"] is not None


def test_memory_operations_and_tier_moves(edge: ServerProcess) -> None:
    ns = f"emit{uuid.uuid4().hex[:6]}"
    for key in ("a", "b"):
        status, _, body = edge.request(
            "PUT", f"/api/v1/memory/items/{ns}/{key}", {"value": f"value {key}"}
        )
        assert status == 200, body
    status, _, body = edge.request("POST", "/api/v1/memory/search", {"namespace": ns, "query": "x"})
    assert status == 200, body
    status, _, _ = edge.request("GET", f"/api/v1/memory/items/{ns}/missing")
    assert status == 404

    def ours(op: str, **want: Any) -> Callable[[dict[str, Any]], bool]:
        return lambda d: d["operation"] == op and all(d[k] == v for k, v in want.items())

    written = _stored(edge, "memory", ours("set", tier="hot"), "a set")["data"]
    assert written["bytes"] > 0 and written["to_tier"] is None
    assert _stored(edge, "memory", ours("search"), "a search")["data"]["hit"] is not None
    assert _stored(edge, "memory", ours("get", hit=False), "a miss")
    # Two items in a one-item hot tier: the mover demotes the older one to warm.
    demoted = _stored(edge, "memory", ours("demote", tier="hot", to_tier="warm"), "a demotion")
    assert demoted["data"]["bytes"] > 0
    # Reading everything back finds the demoted one in warm and promotes it.
    for key in ("a", "b"):
        status, _, body = edge.request("GET", f"/api/v1/memory/items/{ns}/{key}")
        assert status == 200, body
    assert _stored(edge, "memory", ours("get", tier="warm", hit=True), "a warm hit")
    assert _stored(edge, "memory", ours("promote", tier="warm", to_tier="hot"), "a promotion")
    status, _, _ = edge.request("DELETE", f"/api/v1/memory/items/{ns}/a")
    assert status in (200, 204)
    assert _stored(edge, "memory", ours("delete", hit=True), "a delete")


def test_agent_task_lifecycle(edge: ServerProcess) -> None:
    ok = submit(edge, capability="test.sleep", payload={"seconds": 0})
    assert wait_task(edge, ok["id"])["state"] == "succeeded"
    poison = submit(edge, capability="test.fail", payload={})
    assert wait_task(edge, poison["id"])["state"] == "dead"

    def states(task_id: str) -> list[str]:
        return [
            e["data"]["state"]
            for e in _events(edge, "agent_task")
            if e["data"]["task_id"] == task_id
        ]

    until(lambda: "succeeded" in states(ok["id"]), "the success event")
    assert states(ok["id"])[:1] == ["queued"]
    assert "started" in states(ok["id"])
    until(lambda: "dead_lettered" in states(poison["id"]), "the dead-letter event")
    assert "retried" in states(poison["id"])
    done = _stored(edge, "agent_task", lambda d: d["task_id"] == ok["id"], "a stored task event")
    assert done["data"]["attempt"] >= 1


def test_agent_llm_tasks_record_an_inference_event(edge: ServerProcess) -> None:
    """An agent's model call has no HTTP request to record it: the engine emits the event."""
    task = submit(
        edge,
        capability="llm",
        payload={"prompt": f"Name a fruit ({uuid.uuid4().hex[:6]}).", "max_tokens": 4,
                 "temperature": 0},
        wait=90,
    )  # fmt: skip
    assert task["state"] == "succeeded", task
    usage = task["result"]["usage"]
    event = _stored(
        edge,
        "inference",
        lambda d: (
            d["route"] == "agents:llm" and d["completion_tokens"] == usage["completion_tokens"]
        ),
        "the agent task's inference event",
    )
    assert event["data"]["status"] == 200
    assert event["data"]["side"] == "edge"  # edge_first, and the edge is idle
    assert event["data"]["prompt_tokens"] == usage["prompt_tokens"] > 0
    assert event["data"]["generation_ms"] > 0
    assert event["data"].get("served_for") is None


def test_link_status(edge: ServerProcess) -> None:
    link = _stored(edge, "link", lambda d: True, "a link event")["data"]
    assert link["interface"] == "wg0"
    # The captured dump's handshake is long past: a stale peer is a link that is down.
    assert link["status"] == "down"
    assert link["handshake_age_seconds"] is not None and link["handshake_age_seconds"] > 180
    assert link["rx_bytes"] == 764 and link["tx_bytes"] == 932


def test_subsystem_events_through_kafka_into_postgres(
    make_server: MakeServer,
    kafka_bootstrap: str,  # noqa: F811
    pg_dsn: str,  # noqa: F811
    topic_prefix: str,  # noqa: F811
) -> None:
    """The same emitters on a node pointed at the real broker and PostgreSQL: each topic's
    event goes spool → Kafka (its own topic) → sink → the store (``analytics_all_events``), exactly once."""
    node = make_server(
        {
            "analytics": {
                "kafka_bootstrap": kafka_bootstrap,
                "postgres_dsn": pg_dsn,
                "topic_prefix": topic_prefix,
                "consumer_group": f"g-{topic_prefix}",
            },
            "memory": {"cache_enabled": False},
            "agents": dict(FAST_AGENTS),
        },
        name="emit-kafka",
    ).start()
    try:
        _chat(node)
        _set(node, "/api/v1/power", {"mode": "performance"})
        status, _, body = node.request("PUT", "/api/v1/memory/items/emitpg/k", {"value": 1})
        assert status == 200, body
        task = submit(node, capability="test.sleep", payload={"seconds": 0})
        assert wait_task(node, task["id"])["state"] == "succeeded"

        async def rows() -> list[Any]:
            conn = await asyncpg.connect(pg_dsn)
            try:
                return list(
                    await conn.fetch("SELECT event_id, type, data FROM analytics_all_events")
                )
            finally:
                await conn.close()

        def topics() -> dict[str, list[dict[str, Any]]] | None:
            got: dict[str, list[dict[str, Any]]] = {}
            for row in asyncio.run(rows()):
                got.setdefault(row["type"], []).append(json.loads(row["data"]))
            wanted = {"routing", "power", "memory", "agent_task", "inference"}
            done = wanted <= got.keys() and any(
                d["state"] == "succeeded" for d in got["agent_task"]
            )
            return got if done else None

        got = until(topics, "every topic in PostgreSQL", timeout=120)
        assert any(d["decision"] == "edge" and d["mode"] == "edge_first" for d in got["routing"])
        assert any(d["kind"] == "mode_change" and d["mode"] == "performance" for d in got["power"])
        assert any(d["operation"] == "set" and d["tier"] == "hot" for d in got["memory"])
        states = {d["state"] for d in got["agent_task"] if d["task_id"] == task["id"]}
        assert {"queued", "started", "succeeded"} <= states
        ids = [row["event_id"] for row in asyncio.run(rows())]
        assert len(ids) == len(set(ids))
    finally:
        node.stop()


def test_subsystems_work_unchanged_with_analytics_off(
    make_server: MakeServer, cloud: ServerProcess
) -> None:
    """Routing to a peer, power, memory moves and agents on a node without analytics: every
    call answers as usual and nothing is written (no store, no spool)."""
    node = make_server(
        {
            "analytics": {"enabled": False},
            "routing": {
                "mode": "cloud_first",
                "peers": [{"name": "cloud", "url": cloud.url, "token": TOKENS["operator"]}],
                "health_interval": 0.5,
            },
            "memory": {"hot_max_items": 1, "cache_enabled": False},
            "agents": dict(FAST_AGENTS),
        },
        name="emit-off",
    ).start()
    try:
        until(lambda: first_peer_reachable(node), "the first peer health check")
        assert _chat(node).get("x-prime-spark-peer") == "cloud"
        _set(node, "/api/v1/power", {"mode": "power_save"})
        for key in ("a", "b", "a"):
            status, _, body = node.request("PUT", f"/api/v1/memory/items/off/{key}", {"value": 1})
            assert status == 200, body
        status, _, body = node.request("GET", "/api/v1/memory/items/off/b")
        assert status == 200, body
        task = submit(node, capability="test.sleep", payload={"seconds": 0})
        assert wait_task(node, task["id"])["state"] == "succeeded"
        status, _, _ = node.request("GET", "/api/v1/analytics/summary", token=TOKENS["reader"])
        assert status == 503
        assert not (node.data_dir / "analytics").exists()
    finally:
        node.stop()


def test_response_cache_result_is_recorded(server: ServerProcess) -> None:
    """The same prompt four times on a node with the response cache: a miss, then exact hits
    (the last two answered from the alias of the first hit's bytes), all in the inference
    events, so the summary's cache hit rate is real."""

    def exact() -> list[dict[str, Any]]:
        return [e for e in _events(server, "inference") if e["data"]["cache"] == "exact"]

    exact_before = len(exact())
    prompt = f"Name a colour ({uuid.uuid4().hex[:8]})."
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 4, "temperature": 0}
    for _ in range(4):
        status, _, answer = server.request(
            "POST", "/v1/chat/completions", body, token=TOKENS["operator"]
        )
        assert status == 200, answer
    assert _stored(server, "inference", lambda d: d["cache"] == "miss", "a cache miss")
    hit = _stored(server, "inference", lambda d: d["cache"] == "exact", "a cache hit")["data"]
    assert hit["side"] == "edge" and hit["model"] != "unknown"

    def three_new() -> list[dict[str, Any]] | None:
        events = exact()
        return events[exact_before:] if len(events) >= exact_before + 3 else None

    hits = until(three_new, "three cache-hit events")
    assert len(hits) == 3
    for event in hits:
        validate_event(event)
        assert event["data"]["model"] == hit["model"] and event["data"]["status"] == 200
        assert event["data"]["route"] == "/v1/chat/completions" and event["data"]["side"] == "edge"
    status, _, summary = server.request(
        "GET", "/api/v1/analytics/summary?window=5m", token=TOKENS["reader"]
    )
    assert status == 200 and summary["cache_hit_rate"] > 0
