"""Routing between two real nodes on loopback: an edge with a cloud peer, and the cloud itself.

Both run the real server with the real model. What reached the cloud is read from the cloud's
own ``/metrics`` (its request counter), never from the edge's word for it. The cloud is killed
(SIGKILL, like a VPS dropping off the tunnel) and started again on the same port to drive the
circuit breaker through open, half-open and closed.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.server.api.conftest import MakeServer
from tests.server.server_process import (
    TOKENS,
    ServerProcess,
    first_peer,
    peer_settings,
    requests_served,
    until,
)

CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}
ROUTE = "x-prime-spark-route"
CLOUD_ONLY = "cloud-only-model"
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"


@pytest.fixture(scope="module")
def cloud(
    make_server: MakeServer, seed_data_dir: Callable[[Path], Path]
) -> Iterator[ServerProcess]:
    """The cloud node: the same server, plus a model the edge does not have."""
    proc = make_server(
        {"models": {"slots": 2, "paths": []}, "routing": {"mode": "edge_first"}}, name="cloud"
    )
    extra = proc.data_dir / "extra-models"
    extra.mkdir()
    os.link(seed_data_dir(proc.data_dir), extra / f"{CLOUD_ONLY}.gguf")
    _rewrite_settings(proc, {"models": {"paths": [str(extra)]}})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def edge(make_server: MakeServer, cloud: ServerProcess) -> Iterator[ServerProcess]:
    proc = make_server(
        {
            "models": {"slots": 2, "queue_size": 16},
            # The response cache sits in front of the router and would answer the repeated
            # requests here; tests/server/memory/test_cache_routing.py covers the two together.
            "memory": {"cache_enabled": False},
            "routing": {
                "mode": "edge_first",
                "peers": [peer_settings(cloud)],
                "health_interval": 0.5,
                "failure_threshold": 2,
                "cooldown": 5,
            },
        },
        name="edge",
    ).start()
    until(lambda: first_peer(proc)["reachable"] is True, "the first health check")
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts in edge_first and balanced power, with the cloud up."""
    yield
    if "edge" in request.fixturenames:
        edge: ServerProcess = request.getfixturevalue("edge")
        cloud: ServerProcess = request.getfixturevalue("cloud")
        if cloud.process is None or cloud.process.poll() is not None:
            cloud.start()
        _set(edge, routing="edge_first", power="balanced")
        until(lambda: first_peer(edge)["breaker"] == "closed", "the breaker to close")


# ---------------------------------------------------------------------------------- helpers


def _rewrite_settings(proc: ServerProcess, extra: dict[str, Any]) -> None:
    import yaml

    data = yaml.safe_load(proc.config_path.read_text())
    for section, values in extra.items():
        data.setdefault(section, {}).update(values)
    proc.config_path.write_text(yaml.safe_dump(data))


def _set(edge: ServerProcess, *, routing: str | None = None, power: str | None = None) -> None:
    if routing is not None:
        status, _, body = edge.request(
            "PUT", "/api/v1/routing", {"mode": routing}, token=TOKENS["operator"]
        )
        assert status == 200, body
    if power is not None:
        status, _, body = edge.request(
            "PUT", "/api/v1/power", {"mode": power}, token=TOKENS["operator"]
        )
        assert status == 200, body


def _chat(
    edge: ServerProcess, body: dict[str, Any] | None = None, **headers: str
) -> tuple[int, dict[str, str], Any]:
    return edge.request("POST", "/v1/chat/completions", body or CHAT, headers=headers)


def _header(headers: dict[str, str], name: str) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    return lowered.get(name.lower())


