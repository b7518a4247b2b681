"""HTTP behaviour clients rely on: auth per role, bad input, limits, metrics and the contract."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference_server.app import create_app
from inference_server.config import load_settings
from tests.server.server_process import TOKENS, ServerProcess

OPENAPI = json.loads(
    (Path(__file__).parents[3] / "inference_server" / "api" / "openapi.json").read_text()
)
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/health", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2}),
    ("POST", "/v1/embeddings", {"input": "hi"}),
    ("GET", "/api/v1/status", None),
    ("GET", "/api/v1/models", None),
    ("GET", "/api/v1/openapi.json", None),
    ("GET", "/api/v1/agents", None),
    ("GET", "/api/v1/agents/tasks", None),
    ("GET", "/api/v1/agents/dead-letters", None),
    (
        "POST",
        "/api/v1/agents/tasks",
        {"capability": "memory", "payload": {"op": "recall", "key": "k"}, "wait": 30},
    ),
]
ROLE_RANK = {"public": -1, "reader": 0, "operator": 1, "admin": 2}


def _operation(method: str, path: str) -> dict[str, Any]:
    return OPENAPI["paths"][path][method.lower()]  # type: ignore[no-any-return]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with components reachable, for jsonschema."""
    return {**schema, "components": OPENAPI["components"]}


def assert_matches_contract(method: str, path: str, status: int, body: Any) -> None:
    responses = _operation(method, path)["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, not in the contract"
    response = responses[str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"].get("application/json", {}).get("schema")
    if schema is not None and not isinstance(body, str):
        jsonschema.validate(body, _resolve(schema))


def test_openapi_document_matches_routes(tmp_path: Path) -> None:
    """Every route is documented and every documented route exists (method and path)."""
    settings = load_settings(
        environ={},
        overrides={"server": {"data_dir": str(tmp_path)}, "discovery": {"enabled": False}},
    )
    app = create_app(settings)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "OPTIONS")
    }
    documented = {
        (method.upper(), path)
        for path, operations in OPENAPI["paths"].items()
        for method in operations
    }
    assert served == documented


def test_served_document_is_the_checked_in_one(server: ServerProcess) -> None:
    status, _, body = server.request("GET", "/api/v1/openapi.json", token=None)
    assert status == 200
    assert body == OPENAPI


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("role", ["none", "bad", "reader", "operator", "admin"])
def test_auth_matrix(server: ServerProcess, method: str, path: str, body: Any, role: str) -> None:
    needed = _operation(method, path)["x-required-role"]
    token = {"none": None, "bad": "not-a-valid-token-at-all-xyz"}.get(role, TOKENS.get(role))
    status, headers, answer = server.request(method, path, body, token=token)
    if needed == "public":
        assert status == 200
    elif role in ("none", "bad"):
        assert status == 401
        assert headers["WWW-Authenticate"] == "Bearer"
        assert answer["error"]["type"] == "authentication_error"
    elif ROLE_RANK[role] < ROLE_RANK[needed]:
        assert status == 403
        assert needed in answer["error"]["message"]
    else:
        assert status == 200, answer
    assert_matches_contract(method, path, status, answer)


