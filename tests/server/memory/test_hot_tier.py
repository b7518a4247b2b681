"""RedisHotTier on real Redis: what its coalescer merges (concurrent callers' reads into one
MGET, their batch writes into one script call) keeps the item / LRU / byte-count invariants,
recovers from a flushed script cache and reports an unreachable Redis as TierUnavailableError."""

from __future__ import annotations

import asyncio
import random
import signal
import time

import pytest
import redis

from inference_server.memory.hot import RedisHotTier, recency
from inference_server.memory.record import TierUnavailableError
from tests.server.memory.conftest import PrivateRedis


def _invariants(url: str, prefix: str) -> tuple[dict[str, bytes], set[bytes], int]:
    """What Redis holds under the prefix: items by id, LRU members, the byte counter."""
    client = redis.Redis.from_url(url)
    try:
        head = (prefix + "i:").encode()
        keys: list[bytes] = list(client.scan_iter(match=prefix + "i:*", count=1000))
        values: list[bytes] = client.mget(keys) if keys else []  # type: ignore[assignment]
        items = {k[len(head) :].decode(): v for k, v in zip(keys, values, strict=True)}
        lru: set[bytes] = set(client.zrange(prefix + "lru", 0, -1))  # type: ignore[arg-type]
        size = int(client.get(prefix + "bytes") or 0)
    finally:
        client.close()
    return items, lru, size


async def test_concurrent_batches_keep_index_and_byte_count_exact(
    redis_url: str, redis_prefix: str
) -> None:
    tier = RedisHotTier(redis_url, redis_prefix)
    rng = random.Random(7)
    keys = [f"k{i}" for i in range(40)]
    written: dict[str, set[str]] = {k: set() for k in keys}

    async def writer(n: int) -> None:
        for round_ in range(30):
            batch = rng.sample(keys, 8)
            batch.append(batch[0])  # a key twice in one batch: the second write wins
            items = []
            for j, k in enumerate(batch):
                text = f"w{n}-r{round_}-{j}-" + "x" * rng.randrange(0, 300)
                items.append(("ns", k, text))
            for _, k, text in items[1:]:  # items[0] is overwritten by its repeat
                written[k].add(text)
            await tier.put_many(items)

    async def reader() -> None:
        for _ in range(30):
            got = await tier.get_many([f"ns\x00{k}" for k in rng.sample(keys, 10)])
            assert len(got) == 10

    try:
        await asyncio.gather(*(writer(n) for n in range(6)), *(reader() for _ in range(4)))
        items, lru, size = _invariants(redis_url, redis_prefix)
        assert set(items) == {f"ns\x00{k}" for k in keys}
        assert lru == {i.encode() for i in items}
        assert size == sum(len(v) for v in items.values())
        for ident, value in items.items():
            assert value.decode() in written[ident.split("\x00")[1]]
        usage = await tier.usage()
        assert (usage.items, usage.bytes) == (len(keys), size)
        # Reads see the writes, merged or not.
        one = await tier.get_raw("ns", "k1")
        many = await tier.get_many(["ns\x00k1", "ns\x00missing", "ns\x00k2"])
        assert one == many[0] and many[1] is None and many[2] == items["ns\x00k2"].decode()
    finally:
        await tier.close()


async def test_single_writes_and_conditional_deletes_beside_batches(
    redis_url: str, redis_prefix: str
) -> None:
    tier = RedisHotTier(redis_url, redis_prefix)
    try:
        results = await asyncio.gather(
            tier.put_raw("ns", "a", "first", only_if_absent=True),
            tier.put_many([("ns", "b", "bee"), ("ns", "c", "sea")]),
            tier.put_raw("ns", "a", "second", only_if_absent=True),
        )
        assert sorted([results[0], results[2]]) == [False, True]  # exactly one wins
        assert await tier.get_raw("ns", "a") in {"first", "second"}
        assert not await tier.delete("ns", "b", if_text="not bee")
        assert await tier.delete("ns", "b", if_text="bee")
        await tier.put_many([("ns", "c", "longer sea")])
        items, lru, size = _invariants(redis_url, redis_prefix)
        assert set(items) == {"ns\x00a", "ns\x00c"} and lru == {b"ns\x00a", b"ns\x00c"}
        assert size == sum(len(v) for v in items.values())
    finally:
        await tier.close()