def _stream(
    edge: ServerProcess, body: dict[str, Any], path: str = "/v1/completions"
) -> Iterator[tuple[dict[str, str], bytes]]:
    """Yield (headers, line) for each SSE line of a streamed call."""
    request = urllib.request.Request(
        edge.url + path, data=json.dumps({**body, "stream": True}).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {TOKENS['operator']}")
    with urllib.request.urlopen(request, timeout=120) as response:
        headers = dict(response.headers)
        for line in response:
            yield headers, line


# ---------------------------------------------------------------------------------- modes


def test_edge_first_serves_on_the_edge(edge: ServerProcess, cloud: ServerProcess) -> None:
    before = requests_served(cloud, method="POST")
    status, headers, body = _chat(edge)
    assert status == 200, body
    assert _header(headers, ROUTE) == "edge: edge first"
    assert _header(headers, "x-prime-spark-peer") is None
    assert body["usage"]["completion_tokens"] >= 1
    assert requests_served(cloud, method="POST") == before


def test_cloud_first_serves_on_the_cloud_with_usage(
    edge: ServerProcess, cloud: ServerProcess
) -> None:
    _set(edge, routing="cloud_first")
    before = requests_served(cloud, method="POST")
    status, headers, body = _chat(edge)
    assert status == 200, body
    assert _header(headers, ROUTE) == "cloud: cloud first"
    assert _header(headers, "x-prime-spark-peer") == "cloud"
    assert body["object"] == "chat.completion"
    assert body["usage"]["prompt_tokens"] > 0  # the peer's usage comes back as it counted it
    assert body["system_fingerprint"].endswith(_node_id(cloud))
    assert requests_served(cloud, method="POST") == before + 1
    routing = edge.request("GET", "/api/v1/routing", token=TOKENS["reader"])[2]
    assert routing["last_decision"]["reason"] == "cloud: cloud first"
    assert routing["decisions"]["cloud"] >= 1


def test_cloud_first_embeddings_and_streams(edge: ServerProcess, cloud: ServerProcess) -> None:
    _set(edge, routing="cloud_first")
    before = requests_served(cloud, "/v1/embeddings", method="POST")
    status, headers, body = edge.request("POST", "/v1/embeddings", {"input": ["a", "b"]})
    assert status == 200, body
    assert _header(headers, ROUTE) == "cloud: cloud first"
    assert len(body["data"]) == 2
    assert requests_served(cloud, "/v1/embeddings", method="POST") == before + 1

    lines = list(
        _stream(
            edge,
            {**CHAT, "max_tokens": 8, "stream_options": {"include_usage": True}},
            "/v1/chat/completions",
        )
    )
    assert _header(lines[0][0], ROUTE) == "cloud: cloud first"
    data = [line for _, line in lines if line.startswith(b"data: ")]
    assert data[-1] == b"data: [DONE]\n"
    usage = [json.loads(line[6:]) for line in data[:-1] if b'"usage"' in line]
    assert usage and usage[-1]["usage"]["completion_tokens"] >= 1


def test_balanced_spreads_by_load(edge: ServerProcess, cloud: ServerProcess) -> None:
    """An idle edge serves; under load the cloud takes the overflow."""
    _set(edge, routing="balanced")
    status, headers, _ = _chat(edge)
    assert status == 200
    assert _header(headers, ROUTE) == "edge: balanced, edge less loaded"
    body = {**CHAT, "max_tokens": 24}
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: _chat(edge, body), range(6)))
    assert all(status == 200 for status, _, _ in results)
    reasons = {_header(headers, ROUTE) for _, headers, _ in results}
    assert reasons == {"edge: balanced, edge less loaded", "cloud: balanced, cloud less loaded"}


def test_mode_change_is_validated_and_needs_operator(edge: ServerProcess) -> None:
    status, _, body = edge.request(
        "PUT", "/api/v1/routing", {"mode": "cloudy"}, token=TOKENS["operator"]
    )
    assert status == 400
    assert "expected one of edge_first, cloud_first, balanced" in body["error"]["message"]
    status, _, _ = edge.request(
        "PUT", "/api/v1/routing", {"mode": "cloud_first"}, token=TOKENS["reader"]
    )
    assert status == 403
    status, _, body = edge.request(
        "PUT", "/api/v1/power", {"mode": "turbo"}, token=TOKENS["operator"]
    )
    assert status == 400
    assert body["error"]["param"] == "mode"


# ---------------------------------------------------------------------------------- privacy


def test_private_requests_never_reach_the_cloud(edge: ServerProcess, cloud: ServerProcess) -> None:
    _set(edge, routing="cloud_first")
    chat_before = requests_served(cloud, method="POST")
    embed_before = requests_served(cloud, "/v1/embeddings", method="POST")
    status, headers, _ = _chat(edge, {**CHAT, "private": True})
    assert status == 200
    assert _header(headers, ROUTE) == "edge: private"
    status, headers, _ = _chat(edge, **{"X-Prime-Spark-Private": "true"})
    assert status == 200
    assert _header(headers, ROUTE) == "edge: private"
    status, headers, _ = edge.request(
        "POST", "/v1/embeddings", {"input": "secret", "private": True}
    )
    assert status == 200
    assert _header(headers, ROUTE) == "edge: private"
    lines = list(_stream(edge, {"prompt": "Hello", "max_tokens": 4, "private": True}))
    assert _header(lines[0][0], ROUTE) == "edge: private"
    # Private even with the cloud the only place that has the model: a clear 400, not a leak.
    status, headers, body = _chat(edge, {**CHAT, "model": CLOUD_ONLY, "private": True})
    assert status == 400
    assert body["error"]["code"] == "model_not_on_edge"
    assert "private requests never leave this node" in body["error"]["message"]
    assert _header(headers, ROUTE) == "refused: private, model only on cloud"
    assert requests_served(cloud, method="POST") == chat_before
    assert requests_served(cloud, "/v1/embeddings", method="POST") == embed_before
    # Not private: the same mode sends it to the cloud.
    status, headers, _ = _chat(edge, {**CHAT, "private": False})
    assert _header(headers, ROUTE) == "cloud: cloud first"
    assert requests_served(cloud, method="POST") == chat_before + 1