BAD_INPUTS: list[tuple[str, str, Any, int, str]] = [
    # (method, path, body or raw bytes, status, text the message must contain)
    ("POST", "/v1/chat/completions", b"{not json", 400, "not valid JSON"),
    ("POST", "/v1/chat/completions", b"\xff\xfe", 400, "not valid JSON"),
    ("POST", "/v1/chat/completions", [1, 2], 400, "JSON object"),
    ("POST", "/v1/chat/completions", {}, 400, "messages: is required"),
    ("POST", "/v1/chat/completions", {"messages": []}, 400, "at least one message"),
    ("POST", "/v1/chat/completions", {"messages": "hi"}, 400, "messages"),
    ("POST", "/v1/chat/completions", {**CHAT, "max_tokens": "ten"}, 400, "max_tokens"),
    ("POST", "/v1/chat/completions", {**CHAT, "max_tokens": 0}, 400, "max_tokens"),
    ("POST", "/v1/chat/completions", {**CHAT, "temperature": 5}, 400, "temperature"),
    ("POST", "/v1/chat/completions", {**CHAT, "top_p": "x"}, 400, "top_p"),
    ("POST", "/v1/chat/completions", {**CHAT, "stream": "yes"}, 400, "stream"),
    ("POST", "/v1/chat/completions", {**CHAT, "n": 3}, 400, "n other than 1"),
    ("POST", "/v1/chat/completions", {**CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("POST", "/v1/chat/completions", {**CHAT, "presence_penalty": 1}, 400, "penalt"),
    ("POST", "/v1/chat/completions", {**CHAT, "model": "no-such-model"}, 404, "no-such-model"),
    (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "wizard", "content": "x"}]},
        400,
        "role",
    ),
    ("POST", "/v1/chat/completions", {"messages": [{"content": "x"}]}, 400, "role"),
    (
        "POST",
        "/v1/chat/completions",
        {**CHAT, "response_format": {"type": "xml"}},
        400,
        "response_format",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {
            **CHAT,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "frobnicate"}},
            },
        },
        400,
        "schema",
    ),
    ("POST", "/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, 400, "tools"),
    (
        "POST",
        "/v1/chat/completions",
        {
            **CHAT,
            "tools": [{"type": "function", "function": {"name": "a"}}],
            "tool_choice": {"type": "function", "function": {"name": "b"}},
        },
        400,
        "tool_choice",
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "word " * 3000}], "max_tokens": 4},
        413,
        "tokens",
    ),
    ("POST", "/v1/completions", {"prompt": 5}, 400, "prompt"),
    ("POST", "/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "at least 1"),
    ("POST", "/v1/completions", {"prompt": "x", "max_tokens": 1.5}, 400, "expected an integer"),
    ("POST", "/v1/completions", {"prompt": "x", "temperature": "hot"}, 400, "expected a number"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "tool"}]}, 400, "required"),
    ("POST", "/v1/completions", {"prompt": "x", "echo": True}, 400, "echo"),
    ("POST", "/v1/completions", {"prompt": "x", "model": "nope"}, 404, "nope"),
    ("POST", "/v1/embeddings", {"input": ""}, 400, "input"),
    ("POST", "/v1/embeddings", {"input": []}, 400, "input"),
    ("POST", "/v1/embeddings", {"input": [1, 2]}, 400, "input"),
    ("POST", "/v1/embeddings", {"input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
    ("POST", "/v1/embeddings", {"input": "x", "model": "nope"}, 404, "nope"),
    ("GET", "/v1/nowhere", None, 404, "No such route"),
    ("DELETE", "/v1/models", None, 405, "not allowed"),
    ("POST", "/api/v1/models/nope/reload", None, 404, "nope"),
    # Contract mismatches schemathesis found (tests/server/api/test_fuzz.py): the server and
    # openapi.json now agree on each.
    ("GET", "/api/v1/agents/dead-letters?limit=0.5", None, 400, "limit: expected an integer"),
    ("GET", "/api/v1/agents/tasks?limit=1e2", None, 400, "limit: expected an integer"),
    ("GET", "/api/v1/agents/tasks?capability=", None, 400, "capability"),
    (
        "POST",
        "/api/v1/agents/tasks",
        {"capability": "memory", "timeout": 5e-324},
        400,
        "timeout: value must be at least 0.001",
    ),
    (
        "POST",
        "/api/v1/agents/tasks",
        {"capability": "memory", "idempotency_key": 5},
        400,
        "idempotency_key: expected a string",
    ),
    (
        "POST",
        "/api/v1/analytics/events",
        [
            {
                "event_id": "e3e70682-c209-1cac-a29f-6fbed82c07cd",
                "type": "node_health",
                "version": 0,
                "occurred_at": 0,
                "node_id": "n",
                "data": {},
            }
        ],
        400,
        "version 0 is not supported",
    ),
    ("GET", "/api/v1/memory/items?raw=null&raw=null", None, 400, "raw: expected 0 or 1"),
    ("GET", "/api/v1/memory/items?limit=0.5", None, 400, "limit: expected an integer"),
    ("GET", "/api/v1/memory/items/shared/k?promote=no", None, 400, "promote: expected 0 or 1"),
    (
        "POST",
        "/api/v1/memory/search",
        {"namespace": "shared", "query": "x", "min_score": False},
        400,
        "min_score: expected a number",
    ),
    (
        "POST",
        "/api/v1/memory/search",
        {"namespace": "shared", "query": "x", "top_k": "5"},
        400,
        "top_k: expected an integer",
    ),
    (
        "POST",
        "/api/v1/memory/search",
        {"namespace": "shared", "query": "x", "extra": 1},
        400,
        "extra: is not a known field",
    ),
    (
        "POST",
        "/api/v1/memory/search",
        {"namespace": "shared", "query": "x" * 257},
        400,
        "query: 1 to 256 characters",
    ),
    ("PUT", "/api/v1/memory/items/shared/k", {"raw": ""}, 400, "raw: not a memory item"),
    ("PUT", "/api/v1/memory/items/shared/k", {"raw": "0"}, 400, "raw: not a memory item"),
    ("PUT", "/api/v1/memory/items/shared/k", {"value": 1, "ttl_seconds": "5"}, 400, "ttl_seconds"),
    ("DELETE", "/api/v1/memory/items/shared/" + "k" * 513, None, 400, "key: 1-512"),
    ("DELETE", "/api/v1/memory/items/shared/k?if_checksum=abc", None, 400, "if_checksum"),
    ("PUT", "/api/v1/power", {"mode": "balanced", "x": 1}, 400, "is not a known field"),
    # Found by bench/fuzz.py: the routing body's schema allowed other fields, and an unknown
    # field named "" got a message with no subject.
    ("PUT", "/api/v1/routing", {"mode": "balanced", "": 1}, 400, '"": is not a known field'),
    # Found by bench/fuzz.py: the peer write filed a raw item under its own namespace and key
    # whatever the path said, and took paths the document refuses.
    ("PUT", "/api/v1/memory/items/%F1%A2%91/k", {"value": 1}, 400, "namespace: 1-128"),
    ("GET", "/api/v1/memory/items/shared/" + "k" * 513, None, 400, "key: 1-512"),
    (
        "PUT",
        "/api/v1/memory/items/shared/other",
        {
            "raw": '{"created_at":1.0,"embedding":null,"expires_at":null,"key":"k","metadata":{},'
            '"namespace":"shared","tags":[],"updated_at":1.0,"value":1}'
        },
        400,
        "raw: the item is 'shared'/'k', not 'shared'/'other' as the path says",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "text"), BAD_INPUTS)
def test_bad_input(
    server: ServerProcess, method: str, path: str, body: Any, status: int, text: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    got, _, answer = server.request(method, path, None if raw else body, raw=raw)
    assert got == status, answer
    assert text in answer["error"]["message"]
    assert answer["error"]["type"]
    if path in OPENAPI["paths"] and method.lower() in OPENAPI["paths"][path]:
        assert_matches_contract(method, path, got, answer)


def test_method_not_allowed_lists_the_allowed_ones(server: ServerProcess) -> None:
    """RFC 9110: a 405 says what the route does allow."""
    status, headers, _ = server.request("DELETE", "/v1/models")
    assert status == 405
    assert set(headers["Allow"].replace(" ", "").split(",")) >= {"GET"}


def test_integral_float_is_an_integer(server: ServerProcess) -> None:
    """JSON Schema (and generated clients) count 2.0 as an integer."""
    status, _, body = server.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 2.0})
    assert status == 200, body
    assert body["usage"]["completion_tokens"] <= 2


