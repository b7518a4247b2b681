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
    assert {"llm", "embed", "memory", "vision", "test.sleep", "test.fail"} <= capabilities
    # No Hailo here, but the CPU detector runs wherever OpenCV does: vision is offered.
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
    """The agent writes the tiered memory the /api/v1/memory routes read, in agent:memory."""
    stored = submit(
        agent_server,
        capability="memory",
        payload={"op": "store", "key": "door-code-hint", "value": {"hint": "blue"}},
        wait=30,
    )
    assert stored["state"] == "succeeded", stored
    assert stored["result"]["stored"] is True
    assert stored["result"]["namespace"] == "agent:memory"
    status, _, item = agent_server.request(
        "GET", "/api/v1/memory/items/agent:memory/door-code-hint", token=TOKENS["reader"]
    )
    assert status == 200, item
    assert item["value"] == {"hint": "blue"}
    recalled = submit(
        agent_server,
        capability="memory",
        payload={"op": "recall", "key": "door-code-hint"},
        wait=30,
    )
    assert recalled["result"]["found"] is True
    assert recalled["result"]["value"] == {"hint": "blue"}
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
    status, _, _ = agent_server.request(
        "GET", "/api/v1/memory/items/agent:memory/door-code-hint", token=TOKENS["reader"]
    )
    assert status == 404


def test_memory_recalls_what_the_memory_api_stored_in_another_namespace(
    agent_server: ServerProcess,
) -> None:
    status, _, body = agent_server.request(
        "PUT",
        "/api/v1/memory/items/agent:butler/plan",
        {"value": "water the plants"},
        token=TOKENS["operator"],
    )
    assert status in (200, 201), body
    recalled = submit(
        agent_server,
        capability="memory",
        payload={"op": "recall", "key": "plan", "namespace": "agent:butler"},
        wait=30,
    )
    assert recalled["result"]["value"] == "water the plants", recalled
    assert recalled["result"]["namespace"] == "agent:butler"


def test_vision_task_finds_the_astronaut(agent_server: ServerProcess) -> None:
    """A real photo through the agents API: the same answer as POST /api/v1/vision/detect."""
    import base64

    import cv2
    from skimage import data as skdata

    ok, png = cv2.imencode(".png", cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    task = submit(
        agent_server,
        capability="vision",
        payload={"image": base64.b64encode(png.tobytes()).decode(), "max_detections": 10},
        wait=60,
    )
    assert task["state"] == "succeeded", task
    result = task["result"]
    assert task["agent"].endswith(".vision")
    assert result["backend"] == "cpu"
    assert (result["width"], result["height"]) == (512, 512)
    faces = [o for o in result["objects"] if o["label"] == "face"]
    assert faces, result
    box = faces[0]["box"]
    assert box["x_min"] <= 223 <= box["x_max"] and box["y_min"] <= 113 <= box["y_max"]
    status, _, direct = agent_server.request(
        "POST", "/api/v1/vision/detect?max_detections=10", raw=png.tobytes()
    )
    assert status == 200, direct
    assert set(direct) == set(result)
    assert [o["box"] for o in direct["objects"]] == [o["box"] for o in result["objects"]]


def test_vision_task_with_a_broken_image_is_rejected_not_retried(
    agent_server: ServerProcess,
) -> None:
    import base64

    task = submit(
        agent_server,
        capability="vision",
        payload={"image": base64.b64encode(b"not an image at all").decode()},
        wait=60,
    )
    assert task["state"] == "dead", task
    assert task["attempts"] == 1
    assert "image" in task["error"]


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
    ("POST", "/api/v1/agents/tasks", {"capability": "sonar"}, 404, "sonar"),
    (
        "POST",
        "/api/v1/agents/tasks",
        {"capability": "vision", "payload": {"image": "###"}},
        400,
        "base64",
    ),
    ("POST", "/api/v1/agents/tasks", {"capability": "vision", "payload": {}}, 400, "image"),
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