async def test_recency_is_the_second_of_the_last_write_or_read(
    redis_url: str, redis_prefix: str
) -> None:
    """Scores are whole seconds (a ZADD of an unchanged score does not move the member), set by
    both write paths and by a read's touch, and the coldest are the oldest seconds."""
    tier = RedisHotTier(redis_url, redis_prefix)
    client = redis.Redis.from_url(redis_url)

    def score(key: str) -> float:
        found = client.zscore(redis_prefix + "lru", "ns\x00" + key)
        assert found is not None
        return float(found)

    try:
        before = time.time()
        await tier.put_raw("ns", "single", "one")
        await tier.put_many([("ns", "batch", "two"), ("ns", "other", "three")])
        after = time.time()
        first = {key: score(key) for key in ("single", "batch", "other")}
        assert all(int(before) <= s <= int(after) and s == int(s) for s in first.values())
        await asyncio.sleep(1.01 - time.time() % 1)  # into a later second than every write
        before = time.time()
        await tier.touch("ns", "batch", time.time())
        await tier.put_raw("ns", "single", "one again")
        after = time.time()
        for key in ("batch", "single"):  # moved to a later second, still a whole one
            assert first["other"] < int(before) <= score(key) <= int(after)
        assert score("other") == first["other"]
        assert await tier.coldest(1, None) == [("ns", "other")]
        assert await tier.coldest(5, first["other"] + 0.5) == [("ns", "other")]
        assert recency(1000.999) == 1000.0
    finally:
        client.close()
        await tier.close()


async def test_a_batch_write_over_a_key_of_another_type_replaces_it(
    redis_url: str, redis_prefix: str
) -> None:
    """The write transaction's size script reads a non-string key as size 0 (not an error
    that would leave the MSET and ZADD queued after it applied without the byte count)."""
    admin = redis.Redis.from_url(redis_url)
    tier = RedisHotTier(redis_url, redis_prefix)
    try:
        admin.hset(redis_prefix + "i:ns\x00h", "field", "value")
        await tier.put_many([("ns", "h", "now a string"), ("ns", "s", "plain")])
        assert await tier.get_many(["ns\x00h", "ns\x00s"]) == ["now a string", "plain"]
        items, lru, size = _invariants(redis_url, redis_prefix)
        assert lru == {b"ns\x00h", b"ns\x00s"}
        assert size == sum(len(v) for v in items.values())
    finally:
        admin.close()
        await tier.close()


async def test_a_text_that_cannot_be_encoded_fails_only_its_caller(
    redis_url: str, redis_prefix: str
) -> None:
    tier = RedisHotTier(redis_url, redis_prefix)
    try:
        results = await asyncio.gather(
            tier.put_many([("ns", "good", "fine")]),
            tier.put_many([("ns", "bad", "lone \ud800 surrogate")]),
            tier.put_many([("ns", "also", "fine too")]),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], UnicodeError)
        assert await tier.get_many(["ns\x00good", "ns\x00bad", "ns\x00also"]) == [
            "fine",
            None,
            "fine too",
        ]
    finally:
        await tier.close()


async def test_a_full_queue_leaves_in_three_round_trips(private_redis: PrivateRedis) -> None:
    """300 reads queued at once go as three merged MGETs of 100 (hot._SPLIT): Redis runs one
    while Python handles another, and each side has the next ready (counted by Redis itself)."""
    tier = RedisHotTier(private_redis.url, "p:")
    admin = redis.Redis(port=private_redis.port)
    try:
        await tier.put_many([("ns", f"k{i}", f"v{i}") for i in range(300)])
        admin.config_resetstat()
        got = await asyncio.gather(*(tier.get_raw("ns", f"k{i}") for i in range(300)))
        assert got == [f"v{i}" for i in range(300)]
        stats = admin.info("commandstats")["cmdstat_mget"]
        assert stats["calls"] == 3
    finally:
        admin.close()
        await tier.close()


