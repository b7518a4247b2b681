"""The tiered store on real Redis and real directories (the cold tier is tested in test_api.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from inference_server.memory.embedder import Embedder
from inference_server.memory.record import TierUnavailableError, checksum, item_id
from inference_server.memory.store import InvalidItemError, TieredMemory
from inference_server.memory.warm import DirectoryTier
from tests.server.memory.conftest import PrivateRedis, memory_settings


async def _store(tmp_path: Path, **settings: object) -> TieredMemory:
    store = TieredMemory(memory_settings(**settings), tmp_path / "data")
    await store.start()
    return store


async def test_put_get_list_delete_on_redis(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    store = await _store(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix)
    try:
        _item, tier = await store.put("user:alice", "garage_code", "4411", tags=["codes"],
                                     metadata={"source": "test"})  # fmt: skip
        assert tier == "hot"
        await store.put("user:alice", "garden_tap", {"open": False}, tags=["garden"])
        await store.put("user:bob", "garage_code", "9999")
        got = await store.get("user:alice", "garage_code")
        assert got is not None and got[0].value == "4411" and got[1] == "hot"
        assert got[0].metadata == {"source": "test"} and got[0].tags == ("codes",)
        keys = [i.key for i, _ in await store.list_items("user:alice")]
        assert keys == ["garage_code", "garden_tap"]
        assert [i.key for i, _ in await store.list_items("user:alice", prefix="garden")] == [
            "garden_tap"
        ]
        assert [i.key for i, _ in await store.list_items(None, tag="codes")] == ["garage_code"]
        assert await store.delete("user:alice", "garage_code")
        assert await store.get("user:alice", "garage_code") is None
        assert not await store.delete("user:alice", "garage_code")
        # The other namespace is untouched.
        bob = await store.get("user:bob", "garage_code")
        assert bob is not None and bob[0].value == "9999"
        status = await store.status()
        assert status["tiers"]["hot"]["backend"] == "redis"
        assert status["tiers"]["hot"]["items"] == 2
    finally:
        await store.close()


async def test_limits_are_refused(tmp_path: Path) -> None:
    store = await _store(tmp_path, max_value_bytes=64)
    try:
        with pytest.raises(InvalidItemError) as err:
            await store.put("shared", "big", "x" * 100)
        assert err.value.param == "value"
        with pytest.raises(InvalidItemError):
            await store.put("../etc", "k", 1)
        with pytest.raises(InvalidItemError):
            await store.put("shared", "", 1)
    finally:
        await store.close()


async def test_ttl_expires_in_every_tier(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    store = await _store(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix,
                         hot_idle_seconds=0)  # fmt: skip
    try:
        await store.put("shared", "short", "soon gone", ttl_seconds=1)
        await store.put("shared", "long", "stays")
        await store.mover_pass()  # both demoted to the warm tier
        assert {i.key for i, t in await store.list_items("shared", tier="warm")} == {
            "short",
            "long",
        }
        await asyncio.sleep(1.1)
        assert await store.get("shared", "short", promote=False) is None
        assert [i.key for i, _ in await store.list_items("shared")] == ["long"]
    finally:
        await store.close()


async def test_demotion_by_idle_and_capacity_then_promotion(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    store = await _store(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix,
                         hot_max_items=3, hot_idle_seconds=3600)  # fmt: skip
    try:
        for i in range(5):
            await store.put("shared", f"k{i}", i)
        # Make k1 the most recently read, so capacity pressure demotes k0, k2 first. Recency is
        # kept to the second (hot.recency): the read comes in the next second.
        await asyncio.sleep(1.01 - time.time() % 1)
        await store.get("shared", "k1")
        moved = await store.mover_pass()
        assert moved == 2
        hot = {i.key for i, _ in await store.list_items("shared", tier="hot")}
        warm = {i.key for i, _ in await store.list_items("shared", tier="warm")}
        assert hot == {"k1", "k3", "k4"} and warm == {"k0", "k2"}
        # A read finds the warm item, answers it, and promotes it back to the hot tier.
        got = await store.get("shared", "k0")
        assert got == (got[0], "warm") and got[0].value == 0  # type: ignore[index]
        await asyncio.sleep(0.2)
        while store._tasks:  # the promotion runs in the background
            await asyncio.sleep(0.05)
        assert {i.key for i, _ in await store.list_items("shared", tier="hot")} >= {"k0"}
        assert "k0" not in {i.key for i, _ in await store.list_items("shared", tier="warm")}
        status = await store.status()
        assert status["tiers"]["warm"]["demotions_in"] == 2
        assert status["tiers"]["hot"]["promotions_in"] == 1
        # Idle demotion: everything not read within hot_idle_seconds leaves.
        store.settings = memory_settings(redis_url=redis_url, redis_prefix=redis_prefix,
                                          hot_idle_seconds=0)  # fmt: skip
        await store.mover_pass()
        assert await store.list_items("shared", tier="hot") == []
        assert len(await store.list_items("shared")) == 5
    finally:
        await store.close()


async def test_in_process_hot_tier_writes_through(tmp_path: Path) -> None:
    """Without Redis a crash must not lose what the in-process hot tier held."""
    store = await _store(tmp_path)
    await store.put("shared", "note", "kept on disk")
    await store.close()
    again = await _store(tmp_path)
    try:
        got = await again.get("shared", "note")
        assert got is not None and got[0].value == "kept on disk" and got[1] == "warm"
    finally:
        await again.close()


async def test_warm_checksum_failure_is_quarantined(tmp_path: Path) -> None:
    store = await _store(tmp_path, hot_idle_seconds=0)
    try:
        await store.put("shared", "a", "alpha")
        await store.mover_pass()
        [path] = list((tmp_path / "data" / "memory" / "shared").glob("*.item"))
        data = path.read_bytes()
        path.write_bytes(data.replace(b"alpha", b"alphx"))
        assert await store.get("shared", "a") is None
        assert store.warm.corrupt_found == 1
        assert list((tmp_path / "data" / "memory" / ".quarantine").iterdir())
    finally:
        await store.close()


async def test_warm_atomic_write_leaves_no_partial_files(tmp_path: Path) -> None:
    tier = DirectoryTier(tmp_path / "warm", create=True)
    await tier.open()
    (tmp_path / "warm" / "shared").mkdir()
    (tmp_path / "warm" / "shared" / ".tmp-deadbeef").write_bytes(b"half a wri")
    await tier.open()  # a restart sweeps what a crash cut short
    assert not list((tmp_path / "warm" / "shared").glob(".tmp-*"))


async def test_warm_path_missing_or_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the NAS mount should be")
    store = await _store(tmp_path, warm_path=blocker / "prime-spark")
    try:
        status = await store.status()
        warm = status["tiers"]["warm"]
        assert warm["available"] is False and warm["problem"] == "missing"
        assert "not-a-dir/prime-spark" in warm["message"]
        # The in-process hot tier writes through to warm: the write fails clearly.
        with pytest.raises(TierUnavailableError) as err:
            await store.put("shared", "k", 1)
        assert "warm tier path" in str(err.value)
    finally:
        await store.close()


async def test_warm_unwritable_with_redis_reports_without_failing_writes(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    store = await _store(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix,
                         warm_path=tmp_path / "missing-share", hot_idle_seconds=0)  # fmt: skip
    try:
        _item, tier = await store.put("shared", "k", 1)
        assert tier == "hot"
        await store.mover_pass()  # cannot demote: reported, the item stays hot
        status = await store.status()
        assert "does not exist" in status["mover"]["last_error"]
        assert status["tiers"]["warm"]["problem"] == "missing"
        assert (await store.get("shared", "k")) is not None
        # The share appears (mounted): the next pass uses it.
        (tmp_path / "missing-share").mkdir()
        await store.recheck_warm()
        await store.mover_pass()
        assert [i.key for i, _ in await store.list_items("shared", tier="warm")] == ["k"]
    finally:
        await store.close()


async def test_redis_outage_degrades_to_warm_and_recovers(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    store = await _store(tmp_path, redis_url=private_redis.url)
    try:
        await store.put("shared", "before", "v1")
        await store.put("shared", "changed", "old")
        await store.put("shared", "removed", "x")
        private_redis.stop()
        # No errors to callers: writes land in the warm tier, reads fall through.
        _, tier = await store.put("shared", "during", "v2")
        assert tier == "warm"
        _, tier = await store.put("shared", "changed", "new")
        assert tier == "warm"
        # Only Redis held it: the delete is journalled and applied when Redis is back.
        assert await store.delete("shared", "removed") is True
        got = await store.get("shared", "during")
        assert got is not None and got[1] == "warm"
        # Only Redis holds "before": "not found" would be a guess, so the read says unavailable.
        with pytest.raises(TierUnavailableError) as unavailable:
            await store.get("shared", "before")
        assert unavailable.value.tier == "hot"
        assert "cannot be reached" in str(unavailable.value)
        assert (await store.status())["tiers"]["hot"]["available"] is False
        private_redis.start()  # same append-only file: Redis comes back with its data
        await asyncio.sleep(HOT_RETRY)
        assert await store.check_hot()
        # Writes made during the outage win over Redis's older copies.
        changed = await store.get("shared", "changed")
        assert changed is not None and changed[0].value == "new"
        assert await store.get("shared", "removed") is None
        before = await store.get("shared", "before")
        assert before is not None and before[1] == "hot"
        _, tier = await store.put("shared", "after", "v3")
        assert tier == "hot"
        assert (await store.status())["tiers"]["hot"]["available"] is True
    finally:
        await store.close()


HOT_RETRY = 1.1


async def test_semantic_search_top_k(tmp_path: Path, embedder: Embedder) -> None:
    store = TieredMemory(memory_settings(), tmp_path / "data", embedder=embedder)
    await store.start()
    try:
        await store.put("user:alice", "garage_code", "The garage code is 4411")
        await store.put("user:alice", "wifi_password", "The guest wifi password is sunflower")
        await store.put("user:alice", "dentist", "Dentist appointment on Friday at 3 pm")
        await store.put("user:bob", "garage_code", "Bob's garage code is 1234")
        results = await store.search("user:alice", "what's the garage code?", top_k=2)
        assert next(r[0].key for r in results) == "garage_code"
        assert len(results) == 2
        assert results[0][2] > results[1][2]
        assert all(r[0].namespace == "user:alice" for r in results)
        high = await store.search("user:alice", "what's the garage code?", min_score=0.6)
        assert [r[0].key for r in high] == ["garage_code"]
    finally:
        await store.close()


async def test_move_journal_replay_finishes_an_interrupted_move(tmp_path: Path) -> None:
    """A journal entry whose copy verified: the replay deletes the source copy, once."""
    store = await _store(tmp_path)
    try:
        await store.put("shared", "k", "v")
        text = await store.warm.get_raw("shared", "k")
        assert text is not None
        # A crash between "copied to the hot tier" and "deleted from warm" of a promotion into
        # a durable hot tier: the journal entry and both copies are there.
        store._journal.record(item_id("shared", "k"), "warm", "hot", checksum(text))
        store.hot.durable = True  # type: ignore[misc]
        assert await store.replay_journal() == 1
        assert await store.warm.get_raw("shared", "k") is None
        assert await store.hot.get_raw("shared", "k") == text
        assert await store.replay_journal() == 0
    finally:
        await store.close()
