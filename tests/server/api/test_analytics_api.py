"""The analytics routes on real server processes: the embedded default (spool → SQLite) and a
node pointed at the real Kafka broker and PostgreSQL (TimescaleDB) with unique topic names."""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import asyncpg
import jsonschema
import pytest
import yaml

from tests.server.analytics.conftest import (  # noqa: F401 - fixtures
    kafka_bootstrap,
    pg_dsn,
    topic_prefix,
)
from tests.server.api.conftest import MakeServer
from tests.server.api.test_http_contract import OPENAPI
from tests.server.server_process import TOKENS, ServerProcess, until

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def check_schema(body: Any, name: str) -> None:
    jsonschema.validate(
        body, {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}
    )


def summary(server: ServerProcess, window: str = "5m") -> dict[str, Any]:
    status, _, body = server.request(
        "GET", f"/api/v1/analytics/summary?window={window}", token=TOKENS["reader"]
    )
    assert status == 200, body
    check_schema(body, "AnalyticsSummary")
    return body  # type: ignore[no-any-return]


def power_event(at: float, watts: float) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "power",
        "version": 1,
        "occurred_at": at,
        "node_id": "meter",
        "data": {
            "kind": "reading",
            "mode": None,
            "previous_mode": None,
            "watts": watts,
            "source": "test",
        },
    }


def test_inference_request_shows_up_in_the_summary(server: ServerProcess) -> None:
    # temperature 0: a request the response cache may answer, so it is consulted (a miss)
    request = {**CHAT, "temperature": 0}
    status, _, _ = server.request("POST", "/v1/chat/completions", request, token=TOKENS["operator"])
    assert status == 200
    body = until(
        lambda: (s := summary(server)) and s["requests"] >= 1 and s, "a request in the summary"
    )
    assert body["latency_p50_ms"] is not None and body["latency_p50_ms"] > 0
    assert body["completion_tokens"] >= 1
    assert body["tokens_per_second"] is not None
    assert body["edge_share"] == 1.0
    assert body["cache_hit_rate"] is not None  # the response cache was consulted (a miss or hit)
    assert body["health"]["store"] == "sqlite"
    assert body["health"]["kafka_configured"] is False
    assert body["health"]["kafka_connected"] is None


def test_energy_per_request_once_power_telemetry_exists(server: ServerProcess) -> None:
    server.request(
        "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2}, token=TOKENS["operator"]
    )
    now = time.time()
    status, _, body = server.request(
        "POST",
        "/api/v1/analytics/events",
        [power_event(now - 60, 5.0), power_event(now - 1, 7.0)],
        token=TOKENS["operator"],
    )
    assert status == 202, body
    check_schema(body, "AnalyticsIngest")
    got = until(
        lambda: (s := summary(server)) and s["energy_wh"] is not None and s, "energy in the summary"
    )
    assert got["energy_wh"] == pytest.approx(6.0 * 59 / 3600, abs=1e-3)
    assert got["energy_per_request_wh"] == pytest.approx(
        got["energy_wh"] / got["requests"], rel=1e-3
    )


def test_schema_violations_get_a_clear_400(server: ServerProcess) -> None:
    bad = power_event(time.time(), -3.0)
    status, _, body = server.request(
        "POST",
        "/api/v1/analytics/events",
        [power_event(time.time(), 1.0), bad],
        token=TOKENS["operator"],
    )
    assert status == 400
    assert body["error"]["code"] == "schema_violation"
    assert (
        body["error"]["message"] == "[1] power.v1: data/watts: -3.0 is less than the minimum of 0"
    )
    status, _, body = server.request(
        "POST",
        "/api/v1/analytics/events",
        {"type": "weather", "version": 1},
        token=TOKENS["operator"],
    )
    assert status == 400
    assert "unknown event type 'weather'" in body["error"]["message"]
    status, _, body = server.request(
        "GET", "/api/v1/analytics/summary?window=7d", token=TOKENS["reader"]
    )
    assert status == 400 and body["error"]["param"] == "window"
    status, _, _ = server.request("POST", "/api/v1/analytics/events", bad, token=TOKENS["reader"])
    assert status == 403


def test_jobs_are_visible_in_status_health_and_metrics(server: ServerProcess) -> None:
    status, _, job = server.request(
        "POST", "/api/v1/analytics/jobs/rollup/run", token=TOKENS["operator"]
    )
    assert status == 200, job
    check_schema(job, "AnalyticsJob")
    assert job["last_result"] == "ok" and job["runs"] >= 1
    status, _, _ = server.request("POST", "/api/v1/analytics/jobs/nope/run")
    assert status == 404
    status, _, health = server.request("GET", "/api/v1/analytics/health", token=TOKENS["reader"])
    assert status == 200
    check_schema(health, "AnalyticsHealth")
    assert {j["name"] for j in health["jobs"]} == {"rollup", "retention", "node_health"}
    status, _, node_status = server.request("GET", "/api/v1/status", token=TOKENS["reader"])
    assert node_status["analytics"]["jobs"]
    status, _, metrics = server.request("GET", "/metrics", token=TOKENS["reader"])
    assert 'prime_spark_job_last_run_timestamp_seconds{job_name="rollup"}' in metrics
    assert 'prime_spark_job_last_success{job_name="rollup"} 1.0' in metrics
    assert "prime_spark_analytics_spool_backlog_events" in metrics
    assert "prime_spark_analytics_spool_near_full 0.0" in metrics
    assert 'prime_spark_analytics_events_emitted_total{type="inference"}' in metrics


