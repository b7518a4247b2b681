"""Three worker nodes (two edge, one cloud) sharing the real Redis: balance, crash, poison, events.

Every node is a real ``prime-spark-server`` process with the real model; the cloud node alone
runs the ``llm`` agent (as a bigger model would), the edges run the small agents.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis

from tests.server.agents.conftest import FAST_AGENTS, submit, unique_prefix, wait_agents, wait_task
from tests.server.server_process import TOKENS, ServerProcess

SMALL = ["test.sleep", "test.fail", "memory"]


@pytest.fixture(scope="module")
def prefix() -> str:
    return unique_prefix()


@pytest.fixture(scope="module")
def cluster(make_server: Any, redis_url: str, prefix: str) -> dict[str, ServerProcess]:
    def node(name: str, tier: str, enabled: list[str], capacity: int) -> ServerProcess:
        agents = {
            **FAST_AGENTS,
            "redis_url": redis_url,
            "key_prefix": prefix,
            "tier": tier,
            "enabled": enabled,
            "capacity": {"test.sleep": capacity},
        }
        settings = {"server": {"node_id": name}, "agents": agents}
        return make_server(settings, name=name)  # type: ignore[no-any-return]

    nodes = {
        "edge1": node("edge1", "edge", SMALL, 1),
        "edge2": node("edge2", "edge", SMALL, 1),
        "cloud": node("cloud", "cloud", [*SMALL, "llm"], 4),
    }
    for server in nodes.values():
        server.start()
    wait_agents(nodes["cloud"], 3 * len(SMALL) + 1)
    return nodes


@pytest.fixture
def runs(redis_url: str, prefix: str) -> Iterator[Any]:
    """Reads the start/finish log the test.sleep agent writes."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    def read(tag: str | None = None) -> list[dict[str, Any]]:
        entries = [json.loads(e) for e in client.lrange(f"{prefix}runs", 0, -1)]
        return [e for e in entries if tag is None or e["tag"] == tag]

    yield read
    client.close()


def test_registry_shows_every_node(cluster: dict[str, ServerProcess]) -> None:
    status, _, body = cluster["edge1"].request("GET", "/api/v1/agents", token=TOKENS["reader"])
    assert status == 200
    by_name = {a["name"]: a for a in body["agents"]}
    assert by_name["cloud.test.sleep"]["capacity"] == 4
    assert by_name["cloud.test.sleep"]["tier"] == "cloud"
    assert by_name["edge2.test.sleep"]["capacity"] == 1
    assert "edge1.llm" not in by_name
    assert body["capabilities"]["test.sleep"]["capacity"] == 6
    assert body["capabilities"]["llm"]["agents"] == 1


def test_llm_task_from_an_edge_runs_on_the_cloud(cluster: dict[str, ServerProcess]) -> None:
    task = submit(
        cluster["edge1"],
        capability="llm",
        payload={
            "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": 8,
            "temperature": 0,
        },
        wait=90,
    )
    assert task["state"] == "succeeded", task
    assert task["agent"] == "cloud.llm"
    assert task["result"]["text"]


def test_load_spreads_by_capacity(cluster: dict[str, ServerProcess]) -> None:
    """Competing consumers, each taking only what it has room for: cloud (4) > edge (1)."""
    ids = [
        submit(cluster["edge2"], capability="test.sleep", payload={"seconds": 0.3, "tag": f"b{i}"})[
            "id"
        ]
        for i in range(30)
    ]
    done = [wait_task(cluster["cloud"], task_id) for task_id in ids]
    assert all(d["state"] == "succeeded" for d in done), done
    per_node = Counter(d["result"]["node"] for d in done)
    assert per_node["cloud"] > per_node["edge1"], per_node
    assert per_node["cloud"] > per_node["edge2"], per_node
    assert per_node["edge1"] >= 1, per_node
    assert per_node["edge2"] >= 1, per_node


def test_poison_task_dead_letters_across_nodes(cluster: dict[str, ServerProcess]) -> None:
    task = submit(cluster["edge1"], capability="test.fail", payload={"poison": True})
    done = wait_task(cluster["cloud"], task["id"])
    assert done["state"] == "dead"
    assert done["attempts"] == 3
    status, _, body = cluster["edge2"].request("GET", "/api/v1/agents/dead-letters")
    assert status == 200
    letter = next(d for d in body["dead_letters"] if d["task_id"] == task["id"])
    assert "PoisonError" in letter["error"]


async def _collect_events(url: str, into: list[tuple[str, dict[str, Any]]]) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['reader']}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/api/v1/events", headers=headers) as response,
    ):
        kind = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind.startswith("agent"):
                into.append((kind, json.loads(line[6:])))


async def test_killed_worker_task_finishes_elsewhere_once(
    cluster: dict[str, ServerProcess], runs: Any
) -> None:
    """kill -9 of the node running a task: another node reclaims it after the idle bound and
    finishes it; the idempotency key keeps a resubmission from running it again."""
    tag = f"crash-{time.time_ns()}"
    body = {
        "capability": "test.sleep",
        "payload": {"seconds": 3.0, "tag": tag},
        "idempotency_key": tag,
    }
    task = await asyncio.to_thread(submit, cluster["edge1"], **body)
    current: dict[str, Any] = {}
    for _ in range(100):
        _, _, current = await asyncio.to_thread(
            cluster["edge1"].request, "GET", f"/api/v1/agents/tasks/{task['id']}"
        )
        if current["state"] == "running":
            break
        await asyncio.sleep(0.05)
    assert current["state"] == "running", current
    victim_agent = current["agent"]
    victim_name = victim_agent.split(".")[0]
    victim = cluster[victim_name]
    witness = next(s for name, s in cluster.items() if name != victim_name)
    events: list[tuple[str, dict[str, Any]]] = []
    watcher = asyncio.create_task(_collect_events(witness.url, events))
    await asyncio.sleep(0.3)  # the event stream is open
    assert victim.process is not None
    victim.process.kill()  # SIGKILL: no goodbye, the entry stays pending on the dead consumer
    await asyncio.to_thread(victim.process.wait)
    try:
        done = await asyncio.to_thread(wait_task, witness, task["id"])
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 2
        assert done["agent"] != victim_agent
        again = await asyncio.to_thread(submit, witness, **body)
        assert again["id"] == task["id"]
        assert again["created"] is False
        await asyncio.sleep(0.5)
        log = runs(tag)
        assert [e["event"] for e in log].count("finish") == 1, log
        assert [e["event"] for e in log].count("start") == 2, log
        assert log[0]["node"] == victim_name
        # The dead node's agents leave the registry after the heartbeat timeout.
        names: set[str] = set()
        for _ in range(100):
            agents = await asyncio.to_thread(witness.request, "GET", "/api/v1/agents")
            names = {a["name"] for a in agents[2]["agents"]}
            if not any(n.startswith(victim_name + ".") for n in names):
                break
            await asyncio.sleep(0.1)
        assert not any(n.startswith(victim_name + ".") for n in names), names
        await asyncio.sleep(1.5)  # the watcher notices within a second
        gone = [d for k, d in events if k == "agent" and d["status"] == "offline"]
        assert f"{victim_name}.test.sleep" in {d["name"] for d in gone}, events
        states = [d["state"] for k, d in events if k == "agent_task" and d["task_id"] == task["id"]]
        assert states[-2:] == ["running", "succeeded"], states
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await asyncio.to_thread(victim.start)  # the cluster is whole again for later tests
