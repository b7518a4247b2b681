"""The response cache through /v1/chat/completions on a real server with the real models."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inference_server.config import MemorySettings
from inference_server.memory.cache import Alias, ResponseCache, encode_entry, hit_body
from tests.server.server_process import TOKENS, ServerProcess


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory,
    seed_data_dir: Callable[[Path], Path],
    seed_embedding: Callable[[Path], None],
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("cache"),
        {"models": {"context_size": 512, "max_tokens_default": 8, "slots": 2},
         "memory": {"cache_ttl_seconds": 3600},
         # admin's requests are private by default (the alias test's principal boundary)
         "routing": {"private_tokens": ["admin"]}},
        name="cache",
    )  # fmt: skip
    seed_data_dir(proc.data_dir)
    seed_embedding(proc.data_dir)
    proc.start()
    yield proc
    proc.stop()


def _chat(node: ServerProcess, text: str, headers: dict[str, str] | None = None,
          token: str = TOKENS["operator"], **extra: Any) -> tuple[str | None, dict[str, Any]]:  # fmt: skip
    body = {"messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 6,
            **extra}  # fmt: skip
    status, got_headers, data = node.request(
        "POST", "/v1/chat/completions", body, token=token, headers=headers
    )
    assert status == 200, data
    return got_headers.get("x-prime-spark-cache"), data


def test_exact_semantic_and_near_miss(node: ServerProcess) -> None:
    h = {"X-Prime-Spark-Namespace": "user:test-exact"}
    first_status, first = _chat(node, "turn on the kitchen light", h)
    assert first_status == "miss"
    again_status, again = _chat(node, "turn on the kitchen light", h)
    assert again_status == "hit"
    assert again["choices"] == first["choices"] and again["id"] != first["id"]
    # The hit is the stored reply (encoded once at store time) with its own id and time.
    per_request = {"id", "created", "timings"}
    assert {k: v for k, v in again.items() if k not in per_request} == {
        k: v for k, v in first.items() if k not in per_request
    }
    assert again["id"].startswith("chatcmpl-") and isinstance(again["created"], int)
    para_status, para = _chat(node, "please switch on the kitchen lights", h)
    assert para_status == "semantic-hit"
    assert para["choices"] == first["choices"]
    for near in ("turn off the kitchen light", "turn on the bedroom light"):
        assert _chat(node, near, h)[0] == "miss", near
    # Another sampling setting is another request.
    assert _chat(node, "turn on the kitchen light", h, max_tokens=5)[0] == "miss"


def test_scopes_never_share(node: ServerProcess) -> None:
    a = {"X-Prime-Spark-Namespace": "user:alice-scope"}
    b = {"X-Prime-Spark-Namespace": "user:bob-scope"}
    assert _chat(node, "lock the front door", a)[0] == "miss"
    assert _chat(node, "lock the front door", a)[0] == "hit"
    assert _chat(node, "lock the front door", b)[0] == "miss"
    private = {**a, "X-Prime-Spark-Private": "1"}
    assert _chat(node, "lock the front door", private)[0] == "miss"
    assert _chat(node, "lock the front door", private)[0] == "hit"
    assert _chat(node, "lock the front door", a, private=True)[0] == "hit"  # body flag = header
    # The OpenAI "user" field scopes too.
    assert _chat(node, "lock the front door", user="carol")[0] == "miss"
    assert _chat(node, "lock the front door", user="dave")[0] == "miss"


def test_bypass_and_non_deterministic(node: ServerProcess) -> None:
    h = {"X-Prime-Spark-Namespace": "user:bypass"}
    assert _chat(node, "open the garage door", h)[0] == "miss"
    assert (
        _chat(node, "open the garage door", {**h, "X-Prime-Spark-Cache": "bypass"})[0] == "bypass"
    )
    assert _chat(node, "open the garage door", h, cache="bypass")[0] == "bypass"
    assert _chat(node, "open the garage door", h, temperature=0.8)[0] == "bypass"
    assert _chat(node, "open the garage door", h, temperature=0.8, cache="always")[0] == "miss"
    assert _chat(node, "open the garage door", h, temperature=0.8, cache="always")[0] == "hit"


def test_streamed_reply_is_cached_and_replayed(node: ServerProcess) -> None:
    body = {"messages": [{"role": "user", "content": "what's the weather tomorrow"}],
            "temperature": 0, "max_tokens": 6, "stream": True, "namespace": "user:stream"}  # fmt: skip

    def stream() -> tuple[str | None, str]:
        request = urllib.request.Request(node.url + "/v1/chat/completions",
                                         data=json.dumps(body).encode(), method="POST")  # fmt: skip
        request.add_header("Authorization", f"Bearer {TOKENS['operator']}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            header = response.headers.get("x-prime-spark-cache")
            text = ""
            for line in response.read().decode().splitlines():
                if line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"]
                    if delta:
                        text += delta[0]["delta"].get("content") or ""
            return header, text

    status, text = stream()
    assert status == "miss"
    status2, text2 = stream()
    assert status2 == "hit" and text2 == text
    body["stream"] = False
    status3, data = _chat(
        node, "what's the weather tomorrow", {"X-Prime-Spark-Namespace": "user:stream"}
    )
    assert status3 == "hit" and data["choices"][0]["message"]["content"] == text


def test_cache_stats_metrics_and_flush(node: ServerProcess) -> None:
    status, _, stats = node.request("GET", "/api/v1/memory/cache", token=TOKENS["reader"])
    assert status == 200 and stats["hits"] >= 1 and stats["entries"] >= 1
    assert 0 < stats["hit_rate"] <= 1
    _, _, metrics = node.request("GET", "/metrics")
    assert 'prime_spark_response_cache_lookups_total{result="semantic-hit"}' in metrics
    assert node.request("DELETE", "/api/v1/memory/cache", token=TOKENS["reader"])[0] == 403
    status, _, flushed = node.request("DELETE", "/api/v1/memory/cache", token=TOKENS["operator"])
    assert status == 200 and flushed["flushed"] >= 1
    assert (
        _chat(node, "turn on the kitchen light", {"X-Prime-Spark-Namespace": "user:test-exact"})[0]
        == "miss"
    )


def _hits(node: ServerProcess) -> int:
    status, _, stats = node.request("GET", "/api/v1/memory/cache", token=TOKENS["reader"])
    assert status == 200, stats
    return int(stats["hits"])


def test_repeated_hits_keep_every_boundary(node: ServerProcess) -> None:
    """From the second exact hit on, byte-identical requests are answered from an alias of the
    first one (no parsing, validation or canonical key). The alias must never serve another
    namespace, privacy scope or principal, nor a bypass, and every hit is still counted."""
    text = "close the living room blinds"
    a = {"X-Prime-Spark-Namespace": "user:alias-a"}
    assert _chat(node, text, a)[0] == "miss"
    before = _hits(node)
    replies = [_chat(node, text, a) for _ in range(4)]
    assert [status for status, _ in replies] == ["hit"] * 4
    assert _hits(node) == before + 4
    assert len({data["id"] for _, data in replies}) == 4  # each hit has its own id
    assert all(data["choices"] == replies[0][1]["choices"] for _, data in replies)
    # The same bytes under other scopes: never the alias's entry.
    assert _chat(node, text, {"X-Prime-Spark-Namespace": "user:alias-b"})[0] == "miss"
    assert _chat(node, text, {**a, "X-Prime-Spark-Private": "1"})[0] == "miss"
    assert _chat(node, text, {**a, "X-Prime-Spark-Cache": "bypass"})[0] == "bypass"
    # Another principal, same bytes and headers: admin is private by default (private_tokens).
    c = {"X-Prime-Spark-Namespace": "user:alias-c"}
    assert [_chat(node, text, c)[0] for _ in range(3)] == ["miss", "hit", "hit"]
    assert _chat(node, text, c, token=TOKENS["admin"])[0] == "miss"
    for _ in range(3):
        assert _chat(node, text, c, token=TOKENS["admin"])[0] == "hit"
        assert _chat(node, text, c)[0] == "hit"
    # A body flag is part of the bytes: explicit "private": false is the operator's entry.
    assert _chat(node, text, a, private=False)[0] == "hit"
    assert _chat(node, text, a, token=TOKENS["admin"], private=False)[0] == "hit"
    # Headers too long to keep in an alias key: no alias, the full path answers every time.
    long = {"X-Prime-Spark-Namespace": "user:" + "x" * 600}
    assert [_chat(node, text, long)[0] for _ in range(3)] == ["miss", "hit", "hit"]
    # An invalid header is still refused, alias or not.
    status, _, body = node.request(
        "POST", "/v1/chat/completions",
        {"messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 6},
        token=TOKENS["operator"], headers={**a, "X-Prime-Spark-Private": "maybe"},
    )  # fmt: skip
    assert status == 400 and body["error"]["code"] == "invalid_header"


def test_alias_honours_ttl_and_flush() -> None:
    """An alias only points at an entry: once the entry expired (or was flushed), using it finds
    nothing and counts nothing, so the caller's full lookup misses as it always did."""
    cache = ResponseCache(MemorySettings(cache_ttl_seconds=0.3, cache_semantic=False), None)
    body = {"messages": [{"role": "user", "content": "hello"}], "temperature": 0}
    reply = {"id": "x", "created": 1, "object": "chat.completion",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                          "finish_reason": "stop"}]}  # fmt: skip

    async def run() -> None:
        miss = await cache.lookup(body, {}, "m", private=False)
        cache.store(miss, reply)
        hit = await cache.lookup(body, {}, "m", private=False)
        assert hit.status == "hit" and hit.key is not None
        alias = Alias(key=hit.key, model=None, private=None, resolved_model="m",
                      resolved_private=False, stream=False, include_usage=False)  # fmt: skip
        cache.remember_alias(b"k", alias)
        assert cache.alias(b"k") == alias
        again = cache.lookup_alias(b"k", alias)
        assert again is not None and again.status == "hit" and again.response == reply
        assert cache.counters.hit == 2
        time.sleep(0.35)
        assert cache.lookup_alias(b"k", alias) is None
        assert cache.alias(b"k") is None and cache.counters.hit == 2
        assert (await cache.lookup(body, {}, "m", private=False)).status == "miss"
        cache.store(await cache.lookup(body, {}, "m", private=False), reply)
        cache.remember_alias(b"k", alias)
        cache.flush()
        assert cache.alias(b"k") is None

    asyncio.run(run())


def test_hit_body_splices_id_and_time_into_the_stored_json() -> None:
    stored = {"id": "old", "created": 1, "object": "chat.completion",
              "choices": [{"message": {"content": "Lumière \u2713 \"quoted\""}}]}  # fmt: skip
    body = json.loads(hit_body(encode_entry(stored), "chatcmpl-new", 42))
    assert body == {**stored, "id": "chatcmpl-new", "created": 42}
    assert json.loads(hit_body(encode_entry({"id": "x"}), "chatcmpl-a", 7)) == {
        "id": "chatcmpl-a",
        "created": 7,
    }