def test_kafka_and_postgres_node(
    make_server: MakeServer,
    kafka_bootstrap: str,  # noqa: F811
    pg_dsn: str,  # noqa: F811
    topic_prefix: str,  # noqa: F811
) -> None:
    prefix = topic_prefix
    """Server → spool → real Kafka → sink → PostgreSQL/TimescaleDB, over the real API."""
    node = make_server(
        {
            "analytics": {
                "kafka_bootstrap": kafka_bootstrap,
                "postgres_dsn": pg_dsn,
                "topic_prefix": prefix,
                "consumer_group": f"g-{prefix}",
            }
        },
        name="analytics-kafka",
    ).start()
    status, _, _ = node.request("POST", "/v1/chat/completions", CHAT, token=TOKENS["operator"])
    assert status == 200
    got = until(
        lambda: (s := summary(node)) and s["requests"] >= 1 and s, "a request in the summary", 120
    )
    assert got["health"]["kafka_configured"] is True
    assert got["health"]["store"] in {"timescaledb-apache", "timescaledb", "postgresql"}
    status, _, health = node.request("GET", "/api/v1/analytics/health", token=TOKENS["reader"])
    assert health["kafka"]["connected"] is True
    assert health["healthy"] is True

    import asyncio

    async def topics_row() -> Any:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return await conn.fetchrow(
                "SELECT data FROM analytics_all_events WHERE type = 'inference' "
                "ORDER BY occurred_at DESC LIMIT 1"
            )
        finally:
            await conn.close()

    row = asyncio.run(topics_row())
    data = json.loads(row["data"])
    assert data["route"] == "/v1/chat/completions" and data["side"] == "edge"
    assert data["cache"] == "none" and data["completion_tokens"] >= 1


def _emitted_inference(server: ServerProcess) -> float:
    _, _, text = server.request("GET", "/metrics", token=TOKENS["reader"])
    for line in text.splitlines():
        if line.startswith('prime_spark_analytics_events_emitted_total{type="inference"}'):
            return float(line.rsplit(" ", 1)[1])
    pytest.fail("no inference counter in /metrics")


def test_refused_callers_write_no_events(server: ServerProcess) -> None:
    before = _emitted_inference(server)
    status, _, _ = server.request("POST", "/v1/chat/completions", CHAT, token=None)
    assert status == 401
    status, _, _ = server.request("POST", "/v1/chat/completions", CHAT, token=TOKENS["reader"])
    assert status == 403
    assert _emitted_inference(server) == before
    status, _, _ = server.request(
        "POST", "/v1/chat/completions", {"messages": []}, token=TOKENS["operator"]
    )
    assert status == 400  # a client's mistake is still an inference request, counted as an error
    assert _emitted_inference(server) == before + 1


def test_server_restart_with_a_full_spool_replays_into_postgres(
    make_server: MakeServer,
    kafka_bootstrap: str,  # noqa: F811
    pg_dsn: str,  # noqa: F811
    topic_prefix: str,  # noqa: F811
) -> None:
    prefix = topic_prefix
    """Kafka unreachable → the node spools → it is stopped with the backlog → restarted with
    the real broker → every event reaches PostgreSQL once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    node = make_server(
        {
            "analytics": {
                "kafka_bootstrap": dead,
                "postgres_dsn": pg_dsn,
                "topic_prefix": prefix,
                "consumer_group": f"g-{prefix}",
            }
        },
        name="analytics-restart",
    ).start()
    now = time.time()
    events = [power_event(now - i, 2.0) for i in range(300)]
    for i in range(0, 300, 100):
        status, _, _ = node.request(
            "POST", "/api/v1/analytics/events", events[i : i + 100], token=TOKENS["operator"]
        )
        assert status == 202

    def spooled() -> bool:
        _, _, health = node.request("GET", "/api/v1/analytics/health", token=TOKENS["reader"])
        return bool(health["spool"]["backlog_events"] >= 300 and not health["kafka"]["connected"])

    until(spooled, "events in the spool", 30)
    node.stop()
    config = yaml.safe_load(node.config_path.read_text())
    config["analytics"]["kafka_bootstrap"] = kafka_bootstrap
    node.config_path.write_text(yaml.safe_dump(config))
    node.start()

    ids = [e["event_id"] for e in events]

    async def stored() -> int:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM analytics_all_events WHERE event_id = ANY($1::uuid[])",
                    ids,
                )
            )
        finally:
            await conn.close()

    import asyncio

    until(lambda: asyncio.run(stored()) == 300, "300 events stored", 120)
    _, _, health = node.request("GET", "/api/v1/analytics/health", token=TOKENS["reader"])
    assert health["kafka"]["connected"] is True