def test_bad_private_flags_are_400(edge: ServerProcess) -> None:
    status, _, body = _chat(edge, {**CHAT, "private": "yes"})
    assert status == 400
    assert body["error"]["param"] == "private"
    status, _, body = _chat(edge, **{"X-Prime-Spark-Private": "maybe"})
    assert status == 400
    assert "X-Prime-Spark-Private" in body["error"]["message"]


def test_model_only_the_cloud_has_goes_to_the_cloud(
    edge: ServerProcess, cloud: ServerProcess
) -> None:
    before = requests_served(cloud, method="POST")
    status, headers, body = _chat(edge, {**CHAT, "model": CLOUD_ONLY})
    assert status == 200, body
    assert _header(headers, ROUTE) == "cloud: model only on cloud"
    assert body["model"] == CLOUD_ONLY
    assert requests_served(cloud, method="POST") == before + 1
    status, _, body = _chat(edge, {**CHAT, "model": "no-such-model"})
    assert status == 404  # neither side has it: the edge's own answer


def test_forwarded_requests_stay_on_the_receiving_node(edge: ServerProcess) -> None:
    """A peer that routes back to us must not make a request bounce between nodes."""
    _set(edge, routing="cloud_first")
    status, headers, _ = _chat(edge, **{"X-Prime-Spark-Forwarded": "another-node"})
    assert status == 200
    assert _header(headers, ROUTE) == "edge: forwarded by a peer"


# ---------------------------------------------------------------------------------- failures


def test_cloud_killed_during_load_falls_back_and_breaker_recovers(
    edge: ServerProcess, cloud: ServerProcess
) -> None:
    _set(edge, routing="cloud_first")
    body = {**CHAT, "max_tokens": 16}
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_chat, edge, body) for _ in range(4)]
        time.sleep(0.3)
        assert cloud.process is not None
        cloud.process.kill()  # SIGKILL: connections drop, nothing is answered
        cloud.process.wait()
        futures += [pool.submit(_chat, edge, body) for _ in range(8)]
        results = [f.result() for f in futures]
    assert [status for status, _, _ in results] == [200] * 12  # none failed
    reasons = {_header(headers, ROUTE) for _, headers, _ in results}
    assert reasons <= {"cloud: cloud first", "edge: cloud failed", "edge: cloud breaker open"}
    assert reasons & {"edge: cloud failed", "edge: cloud breaker open"}
    until(lambda: first_peer(edge)["breaker"] == "open", "the breaker to open", timeout=10)
    status, headers, _ = _chat(edge, body)  # no timeout paid while open
    assert status == 200
    assert _header(headers, ROUTE) == "edge: cloud breaker open"
    peer = first_peer(edge)
    assert peer["reachable"] is False
    assert peer["last_error"]

    cloud.start()  # the same port: the cloud is back
    until(lambda: first_peer(edge)["breaker"] == "closed", "the half-open probe to close it")
    status, headers, _ = _chat(edge, body)
    assert status == 200
    assert _header(headers, ROUTE) == "cloud: cloud first"
    _, _, metrics = edge.request("GET", "/metrics", token=TOKENS["reader"])
    assert 'prime_spark_upstream_breaker_state{peer="cloud"} 0.0' in metrics
    assert 'reason="edge: cloud breaker open"' in metrics


def test_stream_cut_mid_way_reports_a_clear_error(
    edge: ServerProcess, cloud: ServerProcess
) -> None:
    _set(edge, routing="cloud_first")
    lines: list[bytes] = []
    headers: dict[str, str] = {}
    body = {"prompt": COUNTING, "max_tokens": 900, "temperature": 0}
    for got, line in _stream(edge, body):
        headers = got
        lines.append(line)
        if len(lines) == 6:
            assert cloud.process is not None
            cloud.process.kill()
    assert cloud.process is not None
    cloud.process.wait()
    assert _header(headers, ROUTE) == "cloud: cloud first"
    data = [line for line in lines if line.startswith(b"data: ")]
    assert data[-1] == b"data: [DONE]\n"
    error = json.loads(data[-2][6:])["error"]
    assert error["code"] == "upstream_stream_cut"
    assert "cannot fall back" in error["message"]
    assert "'cloud'" in error["message"]


