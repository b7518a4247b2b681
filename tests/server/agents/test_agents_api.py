"""The agents API on one node, with the in-process broker and with Redis (same tests)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.agents.conftest import submit, wait_task
from tests.server.api.test_http_contract import assert_matches_contract
from tests.server.server_process import TOKENS, ServerProcess


def test_agents_listed_with_capabilities(agent_server: ServerProcess) -> None:
    status, _, body = agent_server.request("GET", "/api/v1/agents", token=TOKENS["reader"])
    assert status == 200
    capabilities = {c for a in body["agents"] for c in a["capabilities"]}
    assert {"llm", "embed", "memory", "test.sleep", "test.fail"} <= capabilities
    assert "vision" not in capabilities  # no vision backend: not registered, not faked
    sleeper = next(a for a in body["agents"] if a["capabilities"] == ["test.sleep"])
    assert sleeper["capacity"] == 1
    assert sleeper["tier"] == "edge"
    assert body["capabilities"]["llm"]["agents"] == 1
    assert body["broker"] in ("local", "redis")


def test_llm_task_runs_on_the_real_model(agent_server: ServerProcess) -> None:
    task = submit(
        agent_server,
        capability="llm",
        payload={"prompt": "Say hello to the kitchen.", "max_tokens": 12, "temperature": 0},
        wait=60,
    )
    assert task["state"] == "succeeded", task
    assert task["result"]["text"]
    assert task["result"]["usage"]["completion_tokens"] >= 1
    assert task["attempts"] == 1
    assert task["agent"].endswith(".llm")


def test_summarise_and_embed(agent_server: ServerProcess) -> None:
    summary = submit(
        agent_server,
        capability="llm",
        payload={
            "summarise": "The front door opened at 8. The lights went off at 9.",
            "max_tokens": 16,
        },
        wait=60,
    )
    assert summary["state"] == "succeeded", summary
    embedded = submit(agent_server, capability="embed", payload={"input": ["a", "b"]}, wait=60)
    assert embedded["state"] == "succeeded", embedded
    vectors = embedded["result"]["embeddings"]
    assert len(vectors) == 2
    assert len(vectors[0]) > 16


def test_memory_store_recall_forget(agent_server: ServerProcess) -> None:
    stored = submit(
        agent_server,
        capability="memory",
        payload={"op": "store", "key": "door-code-hint", "value": {"hint": "blue"}},
        wait=30,
    )
    assert stored["result"] == {"key": "door-code-hint", "stored": True}
    recalled = submit(
        agent_server,
        capability="memory",
        payload={"op": "recall", "key": "door-code-hint"},
        wait=30,
    )
    assert recalled["result"] == {"key": "door-code-hint", "found": True, "value": {"hint": "blue"}}
    forgot = submit(
        agent_server,
        capability="memory",
        payload={"op": "forget", "key": "door-code-hint"},
        wait=30,
    )
    assert forgot["result"]["forgotten"] is True
    again = submit(
        agent_server,
        capability="memory",
        payload={"op": "recall", "key": "door-code-hint"},
        wait=30,
    )
    assert again["result"]["found"] is False


def test_idempotency_key_returns_the_same_task(agent_server: ServerProcess) -> None:
    key = f"idem-{time.time_ns()}"
    first = submit(
        agent_server, capability="test.sleep", payload={"seconds": 0}, idempotency_key=key
    )
    second = submit(
        agent_server, capability="test.sleep", payload={"seconds": 0}, idempotency_key=key
    )
    assert first["created"] is True
    assert second["created"] is False
    assert second["id"] == first["id"]
    done = wait_task(agent_server, first["id"])
    assert done["state"] == "succeeded"
    third = submit(
        agent_server, capability="test.sleep", payload={"seconds": 0}, idempotency_key=key
    )
    assert third["id"] == first["id"]
    assert third["state"] == "succeeded"


def test_priorities_are_honoured(agent_server: ServerProcess) -> None:
    """With the only slot busy, high runs before normal before low, whatever the submit order."""
    blocker = submit(agent_server, capability="test.sleep", payload={"seconds": 1.5})
    ids = [
        submit(agent_server, capability="test.sleep", payload={"seconds": 0.01}, priority=p)["id"]
        for p in ("low", "normal", "high")
    ]
    done = [wait_task(agent_server, task_id) for task_id in ids]
    wait_task(agent_server, blocker["id"])
    started = {d["priority"]: d["started_at"] for d in done}
    assert started["high"] < started["normal"] < started["low"], done


def test_cancel_a_queued_task(agent_server: ServerProcess) -> None:
    blocker = submit(agent_server, capability="test.sleep", payload={"seconds": 1.0})
    queued = submit(agent_server, capability="test.sleep", payload={"seconds": 0})
    status, _, cancelled = agent_server.request(
        "POST", f"/api/v1/agents/tasks/{queued['id']}/cancel", token=TOKENS["operator"]
    )
    assert status == 200, cancelled
    assert cancelled["state"] == "cancelled"
    wait_task(agent_server, blocker["id"])
    after = wait_task(agent_server, queued["id"])
    assert after["state"] == "cancelled"
    assert after["attempts"] == 0
    status, _, body = agent_server.request("POST", f"/api/v1/agents/tasks/{queued['id']}/cancel")
    assert status == 409
    assert "cancelled" in body["error"]["message"]


def test_deadline_passed_in_the_queue_expires(agent_server: ServerProcess) -> None:
    blocker = submit(agent_server, capability="test.sleep", payload={"seconds": 1.0})
    late = submit(agent_server, capability="test.sleep", payload={"seconds": 0}, timeout=0.2)
    assert late["deadline"] is not None
    wait_task(agent_server, blocker["id"])
    assert wait_task(agent_server, late["id"])["state"] == "expired"


def test_poison_task_is_dead_lettered_after_max_deliveries(agent_server: ServerProcess) -> None:
    task = submit(agent_server, capability="test.fail", payload={"n": 1})
    done = wait_task(agent_server, task["id"])
    assert done["state"] == "dead", done
    assert done["attempts"] == 3
    assert "PoisonError" in done["error"]
    status, _, body = agent_server.request("GET", "/api/v1/agents/dead-letters?limit=50")
    assert status == 200
    letter = next(d for d in body["dead_letters"] if d["task_id"] == task["id"])
    assert letter["attempts"] == 3
    assert "poison payload" in letter["error"]
    assert letter["payload"] == {"n": 1}


def test_list_tasks_filters(agent_server: ServerProcess) -> None:
    task = submit(agent_server, capability="test.sleep", payload={"seconds": 0}, wait=30)
    status, _, body = agent_server.request(
        "GET", "/api/v1/agents/tasks?capability=test.sleep&state=succeeded&limit=200"
    )
    assert status == 200
    assert task["id"] in {t["id"] for t in body["tasks"]}
    assert all(t["state"] == "succeeded" for t in body["tasks"])


def test_metrics_show_tasks_and_queue_depth(agent_server: ServerProcess) -> None:
    submit(agent_server, capability="test.sleep", payload={"seconds": 0}, wait=30)
    time.sleep(1.5)  # the metrics snapshot refreshes every second
    status, _, text = agent_server.request("GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    depth = families["prime_spark_agent_queue_depth"]
    assert any(s.labels["capability"] == "test.sleep" for s in depth.samples)
    finished = families["prime_spark_agent_tasks_finished"]
    assert any(s.labels["state"] == "succeeded" and s.value >= 1 for s in finished.samples)


BAD: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/api/v1/agents/tasks", {}, 400, "capability: is required"),
    ("POST", "/api/v1/agents/tasks", {"capability": "LLM!"}, 400, "capability"),
    ("POST", "/api/v1/agents/tasks", {"capability": "llm", "payload": []}, 400, "payload"),
    (
        "POST",
        "/api/v1/agents/tasks",
        {"capability": "llm", "payload": {"prompt": "a", "summarise": "b"}},
        400,
        "exactly one of",
    ),
    ("POST", "/api/v1/agents/tasks", {"capability": "memory", "payload": {"op": "x"}}, 400, "op"),
    ("POST", "/api/v1/agents/tasks", {"capability": "llm", "priority": "urgent"}, 400, "priority"),
    ("POST", "/api/v1/agents/tasks", {"capability": "llm", "timeout": -1}, 400, "timeout"),
    ("POST", "/api/v1/agents/tasks", {"capability": "llm", "timeout": "5"}, 400, "timeout"),
    ("POST", "/api/v1/agents/tasks", {"capability": "vision"}, 404, "vision"),
    ("POST", "/api/v1/agents/tasks", b"{oops", 400, "not valid JSON"),
    ("GET", "/api/v1/agents/tasks?state=happy", None, 400, "state"),
    ("GET", "/api/v1/agents/tasks?limit=lots", None, 400, "limit"),
    ("GET", "/api/v1/agents/tasks/not-a-task", None, 404, "not-a-task"),
    ("GET", "/api/v1/agents/tasks/not-a-task?wait=-3", None, 400, "wait"),
    ("POST", "/api/v1/agents/tasks/not-a-task/cancel", None, 404, "not-a-task"),
    ("GET", "/api/v1/agents/dead-letters?limit=9999", None, 400, "limit"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "text"), BAD)
def test_bad_input_is_a_clear_4xx(
    agent_server: ServerProcess, method: str, path: str, body: Any, status: int, text: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    got, _, answer = agent_server.request(method, path, None if raw is not None else body, raw=raw)
    assert got == status, answer
    assert text in answer["error"]["message"]


def test_roles(agent_server: ServerProcess) -> None:
    body = {"capability": "test.sleep", "payload": {"seconds": 0}}
    status, _, answer = agent_server.request(
        "POST", "/api/v1/agents/tasks", body, token=TOKENS["reader"]
    )
    assert status == 403
    assert "operator" in answer["error"]["message"]
    status, _, _ = agent_server.request("GET", "/api/v1/agents", token=None)
    assert status == 401


def test_answers_match_the_contract(agent_server: ServerProcess) -> None:
    task = submit(agent_server, capability="test.sleep", payload={"seconds": 0.2})
    assert_matches_contract("POST", "/api/v1/agents/tasks", 202, task)
    template = "/api/v1/agents/tasks/{task_id}"
    status, _, body = agent_server.request("GET", f"/api/v1/agents/tasks/{task['id']}?wait=30")
    assert_matches_contract("GET", template, status, body)
    for path in ("/api/v1/agents", "/api/v1/agents/tasks", "/api/v1/agents/dead-letters"):
        status, _, body = agent_server.request("GET", path)
        assert_matches_contract("GET", path, status, body)
    status, _, body = agent_server.request("POST", f"/api/v1/agents/tasks/{task['id']}/cancel")
    assert_matches_contract("POST", template + "/cancel", status, body)


def test_cancel_a_running_task_frees_its_slot(agent_server: ServerProcess) -> None:
    long = submit(agent_server, capability="test.sleep", payload={"seconds": 120})
    for _ in range(100):
        _, _, current = agent_server.request("GET", f"/api/v1/agents/tasks/{long['id']}")
        if current["state"] == "running":
            break
        time.sleep(0.1)
    assert current["state"] == "running", current
    status, _, cancelled = agent_server.request("POST", f"/api/v1/agents/tasks/{long['id']}/cancel")
    assert status == 200, cancelled
    # The only test.sleep slot is free again long before the 120 s sleep would have ended.
    follow = submit(agent_server, capability="test.sleep", payload={"seconds": 0}, wait=60)
    assert follow["state"] == "succeeded", follow
    _, _, after = agent_server.request("GET", f"/api/v1/agents/tasks/{long['id']}")
    assert after["state"] == "cancelled"
    assert after["result"] is None
