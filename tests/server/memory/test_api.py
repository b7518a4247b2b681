"""The memory API on real server processes: an edge node (Redis hot, directory warm) whose cold
tier is a second server process (the cloud peer), migrations across all three tiers, and kill -9
during migration."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.server.memory.conftest import PrivateRedis
from tests.server.server_process import TOKENS, ServerProcess

MODELS = {"context_size": 512, "max_tokens_default": 16, "slots": 2}


@pytest.fixture(scope="module")
def make_node(
    tmp_path_factory: pytest.TempPathFactory,
    seed_data_dir: Callable[[Path], Path],
    seed_embedding: Callable[[Path], None],
) -> Iterator[Callable[..., ServerProcess]]:
    made: list[ServerProcess] = []

    def make(name: str, memory: dict[str, Any]) -> ServerProcess:
        proc = ServerProcess(
            tmp_path_factory.mktemp(name), {"models": MODELS, "memory": memory}, name=name
        )
        seed_data_dir(proc.data_dir)
        seed_embedding(proc.data_dir)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()


@pytest.fixture(scope="module")
def cloud(make_node: Callable[..., ServerProcess]) -> ServerProcess:
    """The cloud peer: in-process hot tier written through to its own directory."""
    return make_node("cloud", {"mover_interval_seconds": 3600}).start()


def _path(namespace: str, key: str) -> str:
    return f"/api/v1/memory/items/{quote(namespace, safe='')}/{quote(key, safe='')}"


def _keys(node: ServerProcess, namespace: str, tier: str | None = None) -> list[str]:
    query = f"?namespace={quote(namespace)}&limit=10000" + (f"&tier={tier}" if tier else "")
    status, _, body = node.request("GET", "/api/v1/memory/items" + query)
    assert status == 200, body
    return [item["key"] for item in body["items"]]


def _edge_memory(
    cloud: ServerProcess, redis_url: str, prefix: str, warm: Path, **extra: Any
) -> dict[str, Any]:
    warm.mkdir(parents=True, exist_ok=True)
    return {
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "warm_path": str(warm),
        "cold_url": cloud.url,
        "cold_token": TOKENS["operator"],
        "mover_interval_seconds": 3600,
        **extra,
    }


def test_api_crud_search_and_errors(cloud: ServerProcess) -> None:
    ns = "user:api-test"
    status, _, item = cloud.request(
        "PUT", _path(ns, "garage_code"), {"value": "The garage code is 4411", "tags": ["codes"]},
        token=TOKENS["operator"],
    )  # fmt: skip
    assert status == 200 and item["tier"] == "hot"
    status, _, got = cloud.request("GET", _path(ns, "garage_code"), token=TOKENS["reader"])
    assert status == 200 and got["value"] == "The garage code is 4411"
    status, _, found = cloud.request(
        "POST", "/api/v1/memory/search", {"namespace": ns, "query": "what is the garage code"},
        token=TOKENS["reader"],
    )  # fmt: skip
    assert status == 200 and found["results"][0]["key"] == "garage_code"
    assert 0.5 < found["results"][0]["score"] <= 1.0
    # Roles: a reader cannot write.
    status, _, err = cloud.request("PUT", _path(ns, "x"), {"value": 1}, token=TOKENS["reader"])
    assert status == 403
    # Bad input: clear 4xx JSON naming the field.
    for body, param in (
        ({"value": "x" * 300_000}, "value"),
        ({"value": 1, "tags": "not-a-list"}, "tags"),
        ({"value": 1, "ttl_seconds": -5}, "ttl_seconds"),
    ):
        status, _, err = cloud.request("PUT", _path(ns, "bad"), body)
        assert status == 400, err
        assert err["error"]["param"] == param, err
    status, _, err = cloud.request("PUT", _path("..", "k"), {"value": 1})
    assert status in (400, 404)
    status, _, err = cloud.request("GET", "/api/v1/memory/items?tier=lukewarm")
    assert status == 400 and err["error"]["param"] == "tier"
    status, _, err = cloud.request("GET", _path(ns, "nothing-here"))
    assert status == 404 and err["error"]["code"] == "not_found"
    status, _, err = cloud.request("POST", "/api/v1/memory/search", {"namespace": ns})
    assert status == 400 and err["error"]["param"] == "query"
    status, _, _ = cloud.request("DELETE", _path(ns, "garage_code"))
    assert status == 200
    status, _, _ = cloud.request("DELETE", _path(ns, "garage_code"))
    assert status == 404
    status, _, metrics = cloud.request("GET", "/metrics")
    assert 'prime_spark_memory_items{tier="warm"}' in metrics


def test_three_tiers_demote_and_promote(
    cloud: ServerProcess,
    make_node: Callable[..., ServerProcess],
    redis_url: str,
    tmp_path: Path,
) -> None:
    prefix = f"ps-test-api-{random.getrandbits(40):x}:"
    edge = make_node(
        "edge-tiers",
        _edge_memory(
            cloud,
            redis_url,
            prefix,
            tmp_path / "nas",
            hot_idle_seconds=3600,
            warm_idle_seconds=3600,
            hot_max_items=4,
            warm_max_items=3,
        ),
    ).start()
    ns = "user:tiers"
    try:
        for i in range(10):
            status, _, body = edge.request("PUT", _path(ns, f"k{i:02d}"), {"value": f"value {i}"})
            assert status == 200 and body["tier"] == "hot", body
        status, _, result = edge.request("POST", "/api/v1/memory/mover/run")
        assert status == 200, result
        assert result["moved"] == 6 + 3, result  # 6 hot→warm by capacity, then 3 warm→cold
        tiers = result["status"]["tiers"]
        assert tiers["hot"]["items"] == 4 and tiers["warm"]["items"] == 3
        assert tiers["cold"]["items"] == 3 and tiers["cold"]["available"] is True
        assert len(_keys(edge, ns, "hot")) == 4
        assert len(_keys(edge, ns, "warm")) == 3
        cold_keys = _keys(edge, ns, "cold")
        assert len(cold_keys) == 3 and set(_keys(cloud, ns)) == set(cold_keys)
        assert len(_keys(edge, ns)) == 10  # every item once
        # A read finds a cold item, and it comes back to the hot tier.
        key = cold_keys[0]
        status, _, got = edge.request("GET", _path(ns, key))
        assert status == 200 and got["tier"] == "cold" and got["value"] == f"value {int(key[1:])}"
        deadline = time.monotonic() + 10
        while key not in _keys(edge, ns, "hot") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert key in _keys(edge, ns, "hot")
        assert key not in _keys(cloud, ns)
        status, _, st = edge.request("GET", "/api/v1/memory/status")
        assert st["tiers"]["hot"]["promotions_in"] >= 1
        assert st["tiers"]["cold"]["demotions_in"] == 3
        # A delete reaches every tier.
        for k in _keys(edge, ns):
            assert edge.request("DELETE", _path(ns, k))[0] == 200
        assert _keys(edge, ns) == [] and _keys(cloud, ns) == []
    finally:
        edge.stop()


def test_kill_9_during_migration_loses_and_duplicates_nothing(
    cloud: ServerProcess,
    make_node: Callable[..., ServerProcess],
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Items stream hot → warm → cold (idle 0, mover every 50 ms) while reads promote them back;
    the node is killed with SIGKILL at random moments, restarted, killed again."""
    rng = random.Random(5)
    prefix = f"ps-test-kill-{rng.getrandbits(40):x}:"
    memory = _edge_memory(cloud, redis_url, prefix, tmp_path / "nas", hot_idle_seconds=0,
                          warm_idle_seconds=0, mover_interval_seconds=0.05, mover_batch=5)  # fmt: skip
    edge = make_node("edge-kill", memory)
    ns = "user:kill"
    expected = {f"item{i:03d}": {"n": i, "text": f"value number {i}"} for i in range(40)}
    edge.start()
    for key, value in expected.items():
        assert edge.request("PUT", _path(ns, key), {"value": value})[0] == 200
    replayed = 0
    for _ in range(6):
        time.sleep(rng.uniform(0.05, 0.6))
        for key in rng.sample(sorted(expected), 3):  # promotions in flight too
            edge.request("GET", _path(ns, key))
        assert edge.process is not None
        edge.process.kill()  # SIGKILL: no cleanup, no flush
        edge.process.wait()
        edge.start()
        replayed += edge.request("GET", "/api/v1/memory/status")[2]["mover"]["journal_replayed"]
    print(f"moves found interrupted and replayed after the kills: {replayed}")
    try:
        # After a restart, before anything settles: every item readable, each exactly once.
        listed = _keys(edge, ns)
        assert sorted(listed) == sorted(expected), "lost or duplicated in the listing"
        for key, value in expected.items():
            status, _, got = edge.request("GET", _path(ns, key) + "?promote=0")
            assert status == 200 and got["value"] == value, (key, got)
        # Let the mover settle: every item ends in exactly one place (the cold tier).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            hot, warm = _keys(edge, ns, "hot"), _keys(edge, ns, "warm")
            if not hot and not warm:
                break
            time.sleep(0.2)
        assert _keys(edge, ns, "hot") == [] and _keys(edge, ns, "warm") == []
        cold = _keys(cloud, ns)
        assert sorted(cold) == sorted(expected)
        status, _, st = edge.request("GET", "/api/v1/memory/status")
        assert st["mover"]["last_error"] is None, st["mover"]
    finally:
        edge.stop()
        for key in expected:
            cloud.request("DELETE", _path(ns, key))


