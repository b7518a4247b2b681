"""The response cache in front of the router: an edge with a cloud peer, two real servers.

What reached the cloud is read from the cloud's own ``/metrics`` (its request counter), so a
cache hit on the edge is proven to have cost the cloud nothing. Also here: reloading the
embedding model (the semantic cache's model) through the control API.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.server_process import (
    TOKENS,
    ServerProcess,
    first_peer,
    peer_settings,
    requests_served,
    until,
)

MODELS = {"context_size": 512, "max_tokens_default": 8, "slots": 2}
CACHE = "x-prime-spark-cache"
ROUTE = "x-prime-spark-route"


@pytest.fixture(scope="module")
def cloud(
    tmp_path_factory: pytest.TempPathFactory, seed_data_dir: Callable[[Path], Path]
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("cloud"),
        {"models": MODELS, "memory": {"cache_enabled": False}},
        name="cloud",
    )
    seed_data_dir(proc.data_dir)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory,
    seed_data_dir: Callable[[Path], Path],
    seed_embedding: Callable[[Path], None],
    cloud: ServerProcess,
) -> Iterator[ServerProcess]:
    peer = peer_settings(cloud)
    proc = ServerProcess(
        tmp_path_factory.mktemp("edge"),
        {"models": MODELS, "memory": {"cache_ttl_seconds": 3600},
         "routing": {"mode": "cloud_first", "peers": [peer], "health_interval": 0.5}},
        name="edge",
    )  # fmt: skip
    seed_data_dir(proc.data_dir)
    seed_embedding(proc.data_dir)
    proc.start()
    until(lambda: first_peer(proc)["reachable"] is True, "the edge to see its cloud peer")
    yield proc
    proc.stop()


def _body(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 6,
            **extra}  # fmt: skip


def _chat(
    edge: ServerProcess, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    status, got, data = edge.request(
        "POST", "/v1/chat/completions", body, token=TOKENS["operator"], headers=headers
    )
    assert status == 200, data
    return {k.lower(): v for k, v in got.items()}, data


def _stream(edge: ServerProcess, body: dict[str, Any]) -> tuple[dict[str, str], str]:
    """Headers and the concatenated content of a streamed chat answer."""
    request = urllib.request.Request(
        edge.url + "/v1/chat/completions",
        data=json.dumps({**body, "stream": True}).encode(),
        method="POST",
    )
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {TOKENS['operator']}")
    text: list[str] = []
    with urllib.request.urlopen(request, timeout=120) as response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        lines = [line for line in response if line.startswith(b"data: ")]
    assert lines[-1] == b"data: [DONE]\n"
    for line in lines[:-1]:
        for choice in json.loads(line[6:]).get("choices") or []:
            text.append(choice["delta"].get("content") or "")
    return headers, "".join(text)


def _node_id(proc: ServerProcess) -> str:
    return proc.request("GET", "/api/v1/status", token=TOKENS["reader"])[2]["node_id"]  # type: ignore[no-any-return]


def _unique(text: str) -> str:
    return f"{text} (ref {uuid.uuid4().hex[:6]})"


def test_cloud_answer_is_a_cache_hit_on_the_edge(edge: ServerProcess, cloud: ServerProcess) -> None:
    body = _body(_unique("Say hi."))
    before = requests_served(cloud, method="POST")
    headers, first = _chat(edge, body)
    assert headers[CACHE] == "miss"
    assert headers[ROUTE] == "cloud: cloud first"
    assert first["system_fingerprint"].endswith(_node_id(cloud))
    assert requests_served(cloud, method="POST") == before + 1
    headers, again = _chat(edge, body)
    assert headers[CACHE] == "hit"
    assert headers[ROUTE] == "cache: hit"
    assert "x-prime-spark-peer" not in headers
    assert again["choices"] == first["choices"]
    assert again["id"] != first["id"]
    assert requests_served(cloud, method="POST") == before + 1  # the cloud was asked once
    # A non-deterministic request is never answered from the cache: it goes to the cloud.
    headers, _ = _chat(edge, {**body, "temperature": 0.7})
    assert headers[CACHE] == "bypass"
    assert headers[ROUTE] == "cloud: cloud first"
    assert requests_served(cloud, method="POST") == before + 2


def test_streamed_cloud_answer_is_cached(edge: ServerProcess, cloud: ServerProcess) -> None:
    body = _body(_unique("Count to three."))
    before = requests_served(cloud, method="POST")
    headers, streamed = _stream(edge, body)
    assert headers[CACHE] == "miss"
    assert headers[ROUTE] == "cloud: cloud first"
    assert streamed
    assert requests_served(cloud, method="POST") == before + 1
    headers, whole = _chat(edge, body)  # stream is not part of the key
    assert headers[CACHE] == "hit"
    assert headers[ROUTE] == "cache: hit"
    assert whole["choices"][0]["message"]["content"] == streamed
    headers, replayed = _stream(edge, body)
    assert headers[CACHE] == "hit"
    assert replayed == streamed
    assert requests_served(cloud, method="POST") == before + 1


def test_private_never_shares_with_non_private(edge: ServerProcess, cloud: ServerProcess) -> None:
    text = _unique("Turn on the porch light.")
    private = {"X-Prime-Spark-Private": "1"}
    before = requests_served(cloud, method="POST")
    headers, mine = _chat(edge, _body(text), private)
    assert headers[CACHE] == "miss"
    assert headers[ROUTE] == "edge: private"
    assert _chat(edge, _body(text), private)[0][CACHE] == "hit"
    assert _chat(edge, _body(text, private=True))[0][CACHE] == "hit"  # body flag = header
    assert requests_served(cloud, method="POST") == before
    # The same request, not private: its own entry, answered by the cloud.
    headers, public = _chat(edge, _body(text))
    assert headers[CACHE] == "miss"
    assert headers[ROUTE] == "cloud: cloud first"
    assert public["system_fingerprint"].endswith(_node_id(cloud))
    assert requests_served(cloud, method="POST") == before + 1
    headers, again = _chat(edge, _body(text))
    assert headers[CACHE] == "hit"
    assert again["system_fingerprint"] == public["system_fingerprint"]
    # ... and a private request still gets the edge's own answer, never the cloud's.
    headers, mine_again = _chat(edge, _body(text), private)
    assert headers[CACHE] == "hit"
    assert mine_again["system_fingerprint"] == mine["system_fingerprint"]
    assert not mine["system_fingerprint"].endswith(_node_id(cloud))
    assert requests_served(cloud, method="POST") == before + 1


def test_reload_the_embedding_model(edge: ServerProcess) -> None:
    """The semantic cache's model reloads in place and keeps serving."""
    model = "all-minilm-l6-v2"
    status, _, first = edge.request(
        "POST", "/v1/embeddings", {"input": "kitchen light", "model": model, "private": True}
    )
    assert status == 200, first
    status, _, info = edge.request(
        "POST", f"/api/v1/models/{model}/reload", token=TOKENS["operator"]
    )
    assert status == 200, info
    assert info["id"] == model
    assert info["loaded"] is True
    status, _, again = edge.request(
        "POST", "/v1/embeddings", {"input": "kitchen light", "model": model, "private": True}
    )
    assert status == 200, again
    assert again["data"][0]["embedding"] == pytest.approx(first["data"][0]["embedding"], abs=1e-5)
    # The semantic cache still works on the reloaded copy.
    h = {
        "X-Prime-Spark-Namespace": f"user:reload-{uuid.uuid4().hex[:6]}",
        **{"X-Prime-Spark-Private": "1"},
    }
    assert _chat(edge, _body("turn on the kitchen light"), h)[0][CACHE] == "miss"
    assert _chat(edge, _body("please switch on the kitchen lights"), h)[0][CACHE] == "semantic-hit"
    status, _, body = edge.request(
        "POST", "/api/v1/models/no-such-model/reload", token=TOKENS["operator"]
    )
    assert status == 404, body
