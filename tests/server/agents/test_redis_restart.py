"""Redis goes away mid-work and comes back: workers reconnect and no task is lost.

The test runs its own ``redis-server`` (AOF with fsync on every write, as the README asks of a
production Redis) on a free port, so restarting it disturbs nobody else.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.server.agents.conftest import FAST_AGENTS, submit, wait_agents, wait_task
from tests.server.server_process import ServerProcess, free_port


class OwnRedis:
    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (scripts/setup installs it)")
        self.binary = binary
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=(self.directory / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        pytest.fail("own redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("own-redis"))
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


@pytest.fixture(scope="module")
def workers(make_server: Any, own_redis: OwnRedis) -> list[ServerProcess]:
    nodes = []
    for name in ("restart-a", "restart-b"):
        agents = {
            **FAST_AGENTS,
            "redis_url": own_redis.url,
            "key_prefix": "restart:",
            "enabled": ["test.sleep"],
            "capacity": {"test.sleep": 2},
            "max_deliveries": 6,
        }
        nodes.append(make_server({"server": {"node_id": name}, "agents": agents}, name=name))
    for node in nodes:
        node.start()
    wait_agents(nodes[0], 2)
    return nodes


def test_redis_restart_loses_no_task(workers: list[ServerProcess], own_redis: OwnRedis) -> None:
    tags = [f"r{i}" for i in range(12)]
    ids = [
        submit(workers[0], capability="test.sleep", payload={"seconds": 0.5, "tag": tag})["id"]
        for tag in tags
    ]
    time.sleep(0.7)
    own_redis.kill()
    status, headers, body = workers[1].request("GET", "/api/v1/agents/tasks")
    assert status == 503, body
    assert body["error"]["code"] == "broker_unavailable"
    assert headers["Retry-After"]
    time.sleep(2.0)
    own_redis.start()
    done = [wait_task(workers[1], task_id) for task_id in ids]
    assert [d["state"] for d in done] == ["succeeded"] * len(ids), done
    client = redis.Redis(port=own_redis.port, decode_responses=True)
    log = [json.loads(e) for e in client.lrange("restart:runs", 0, -1)]
    finished = {e["tag"] for e in log if e["event"] == "finish"}
    assert finished == set(tags)
    # Both workers came back and kept working after the outage.
    later = [
        submit(workers[0], capability="test.sleep", payload={"seconds": 0.2, "tag": f"after{i}"})
        for i in range(8)
    ]
    after = [wait_task(workers[0], t["id"]) for t in later]
    assert {d["result"]["node"] for d in after} == {"restart-a", "restart-b"}
    client.close()


def test_outage_longer_than_reclaim_idle_runs_no_task_twice(
    workers: list[ServerProcess], own_redis: OwnRedis
) -> None:
    """Found by bench/faults.py (a 35 s outage): tasks running when Redis stopped finish while
    it is down and their workers keep the outcome; no keepalive could reach Redis, so every
    entry is idle past ``reclaim_idle`` when it returns. The node that reconnected must not
    reclaim and run them again before their owners had a chance to report. End to end this
    depends on which loop reaches Redis first; test_redis_broker has the deterministic form."""
    tags = [f"long{i}" for i in range(4)]  # capacity 2 on each of the two nodes: all running
    payload = {"seconds": 1.0, "log_finish": False}
    ids = [
        submit(workers[0], capability="test.sleep", payload={**payload, "tag": tag})["id"]
        for tag in tags
    ]
    time.sleep(0.5)
    own_redis.kill()
    time.sleep(FAST_AGENTS["reclaim_idle"] + 2.0)
    own_redis.start()
    done = [wait_task(workers[1], task_id) for task_id in ids]
    assert [d["state"] for d in done] == ["succeeded"] * len(ids), done
    client = redis.Redis(port=own_redis.port, decode_responses=True)
    log = [json.loads(e) for e in client.lrange("restart:runs", 0, -1)]
    client.close()
    starts = [e["tag"] for e in log if e["event"] == "start" and e["tag"] in tags]
    assert sorted(starts) == tags, log  # each one started once: none was run again
    assert [d["attempts"] for d in done] == [1] * len(ids), done


def test_outage_longer_than_agent_timeout_refuses_no_submit_with_404(
    make_server: Any, own_redis: OwnRedis
) -> None:
    """Found by bench/faults.py (a 35 s outage): the registry entries expired while Redis was
    down, so until the next heartbeat (2 s by default) a submit for the node's own agent was a
    404 no_agent, which tells the caller to give up. It is accepted: the node's agent takes it.
    A slow heartbeat here makes that window seconds wide."""
    agents = {
        **FAST_AGENTS,
        "redis_url": own_redis.url,
        "key_prefix": "restart-registry:",
        "enabled": ["test.sleep"],
        "heartbeat_interval": 4.0,
        "agent_timeout": 5.0,
        "reclaim_idle": 8.0,
    }
    node = make_server({"server": {"node_id": "registry"}, "agents": agents}, name="registry")
    node.start()
    try:
        wait_agents(node, 1)
        own_redis.kill()
        time.sleep(agents["agent_timeout"] + 0.5)
        own_redis.start()
        seen: list[int] = []
        ids = []
        deadline = time.monotonic() + agents["heartbeat_interval"] + 1.5
        while time.monotonic() < deadline:
            status, _, body = node.request(
                "POST", "/api/v1/agents/tasks", {"capability": "test.sleep", "payload": {}}
            )
            seen.append(status)
            if status == 202:
                ids.append(body["id"])
            time.sleep(0.1)
        assert set(seen) <= {202, 503}, seen  # 503 (retry) while reconnecting, never 404
        assert ids
        assert {wait_task(node, i)["state"] for i in ids} == {"succeeded"}
    finally:
        node.stop()
