"""``llm`` agent tasks follow the router like HTTP requests: two real nodes, edge and cloud.

What the cloud served is read from the cloud's own ``/metrics`` (its HTTP request counter on
``/v1/chat/completions``), never from the edge's word for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.agents.conftest import submit
from tests.server.api.conftest import MakeServer
from tests.server.server_process import (
    TOKENS,
    ServerProcess,
    first_peer,
    peer_settings,
    requests_served,
    until,
)

PROMPT = {"prompt": "Say hi.", "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def cloud(make_server: MakeServer) -> Iterator[ServerProcess]:
    proc = make_server({"routing": {"mode": "edge_first"}}, name="agents-cloud").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def edge(make_server: MakeServer, cloud: ServerProcess) -> Iterator[ServerProcess]:
    proc = make_server(
        {
            "routing": {
                "mode": "cloud_first",
                "peers": [peer_settings(cloud)],
                "health_interval": 0.5,
            },
        },
        name="agents-edge",
    ).start()
    until(lambda: first_peer(proc)["reachable"] is True, "the cloud peer to become reachable")
    yield proc
    proc.stop()


def _decisions(proc: ServerProcess, reason: str) -> float:
    _, _, text = proc.request("GET", "/metrics", token=TOKENS["reader"])
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prime_spark_route_decisions_total{") and f'reason="{reason}"' in line
    )


def test_cloud_first_llm_task_is_served_by_the_cloud(
    edge: ServerProcess, cloud: ServerProcess
) -> None:
    cloud_before, edge_before = (
        requests_served(cloud, method="POST"),
        requests_served(edge, method="POST"),
    )
    decided_before = _decisions(edge, "cloud: cloud first")
    task = submit(edge, capability="llm", payload=PROMPT, wait=90)
    assert task["state"] == "succeeded", task
    edge_agents = {a["name"] for a in edge.request("GET", "/api/v1/agents")[2]["agents"]}
    assert task["agent"] in edge_agents  # the edge's agent ran it, and asked the cloud
    assert task["result"]["route"] == {
        "target": "cloud",
        "peer": "cloud",
        "reason": "cloud: cloud first",
    }
    assert task["result"]["text"]
    assert requests_served(cloud, method="POST") == cloud_before + 1  # the cloud's own counter
    assert (
        requests_served(edge, method="POST") == edge_before
    )  # the agent did not go through the edge's HTTP API
    assert _decisions(edge, "cloud: cloud first") == decided_before + 1


def test_private_llm_task_stays_on_the_edge(edge: ServerProcess, cloud: ServerProcess) -> None:
    cloud_before = requests_served(cloud, method="POST")
    task = submit(edge, capability="llm", payload={**PROMPT, "private": True}, wait=90)
    assert task["state"] == "succeeded", task
    assert task["result"]["route"] == {"target": "edge", "peer": None, "reason": "edge: private"}
    assert task["result"]["usage"]["completion_tokens"] >= 1
    assert requests_served(cloud, method="POST") == cloud_before


def test_private_header_on_submit_makes_the_task_private(
    edge: ServerProcess, cloud: ServerProcess
) -> None:
    """Decided where the caller is known, as for HTTP: the header works on a task submit too."""
    cloud_before = requests_served(cloud, method="POST")
    status, _, task = edge.request(
        "POST",
        "/api/v1/agents/tasks",
        {"capability": "llm", "payload": PROMPT, "wait": 90},
        headers={"X-Prime-Spark-Private": "true"},
    )
    assert status == 200, task
    assert task["state"] == "succeeded", task
    assert task["result"]["route"]["reason"] == "edge: private"
    assert requests_served(cloud, method="POST") == cloud_before


def test_private_must_be_a_boolean(edge: ServerProcess) -> None:
    status, _, body = edge.request(
        "POST",
        "/api/v1/agents/tasks",
        {"capability": "llm", "payload": {**PROMPT, "private": "yes"}},
    )
    assert status == 400, body
    assert "private" in body["error"]["message"]


def test_cloud_gone_the_task_falls_back_to_the_edge(
    edge: ServerProcess, cloud: ServerProcess
) -> None:
    """Last in the module: the cloud is killed; a cloud_first task still completes, at home."""
    cloud.stop()
    task = submit(edge, capability="llm", payload=PROMPT, wait=90)
    assert task["state"] == "succeeded", task
    assert task["result"]["route"]["target"] == "edge"
    assert task["result"]["route"]["reason"].startswith("edge: ")
    assert task["attempts"] == 1  # the fallback happened inside the attempt, not as a retry