async def test_a_flushed_script_cache_is_reloaded(private_redis: PrivateRedis) -> None:
    tier = RedisHotTier(private_redis.url, "p:")
    admin = redis.Redis(port=private_redis.port)
    try:
        await tier.put_many([("ns", "a", "one")])
        assert await tier.put_raw("ns", "b", "two")
        admin.script_flush()
        await asyncio.gather(
            tier.put_many([("ns", "a", "uno"), ("ns", "c", "tres")]),
            tier.put_raw("ns", "d", "cuatro", only_if_absent=True),
            tier.get_many(["ns\x00a"]),
        )
        assert await tier.get_many(["ns\x00a", "ns\x00c", "ns\x00d"]) == ["uno", "tres", "cuatro"]
        items, _, size = _invariants(private_redis.url, "p:")
        assert size == sum(len(v) for v in items.values())
    finally:
        admin.close()
        await tier.close()


async def test_unreachable_redis_raises_tier_unavailable_then_recovers(
    private_redis: PrivateRedis,
) -> None:
    tier = RedisHotTier(private_redis.url, "p:")
    try:
        # Several round trips at once, so the coalescer holds more than one connection.
        await asyncio.gather(*(tier.put_many([("ns", f"k{i}", "v")]) for i in range(20)))
        private_redis.stop()
        for call in (
            tier.get_many(["ns\x00k1"]),
            tier.get_raw("ns", "k1"),
            tier.put_many([("ns", "k1", "w")]),
            tier.put_raw("ns", "k2", "w"),
        ):
            with pytest.raises(TierUnavailableError):
                await call
        assert not await tier.ping()
        private_redis.start()  # append-only file: the items come back
        got = await asyncio.gather(*(tier.get_many([f"ns\x00k{i}"]) for i in range(20)))
        assert got == [["v"]] * 20
        # A restart between two calls leaves the idle connection stale (its peer is gone):
        # the call still succeeds, on a new connection.
        private_redis.stop()
        private_redis.start()
        assert await tier.get_many(["ns\x00k3"]) == ["v"]
        await tier.put_many([("ns", "k3", "after")])
        assert await tier.get_raw("ns", "k3") == "after"
    finally:
        await tier.close()


async def test_a_cancelled_caller_leaves_the_others_answered(
    redis_url: str, redis_prefix: str
) -> None:
    tier = RedisHotTier(redis_url, redis_prefix)
    try:
        await tier.put_many([("ns", f"k{i}", f"v{i}") for i in range(50)])
        tasks = [
            asyncio.create_task(tier.get_many([f"ns\x00k{i}", f"ns\x00k{i + 1}"]))
            for i in range(0, 40, 2)
        ]
        tasks[3].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[3], asyncio.CancelledError)
        for i, result in enumerate(done):
            if i != 3:
                assert result == [f"v{2 * i}", f"v{2 * i + 1}"]
    finally:
        await tier.close()


async def test_a_hung_redis_times_out_as_tier_unavailable(private_redis: PrivateRedis) -> None:
    tier = RedisHotTier(private_redis.url, "p:")
    assert private_redis.process is not None
    try:
        await tier.put_many([("ns", "a", "one")])
        private_redis.process.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
        try:
            with pytest.raises(TierUnavailableError):  # the tier's own 2 s timeout, not ours
                await asyncio.wait_for(tier.get_many(["ns\x00a"]), timeout=30)
        finally:
            private_redis.process.send_signal(signal.SIGCONT)
        # The timed-out connection is dropped (its reply may still come): the next call is answered.
        assert await tier.get_many(["ns\x00a"]) == ["one"]
    finally:
        await tier.close()