def test_stream_falls_back_before_the_first_byte(edge: ServerProcess, cloud: ServerProcess) -> None:
    _set(edge, routing="cloud_first")
    assert cloud.process is not None
    cloud.process.kill()
    cloud.process.wait()
    lines = list(_stream(edge, {"prompt": "Hello", "max_tokens": 4}))
    assert _header(lines[0][0], ROUTE) in {"edge: cloud failed", "edge: cloud breaker open"}
    assert lines[-2][1] == b"data: [DONE]\n"


# ---------------------------------------------------------------------------------- power


def _status(edge: ServerProcess) -> dict[str, Any]:
    status, _, body = edge.request("GET", "/api/v1/status", token=TOKENS["reader"])
    assert status == 200
    return body  # type: ignore[no-any-return]


def test_power_modes_change_the_next_requests(edge: ServerProcess, cloud: ServerProcess) -> None:
    cores = os.cpu_count() or 1
    power = _status(edge)["power"]
    assert power["mode"] == "balanced"
    assert power["slots"] == 2
    assert power["power_watts"] is None  # no PMIC here: unavailable, never invented
    assert power["telemetry"] is None

    _set(edge, power="power_save")
    power = _status(edge)["power"]
    assert (power["threads"], power["slots"], power["max_tokens_cap"]) == (
        max(1, cores // 2),
        1,
        256,
    )

    _set(edge, power="critical")
    status = _status(edge)
    assert (status["power"]["threads"], status["power"]["slots"]) == (1, 1)
    assert status["power"]["max_tokens_cap"] == 64
    # Critical sends work to a healthy cloud...
    status_code, headers, _ = _chat(edge)
    assert status_code == 200
    assert _header(headers, ROUTE) == "cloud: power critical"
    # ...and on the edge caps answers and refuses heavy work with a clear error.
    status_code, headers, body = edge.request(
        "POST", "/v1/completions", {"prompt": COUNTING, "private": True, "temperature": 0}
    )
    assert status_code == 200, body
    assert body["usage"]["completion_tokens"] <= 64
    status_code, headers, body = _chat(edge, {**CHAT, "max_tokens": 500, "private": True})
    assert status_code == 409
    assert body["error"]["code"] == "power_critical"
    assert "max_tokens 500 is above the critical cap of 64" in body["error"]["message"]
    assert _header(headers, ROUTE) == "refused: power critical"

    _set(edge, power="performance")
    power = _status(edge)["power"]
    assert (power["threads"], power["slots"], power["max_tokens_cap"]) == (cores, 2, None)


def test_slot_limit_is_observable_under_load(edge: ServerProcess) -> None:
    """power_save admits one request at a time: status never shows two busy slots."""
    _set(edge, power="power_save")
    body = {"prompt": COUNTING, "max_tokens": 48, "private": True, "temperature": 0}
    busy_seen: list[int] = []
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(edge.request, "POST", "/v1/completions", body) for _ in range(3)]
        while not all(f.done() for f in futures):
            state = _status(edge)
            busy_seen.append(state["slots"]["busy"])
            time.sleep(0.05)
        assert all(f.result()[0] == 200 for f in futures)
    assert max(busy_seen) == 1


def test_modes_survive_a_restart(edge: ServerProcess) -> None:
    _set(edge, routing="balanced", power="power_save")
    edge.stop()
    edge.start()
    until(lambda: first_peer(edge)["reachable"] is True, "the first health check")
    status = _status(edge)
    assert status["routing"]["mode"] == "balanced"
    assert status["power"]["mode"] == "power_save"
    assert status["power"]["slots"] == 1


def test_route_events_reach_the_event_stream(edge: ServerProcess) -> None:
    import asyncio

    import aiohttp

    async def follow() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKENS['reader']}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(edge.url + "/api/v1/events", headers=headers) as response,
        ):
            loop = asyncio.get_running_loop()
            request = loop.run_in_executor(None, lambda: _chat(edge, {**CHAT, "private": True}))
            event_type = ""
            while True:
                line = (await response.content.readline()).decode().rstrip("\n")
                if line.startswith("event: "):
                    event_type = line[7:]
                elif line.startswith("data: ") and event_type == "route":
                    await request
                    return json.loads(line[6:])  # type: ignore[no-any-return]

    decision = asyncio.run(asyncio.wait_for(follow(), 60))
    assert decision["reason"] == "edge: private"
    assert decision["target"] == "edge"
    assert decision["private"] is True


def _node_id(proc: ServerProcess) -> str:
    return _status(proc)["node_id"]  # type: ignore[no-any-return]
