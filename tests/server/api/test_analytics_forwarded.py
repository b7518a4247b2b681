"""A request one node forwards to another counts once in a PostgreSQL both nodes write to.

Two real server processes on loopback, as in ``test_routing``: an edge in ``cloud_first`` with
the other as its cloud peer, both writing their analytics into one fresh PostgreSQL database of
this test. Each forwarded request leaves two inference events there: the edge's (the client's
request, side ``cloud``) and the cloud's (the work, ``served_for`` the edge). The summary either
node serves must count the request once and take the decode speed from the cloud's work.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tests.server.analytics.conftest import pg_dsn  # noqa: F401 - fixture
from tests.server.api.conftest import MakeServer
from tests.server.server_process import (
    TOKENS,
    ServerProcess,
    first_peer_reachable,
    peer_settings,
    until,
)

CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 5, "temperature": 0}


@pytest.fixture(scope="module")
def shared_dsn(pg_dsn: str) -> Iterator[str]:  # noqa: F811
    """A database of this module's own: the summary counts everything in it."""
    name = f"ps_forwarded_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    yield pg_dsn.rsplit("/", 1)[0] + "/" + name
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="module")
def cloud(make_server: MakeServer, shared_dsn: str) -> Iterator[ServerProcess]:
    proc = make_server(
        {
            "models": {"slots": 2},
            "memory": {"cache_enabled": False},
            "analytics": {"postgres_dsn": shared_dsn},
            "server": {"node_id": "cloud-node"},
        },
        name="fwd-cloud",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def edge(make_server: MakeServer, cloud: ServerProcess, shared_dsn: str) -> Iterator[ServerProcess]:
    proc = make_server(
        {
            "models": {"slots": 2},
            "memory": {"cache_enabled": False},
            "analytics": {"postgres_dsn": shared_dsn},
            "server": {"node_id": "edge-node"},
            "routing": {
                "mode": "cloud_first",
                "peers": [peer_settings(cloud)],
                "health_interval": 0.5,
            },
        },
        name="fwd-edge",
    ).start()
    until(lambda: first_peer_reachable(proc), "the first peer health check", timeout=90)
    yield proc
    proc.stop()


def _rows(dsn: str) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT e.node_id, e.version, e.data::text AS data, i.served_for "
                "FROM analytics_all_events e JOIN analytics_inference i USING (event_id) "
                "WHERE e.type = 'inference' ORDER BY e.occurred_at"
            )
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await conn.close()
        return [{**dict(r), "data": json.loads(r["data"])} for r in rows]

    return asyncio.run(fetch())


def _stream(proc: ServerProcess, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        proc.url + "/v1/chat/completions",
        data=json.dumps({**body, "stream": True}).encode(),
        method="POST",
    )
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {TOKENS['operator']}")
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers.get("x-prime-spark-peer") == "cloud"
        assert response.read().rstrip().endswith(b"data: [DONE]")


def _summary(proc: ServerProcess) -> dict[str, Any]:
    status, _, body = proc.request(
        "GET", "/api/v1/analytics/summary?window=5m", token=TOKENS["reader"]
    )
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def test_a_forwarded_request_is_counted_once_in_a_shared_database(
    edge: ServerProcess, cloud: ServerProcess, shared_dsn: str
) -> None:
    status, headers, answer = edge.request("POST", "/v1/chat/completions", CHAT)
    assert status == 200, answer
    assert headers.get("x-prime-spark-peer") == "cloud"
    _stream(edge, CHAT)
    status, _, _ = cloud.request("POST", "/v1/chat/completions", CHAT)  # the cloud's own client
    assert status == 200

    rows = until(
        lambda: (r := _rows(shared_dsn)) and len(r) >= 5 and r, "five inference rows", timeout=90
    )
    assert len(rows) == 5
    assert {r["version"] for r in rows} == {2}
    by_edge = [r for r in rows if r["node_id"] == "edge-node"]
    for_edge = [r for r in rows if r["served_for"] == "edge-node"]
    own = [r for r in rows if r["node_id"] == "cloud-node" and r["served_for"] is None]
    assert len(by_edge) == 2 and len(for_edge) == 2 and len(own) == 1
    assert all(r["data"]["side"] == "cloud" and r["served_for"] is None for r in by_edge)
    assert all(r["node_id"] == "cloud-node" and r["data"]["side"] == "edge" for r in for_edge)
    assert all(r["data"]["served_for"] == "edge-node" for r in for_edge)
    # The same tokens on both sides of each forwarded request (the stream's via usage too).
    assert sorted(r["data"]["completion_tokens"] for r in by_edge) == sorted(
        r["data"]["completion_tokens"] for r in for_edge
    )
    counted = by_edge + own
    tokens = sum(r["data"]["completion_tokens"] for r in counted)
    assert tokens >= 3

    for proc in (edge, cloud):  # one store, so both nodes answer the same numbers
        summary = _summary(proc)
        assert summary["requests"] == 3, summary
        assert summary["forwarded_requests"] == 2
        assert summary["completion_tokens"] == tokens
        assert summary["prompt_tokens"] == sum(r["data"]["prompt_tokens"] for r in counted)
        assert summary["cloud_share"] == round(2 / 3, 4)
        # The decode speed is the work of the node that decoded: the cloud's three events.
        work = [r["data"] for r in for_edge + own]
        speed = (
            sum(d["completion_tokens"] for d in work) * 1000 / sum(d["generation_ms"] for d in work)
        )
        assert summary["tokens_per_second"] == pytest.approx(speed, rel=1e-3)


def test_a_bad_forwarded_header_is_a_clear_400(cloud: ServerProcess) -> None:
    status, _, body = cloud.request(
        "POST", "/v1/chat/completions", CHAT, headers={"X-Prime-Spark-Forwarded": "x" * 65}
    )
    assert status == 400
    assert body["error"]["code"] == "invalid_header"
    assert "X-Prime-Spark-Forwarded" in body["error"]["message"]
