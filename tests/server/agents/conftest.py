"""Servers for the agents tests: real processes on the real model, isolated Redis key prefixes."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.server.api.conftest import make_server
from tests.server.server_process import ServerProcess

__all__ = ["make_server"]  # the API tests' server factory, shared

TEST_MODULES = [
    "tests.server.agents.agents_for_tests",
    "tests.server.agents.agents_for_tests_fail",
]

FAST_AGENTS: dict[str, Any] = {
    "modules": TEST_MODULES,
    "heartbeat_interval": 0.2,
    "agent_timeout": 2.0,
    "reclaim_idle": 2.0,
    "max_deliveries": 3,
    "retry_backoff": 0.05,
    "retry_backoff_max": 0.2,
    "result_ttl": 600,
}


def unique_prefix() -> str:
    """Each test run gets its own keys in the shared Redis."""
    return f"test-agents-{uuid.uuid4().hex[:10]}:"


def wait_task(server: ServerProcess, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Long-poll the task until it is final."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = server.request("GET", f"/api/v1/agents/tasks/{task_id}?wait=10")
        if status == 503 and time.monotonic() < deadline:  # broker away: retry, as documented
            time.sleep(0.5)
            continue
        assert status in (200, 202), body
        if status == 200 or time.monotonic() > deadline:
            return body  # type: ignore[no-any-return]


def submit(server: ServerProcess, **body: Any) -> dict[str, Any]:
    status, _, answer = server.request("POST", "/api/v1/agents/tasks", body)
    assert status in (200, 202), answer
    return answer  # type: ignore[no-any-return]


def wait_agents(server: ServerProcess, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = server.request("GET", "/api/v1/agents")
        assert status == 200, body
        if len(body["agents"]) >= count or time.monotonic() > deadline:
            return body["agents"]  # type: ignore[no-any-return]
        time.sleep(0.2)


@pytest.fixture(scope="module", params=["local", "redis"])
def agent_server(request: pytest.FixtureRequest, make_server: Any, redis_url: str) -> ServerProcess:
    """One node with every built-in agent plus the test agents, on either broker."""
    agents = dict(FAST_AGENTS)
    agents["capacity"] = {"test.sleep": 1}
    if request.param == "redis":
        agents["redis_url"] = redis_url
        agents["key_prefix"] = unique_prefix()
    server: ServerProcess = make_server({"agents": agents}, name=f"agents-{request.param}")
    server.start()
    wait_agents(server, 5)
    return server