def test_body_too_large(tmp_path: Path, server: ServerProcess) -> None:
    huge = json.dumps({"prompt": "x" * (9 * 1024 * 1024)}).encode()
    status, _, answer = server.request("POST", "/v1/completions", raw=huge)
    assert status == 413
    assert "too large" in answer["error"]["message"]


def _metric(server: ServerProcess, name: str, **labels: str) -> float:
    status, _, text = server.request("GET", "/metrics", token=TOKENS["reader"])
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_parse_and_move(server: ServerProcess) -> None:
    before_requests = _metric(
        server, "prime_spark_http_requests_total", route="/v1/completions", status="200"
    )
    before_tokens = _metric(server, "prime_spark_tokens_total", direction="completion")
    status, _, _ = server.request("POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 4})
    assert status == 200
    assert (
        _metric(server, "prime_spark_http_requests_total", route="/v1/completions", status="200")
        == before_requests + 1
    )
    assert _metric(server, "prime_spark_tokens_total", direction="completion") >= before_tokens + 1
    assert _metric(server, "prime_spark_slots_total") == 4
    assert _metric(server, "prime_spark_model_loaded") >= 1
    assert (
        _metric(server, "prime_spark_http_request_duration_seconds_count", route="/v1/completions")
        >= 1
    )
    assert _metric(server, "prime_spark_generation_tokens_per_second_count") >= 1


def test_status(server: ServerProcess) -> None:
    status, _, body = server.request("GET", "/api/v1/status", token=TOKENS["reader"])
    assert status == 200
    assert body["ready"] is True and body["state"] == "ready"
    assert body["node_id"].startswith("ps-")
    assert body["slots"]["total"] == 4
    assert any(m["loaded"] for m in body["models"])
    assert body["caller"] == {"name": "reader", "role": "reader"}
    assert_matches_contract("GET", "/api/v1/status", status, body)
    # The node id survives a restart of the same data dir: HA keys its config entry on it.
    assert (server.data_dir / "node_id").read_text().strip() == body["node_id"]


def _open_stream(server: ServerProcess, max_tokens: int) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request(
        "POST",
        "/v1/completions",
        body=json.dumps(
            {
                "prompt": "Write a very long story about a lighthouse.",
                "max_tokens": max_tokens,
                "stream": True,
                "temperature": 1.0,
            }
        ),
        headers={"Authorization": f"Bearer {TOKENS['admin']}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")
    return response


def _generated(server: ServerProcess) -> float:
    return _metric(server, "prime_spark_engine_generated_tokens_total")


def test_disconnect_stops_generation(server: ServerProcess) -> None:
    before = _generated(server)
    response = _open_stream(server, max_tokens=900)
    for _ in range(3):  # a few tokens arrive, so the generation is really running
        assert response.readline() is not None
    response.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, _, body = server.request("GET", "/api/v1/status")
        if body["slots"]["busy"] == 0:
            break
        time.sleep(0.05)
    assert body["slots"]["busy"] == 0
    settled = _generated(server)
    time.sleep(1.0)
    assert _generated(server) == settled, "tokens kept being produced after the disconnect"
    assert before < settled < before + 900


def test_tool_mode_stream_keeps_alive_and_hides_a_cut_off_call(server: ServerProcess) -> None:
    """A buffered tool-mode reply is not silence: the role delta comes at once, comments while
    the call is written; a call cut off by max_tokens arrives as no content with ``length``."""
    tool = {
        "type": "function",
        "function": {
            "name": "set_light",
            "parameters": {"type": "object", "properties": {"entity_id": {"type": "string"}}},
        },
    }
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(
            {
                "messages": [{"role": "user", "content": "Turn on the kitchen light"}],
                "tools": [tool],
                "tool_choice": "required",
                "max_tokens": 6,
                "stream": True,
            }
        ),
        headers={"Authorization": f"Bearer {TOKENS['admin']}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 200
    lines = [line.strip() for line in response.read().decode().splitlines() if line.strip()]
    connection.close()
    assert lines.count(": keep-alive") >= 3  # one per buffered token after the first
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    deltas = [event["choices"][0]["delta"] for event in events if event["choices"]]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert all(not delta.get("content") and "tool_calls" not in delta for delta in deltas)
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "length"
    assert lines[-1] == "data: [DONE]"


def test_queue_full_gives_429(tight_server: ServerProcess) -> None:
    response = _open_stream(tight_server, max_tokens=400)
    try:
        status, headers, body = tight_server.request(
            "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2}
        )
    finally:
        response.close()
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert body["error"]["code"] == "queue_full"


def test_rate_limit_gives_429(tight_server: ServerProcess) -> None:
    statuses = [
        tight_server.request("GET", "/api/v1/status", token=TOKENS["reader"])[0] for _ in range(5)
    ]
    assert statuses[:4] == [200] * 4
    assert statuses[4] == 429
    status, headers, body = tight_server.request("GET", "/api/v1/status", token=TOKENS["reader"])
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert body["error"]["code"] == "rate_limited"
    # Another caller keeps its own budget.
    assert tight_server.request("GET", "/api/v1/status", token=TOKENS["operator"])[0] == 200


def test_tokens_never_logged(server: ServerProcess) -> None:
    server.request("GET", "/api/v1/status", token=TOKENS["reader"])
    server.request("GET", "/api/v1/status", token="wrong-token-that-must-not-appear-1234")
    log = server.log_path.read_text()
    assert "GET /api/v1/status" in log
    for token in (*TOKENS.values(), "wrong-token-that-must-not-appear-1234"):
        assert token not in log