def test_warm_path_missing_is_reported(
    make_node: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    node = make_node("edge-nonas", {"warm_path": str(tmp_path / "not-mounted")}).start()
    try:
        status, _, st = node.request("GET", "/api/v1/memory/status")
        assert status == 200
        warm = st["tiers"]["warm"]
        assert warm["available"] is False and warm["problem"] == "missing"
        status, _, err = node.request("PUT", _path("shared", "k"), {"value": 1})
        assert status == 503
        assert err["error"]["code"] == "warm_tier_unavailable"
        assert "not-mounted" in err["error"]["message"]
    finally:
        node.stop()


def test_redis_outage_reads_say_unavailable_not_missing(
    make_node: Callable[..., ServerProcess], tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """An item only Redis holds is unknown while Redis is down: 503 and Retry-After, never 404."""
    warm = tmp_path / "nas"
    warm.mkdir()
    memory = {
        "redis_url": private_redis.url,
        "warm_path": str(warm),
        "mover_interval_seconds": 3600,
    }
    node = make_node("edge-outage", memory).start()
    try:
        assert node.request("PUT", _path("shared", "in-redis"), {"value": 1})[0] == 200
        assert node.request("PUT", _path("shared", "gone"), {"value": 2})[0] == 200
        private_redis.stop()
        status, headers, err = node.request("GET", _path("shared", "in-redis"))
        assert status == 503, err
        assert err["error"]["code"] == "hot_tier_unavailable"
        assert "retry when it is back" in err["error"]["message"]
        assert headers["Retry-After"] == "5"
        # Writes and deletes still succeed: the warm tier takes the write, the delete is journalled.
        status, _, put = node.request("PUT", _path("shared", "during"), {"value": 3})
        assert status == 200 and put["tier"] == "warm"
        status, _, got = node.request("GET", _path("shared", "during"))
        assert status == 200 and got["value"] == 3
        assert node.request("DELETE", _path("shared", "gone"))[0] == 200
        private_redis.start()
        deadline = time.monotonic() + 10
        while node.request("GET", _path("shared", "in-redis"))[0] != 200:
            assert time.monotonic() < deadline, "the hot tier did not come back"
            time.sleep(0.2)
        assert node.request("GET", _path("shared", "gone"))[0] == 404
    finally:
        node.stop()
