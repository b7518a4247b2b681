"""Runs this node's agents: takes tasks within each agent's capacity and reports back.

One consume loop per agent asks the broker for at most as many tasks as the agent has free
slots, so load spreads by capacity: a node with four free ``llm`` slots takes four tasks, a busy
one takes none and its peers get them. A heartbeat loop registers the agents (name, tier,
capacity, current load, done/failed counts, last error) and tells the broker the running tasks
are alive; a task the broker says is no longer ours (cancelled, or reclaimed after we looked
dead) is stopped here. While the broker is unreachable the loops wait and retry with backoff;
a finished task's outcome is kept and written once the broker is back, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import voluptuous as vol

from inference_server.agents.base import Agent, TaskRejectedError, describe_invalid
from inference_server.agents.broker import Broker
from inference_server.agents.model import AgentInfo, BrokerUnavailableError, Delivery

_LOGGER = logging.getLogger(__name__)

FETCH_BLOCK = 1.0
"""Seconds a consume loop waits for new work per call; bounds how fast a stop is noticed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunnerSettings:
    heartbeat_interval: float = 2.0
    task_timeout: float = 300.0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 60.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.retry_backoff_max, self.retry_backoff * 2 ** max(0, attempt - 1)))


@dataclass(kw_only=True, slots=True)
class _Running:
    delivery: Delivery
    attempt: int = 0
    """0 until the broker said to run it."""
    task: asyncio.Task[None] | None = None


@dataclass(kw_only=True, slots=True)
class _Worker:
    agent: Agent
    info: AgentInfo
    running: dict[str, _Running] = field(default_factory=dict)
    slot_freed: asyncio.Event = field(default_factory=asyncio.Event)


class AgentRunner:
    def __init__(
        self,
        broker: Broker,
        agents: list[tuple[Agent, int]],
        *,
        node_id: str,
        tier: str,
        settings: RunnerSettings,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._stopping = False
        now = time.time()
        self._workers = [
            _Worker(
                agent=agent,
                info=AgentInfo(
                    name=f"{node_id}.{agent.capability}",
                    node_id=node_id,
                    tier=tier,
                    capabilities=(agent.capability,),
                    capacity=capacity,
                    started_at=now,
                ),
            )
            for agent, capacity in agents
        ]

    @property
    def agents(self) -> list[AgentInfo]:
        return [w.info for w in self._workers]

    async def run(self) -> None:
        """Consume and heartbeat until cancelled; then stop running tasks and deregister."""
        if not self._workers:
            return
        loops = [
            asyncio.create_task(self._consume(w), name=f"prime-spark-agent-{w.info.name}")
            for w in self._workers
        ]
        loops.append(asyncio.create_task(self._heartbeat(), name="prime-spark-agent-heartbeat"))
        try:
            await asyncio.gather(*loops)
        finally:
            self._stopping = True
            running = [
                r.task for w in self._workers for r in w.running.values() if r.task is not None
            ]
            for task in (*loops, *running):
                task.cancel()
            await asyncio.gather(*loops, *running, return_exceptions=True)
            for worker in self._workers:
                with contextlib.suppress(BrokerUnavailableError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._broker.deregister(worker.info.name)

    async def _consume(self, worker: _Worker) -> None:
        capability = worker.agent.capability
        backoff = 0.2
        while True:
            free = worker.info.capacity - len(worker.running)
            if free <= 0:
                worker.slot_freed.clear()
                await worker.slot_freed.wait()
                continue
            try:
                deliveries = await self._broker.fetch(
                    capability, worker.info.name, free, FETCH_BLOCK
                )
                backoff = 0.2
            except BrokerUnavailableError as err:
                _LOGGER.warning("Agent %s cannot reach the broker: %s", worker.info.name, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for delivery in deliveries:
                self._start(worker, delivery)

    def _start(self, worker: _Worker, delivery: Delivery) -> None:
        # Take the slot at once so the next fetch asks for one task less.
        slot = _Running(delivery=delivery)
        worker.running[delivery.task_id] = slot
        slot.task = asyncio.create_task(
            self._execute(worker, delivery, slot), name=f"prime-spark-task-{delivery.task_id}"
        )

    async def _persist[T](self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry a broker call until it goes through: an outcome must not be lost."""
        backoff = 0.2
        while True:
            try:
                return await call()
            except BrokerUnavailableError as err:
                if self._stopping:
                    raise
                _LOGGER.warning("Broker unavailable, retrying in %.1f s: %s", backoff, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _execute(self, worker: _Worker, delivery: Delivery, slot: _Running) -> None:
        name = worker.info.name
        try:
            begin = await self._persist(lambda: self._broker.begin(delivery, name))
            if begin.action != "run" or begin.task is None:
                return
            slot.attempt = begin.attempt
            task = begin.task
            outcome = await self._run_agent(worker, task.payload, task.deadline)
            if isinstance(outcome, _Failure):
                worker.info.failed += 1
                worker.info.last_error = outcome.error
                retry_in = None if outcome.permanent else self._settings.backoff(begin.attempt)
                await self._persist(
                    lambda: self._broker.fail(delivery, begin.attempt, outcome.error, retry_in)
                )
            else:
                stored = await self._persist(
                    lambda: self._broker.succeed(delivery, begin.attempt, outcome)
                )
                if stored:
                    worker.info.done += 1
        except asyncio.CancelledError:
            if self._stopping:
                raise
            # The broker took the task away (cancelled, or reclaimed elsewhere): just stop.
            _LOGGER.info("Agent %s stopped task %s: no longer ours", name, delivery.task_id)
        finally:
            worker.running.pop(delivery.task_id, None)
            worker.slot_freed.set()

    async def _run_agent(self, worker: _Worker, payload: Any, deadline: float | None) -> Any:
        timeout = self._settings.task_timeout
        if deadline is not None:
            timeout = max(0.001, min(timeout, deadline - time.time()))
        try:
            checked = worker.agent.validate(payload)
            async with asyncio.timeout(timeout):
                result = await worker.agent.run(checked)
            json.dumps(result)
        except vol.Invalid as err:
            return _Failure(describe_invalid(err)[1], permanent=True)
        except TaskRejectedError as err:
            return _Failure(str(err) or "rejected by the agent", permanent=True)
        except TypeError as err:
            return _Failure(f"the result is not JSON: {err}", permanent=True)
        except TimeoutError:
            return _Failure(f"timed out after {timeout:.1f} s", permanent=False)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            _LOGGER.warning("Agent %s task failed: %r", worker.info.name, err)
            return _Failure(f"{type(err).__name__}: {err}", permanent=False)
        return result

    async def _heartbeat(self) -> None:
        failing = False
        while True:
            for worker in self._workers:
                worker.info.load = len(worker.running)
                try:
                    await self._broker.heartbeat(worker.info)
                    owned = [(r.delivery, r.attempt) for r in worker.running.values() if r.attempt]
                    lost = await self._broker.keepalive(worker.info.name, owned)
                except BrokerUnavailableError as err:
                    if not failing:  # once per outage, not every beat
                        _LOGGER.warning("Agent heartbeats fail until the broker is back: %s", err)
                    failing = True
                    continue
                if failing:
                    _LOGGER.info("Agent heartbeats go through again")
                    failing = False
                for task_id in lost:
                    running = worker.running.get(task_id)
                    if running is not None and running.task is not None:
                        running.task.cancel()
            await asyncio.sleep(self._settings.heartbeat_interval)


@dataclass(frozen=True, slots=True)
class _Failure:
    error: str
    permanent: bool
