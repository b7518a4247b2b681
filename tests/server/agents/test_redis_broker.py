"""The Redis broker's scripts directly against the real Redis (no server process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_server.agents.broker import BrokerSettings
from inference_server.agents.model import AgentInfo, BrokerUnavailableError, TaskSpec
from inference_server.agents.redis_broker import RedisBroker
from tests.server.agents.conftest import unique_prefix
from tests.server.memory.conftest import PrivateRedis


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[RedisBroker]:
    prefix = unique_prefix()
    settings = BrokerSettings(max_deliveries=2, result_ttl=30, reclaim_idle=0.3, agent_timeout=1)
    made = RedisBroker(redis_url, prefix, settings)
    yield made
    keys = [k async for k in made.redis.scan_iter(match=f"{prefix}*")]
    if keys:
        await made.redis.delete(*keys)
    await made.close()


async def test_idempotency_key_lives_with_the_task(broker: RedisBroker) -> None:
    spec = TaskSpec(capability="t", payload={"a": 1}, idempotency_key="k1")
    task, created = await broker.submit(spec)
    again, created_again = await broker.submit(spec)
    assert created and not created_again
    assert again.id == task.id
    idem = f"{broker.prefix}idem:k1"
    assert await broker.redis.ttl(idem) == -1  # no expiry while the task lives
    (delivery,) = await broker.fetch("t", "w1", 5, 0)
    begin = await broker.begin(delivery, "w1")
    assert begin.action == "run"
    assert await broker.succeed(delivery, begin.attempt, {"ok": True})
    assert 0 < await broker.redis.ttl(idem) <= 30
    assert 0 < await broker.redis.ttl(f"{broker.prefix}task:{task.id}") <= 30
    counts = await broker.counts()
    assert counts.live["t"] == {"queued": 0, "running": 0, "retrying": 0}
    assert counts.finished == {"succeeded": 1}


async def test_reclaim_fences_the_first_worker(broker: RedisBroker) -> None:
    task, _ = await broker.submit(TaskSpec(capability="t", payload={}))
    (first,) = await broker.fetch("t", "slow", 1, 0)
    begin1 = await broker.begin(first, "slow")
    await asyncio.sleep(0.4)  # longer than reclaim_idle without a keepalive
    (second,) = await broker.fetch("t", "fast", 1, 0)
    begin2 = await broker.begin(second, "fast")
    assert begin2.attempt == 2
    # The slow worker learns at its next keepalive that the task is no longer its own ...
    assert await broker.keepalive("slow", [(first, begin1.attempt)]) == {task.id}
    # ... and could not store a result anyway.
    assert not await broker.succeed(first, begin1.attempt, "late")
    assert await broker.succeed(second, begin2.attempt, "on time")
    done = await broker.get(task.id)
    assert done is not None
    assert (done.state, done.result, done.agent) == ("succeeded", "on time", "fast")


async def test_crash_loop_dead_letters(broker: RedisBroker) -> None:
    task, _ = await broker.submit(TaskSpec(capability="t", payload={"x": 1}))
    for consumer in ("a", "b"):
        (delivery,) = await broker.fetch("t", consumer, 1, 0)
        assert (await broker.begin(delivery, consumer)).action == "run"
        await asyncio.sleep(0.4)  # the worker "died": nobody refreshes the entry
    (delivery,) = await broker.fetch("t", "c", 1, 0)
    assert (await broker.begin(delivery, "c")).action == "skip"
    dead = await broker.get(task.id)
    assert dead is not None
    assert dead.state == "dead"
    assert "gave up after 2 deliveries" in (dead.error or "")
    (letter,) = await broker.dead_letters(10)
    assert letter.task_id == task.id
    assert letter.payload == {"x": 1}
    # Nothing is left pending in the group.
    pending = await broker.redis.xpending(f"{broker.prefix}q:t:normal", "workers")
    assert pending["pending"] == 0


async def test_agents_expire_without_heartbeat(broker: RedisBroker) -> None:
    info = AgentInfo(name="n.t", node_id="n", tier="edge", capabilities=("t",), capacity=2)
    await broker.heartbeat(info)
    assert [a.name for a in await broker.agents()] == ["n.t"]
    await asyncio.sleep(1.2)
    assert await broker.agents() == []


async def test_no_reclaim_right_after_redis_was_away(tmp_path: Path) -> None:
    """Found by bench/faults.py: Redis was down longer than ``reclaim_idle``, so a task that ran
    all through it looked idle, and the node's first fetch after the restart reclaimed it and
    ran it again, while its worker (alive) waited to store the outcome it already had. The
    node now reclaims only once it has been back for ``reclaim_idle``."""
    own = PrivateRedis(tmp_path / "redis")  # stopped and started: never the shared Redis
    own.start()
    settings = BrokerSettings(max_deliveries=3, result_ttl=30, reclaim_idle=0.3, agent_timeout=1)
    broker = RedisBroker(own.url, unique_prefix(), settings)
    try:
        task, _ = await broker.submit(TaskSpec(capability="t", payload={}))
        (first,) = await broker.fetch("t", "owner", 1, 0)
        begin = await broker.begin(first, "owner")
        own.stop()
        with pytest.raises(BrokerUnavailableError):
            await broker.fetch("t", "other", 1, 0)
        await asyncio.sleep(0.5)  # longer than reclaim_idle: the entry looks abandoned
        own.start()
        assert await broker.fetch("t", "other", 1, 0) == []  # back, but not for long enough
        assert await broker.succeed(first, begin.attempt, "kept through the outage")
        done = await broker.get(task.id)
        assert done is not None and done.state == "succeeded" and done.attempts == 1
        # A worker that really died is still taken over, once the node has been back a while.
        lost, _ = await broker.submit(TaskSpec(capability="t", payload={}))
        (dead,) = await broker.fetch("t", "dead", 1, 0)
        await broker.begin(dead, "dead")
        await asyncio.sleep(0.4)
        (taken,) = await broker.fetch("t", "other", 1, 0)
        assert taken.task_id == lost.id
    finally:
        await broker.close()
        own.stop()
