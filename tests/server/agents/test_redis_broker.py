"""The Redis broker's scripts directly against the real Redis (no server process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from inference_server.agents.broker import BrokerSettings
from inference_server.agents.model import AgentInfo, TaskSpec
from inference_server.agents.redis_broker import RedisBroker
from tests.server.agents.conftest import unique_prefix


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
