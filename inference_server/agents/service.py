"""The node's agents subsystem: broker, local agents, events, metrics and waiting for results.

Built with the application (so routes can reach it through ``AGENTS_KEY``) and started in its
lifecycle. With ``agents.redis_url`` it joins the cluster-wide Redis Streams broker; without, it
uses the in-process one. A watcher publishes ``agent`` events when an agent appears or goes
(from any node) and keeps the snapshot that ``/metrics`` reads, since a Prometheus scrape cannot
await Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import voluptuous as vol
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inference_server.agents.base import Agent, AgentContext, load_agent_types
from inference_server.agents.broker import Broker, BrokerSettings, Counts
from inference_server.agents.local import LocalBroker
from inference_server.agents.model import (
    LIVE_STATES,
    AgentInfo,
    BrokerUnavailableError,
    TaskEvent,
    TaskRecord,
    TaskState,
)
from inference_server.agents.redis_broker import RedisBroker
from inference_server.agents.worker import AgentRunner, RunnerSettings
from inference_server.analytics.events import AgentTaskEvent
from inference_server.backends.vision import VisionService
from inference_server.memory.store import TieredMemory
from inference_server.node import Node

_LOGGER = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0


def build_broker(node: Node) -> Broker:
    agents = node.settings.agents
    settings = BrokerSettings(
        max_deliveries=agents.max_deliveries,
        result_ttl=agents.result_ttl,
        reclaim_idle=agents.reclaim_idle,
        agent_timeout=agents.agent_timeout,
    )
    if agents.redis_url:
        return RedisBroker(agents.redis_url, agents.key_prefix, settings)
    return LocalBroker(settings)


ANALYTICS_STATES: Final[dict[TaskState, Any]] = {
    "queued": "queued",
    "running": "started",
    "retrying": "retried",
    "succeeded": "succeeded",
    "cancelled": "cancelled",
    "dead": "dead_lettered",
    "expired": "expired",
}
"""Broker task states → the ``agent_task`` topic's lifecycle names (a failed attempt that will
be retried is ``retried``; one out of attempts is ``dead_lettered``)."""


class AgentService:
    def __init__(
        self,
        node: Node,
        *,
        vision: VisionService | None = None,
        memory: TieredMemory | None = None,
    ) -> None:
        self.node = node
        self.settings = node.settings.agents
        self.broker = build_broker(node)
        self.types: dict[str, type[Agent]] = load_agent_types(self.settings.modules)
        redis = self.broker.redis if isinstance(self.broker, RedisBroker) else None
        self.context = AgentContext(
            node=node,
            settings=node.settings,
            redis=redis,
            key_prefix=self.settings.key_prefix,
            vision=vision,
            memory=memory,
        )
        self.unavailable: dict[str, str] = {}
        local: list[tuple[Agent, int]] = []
        for capability, agent_type in sorted(self.types.items()):
            if self.settings.enabled is not None and capability not in self.settings.enabled:
                continue
            reason = agent_type.unavailable(self.context)
            if reason is not None:
                self.unavailable[capability] = reason
                continue
            capacity = self.settings.capacity.get(capability, agent_type.default_capacity)
            local.append((agent_type(self.context), capacity))
        self.local_capabilities = frozenset(agent.capability for agent, _ in local)
        """What this node's own agents run: live as long as this process answers, even while
        their registry entries are missing (expired in a Redis outage, until the next heartbeat)."""
        self.runner = AgentRunner(
            self.broker,
            local,
            node_id=node.node_id,
            tier=self.settings.tier,
            settings=RunnerSettings(
                heartbeat_interval=self.settings.heartbeat_interval,
                task_timeout=self.settings.task_timeout,
                retry_backoff=self.settings.retry_backoff,
                retry_backoff_max=self.settings.retry_backoff_max,
            ),
        )
        self.known_agents: dict[str, AgentInfo] = {}
        self.counts = Counts()
        self.available = True
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.broker.on_event(self._on_task_event)
        node.metrics.registry.register(_AgentCollector(self))

    def validate_payload(self, capability: str, payload: object) -> dict[str, object]:
        """Check the payload with the agent type's schema when this node knows the type."""
        agent_type = self.types.get(capability)
        if agent_type is None:
            if not isinstance(payload, dict):
                raise vol.Invalid("expected a JSON object")
            return payload
        return agent_type.validate(payload)

    # --- events ------------------------------------------------------------------------
    def _on_task_event(self, event: TaskEvent) -> None:
        self.node.events.publish(
            "agent_task",
            {
                "task_id": event.task_id,
                "capability": event.capability,
                "state": event.state,
                "agent": event.agent,
                "error": event.error,
            },
        )
        self.node.emit_event(
            AgentTaskEvent(
                task_id=event.task_id,
                agent_id=event.agent,
                state=ANALYTICS_STATES[event.state],
            )
        )
        if event.state not in LIVE_STATES:
            for future in self._waiters.pop(event.task_id, []):
                if not future.done():
                    future.set_result(None)

    async def wait(self, task_id: str, seconds: float) -> TaskRecord | None:
        """The task once final, or as it is after ``seconds`` (an HTTP long poll)."""
        deadline = time.monotonic() + seconds
        while True:
            task = await self.broker.get(task_id)
            remaining = deadline - time.monotonic()
            if task is None or task.final or remaining <= 0:
                return task
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(task_id, []).append(future)
            # The event wakes us at once; the poll bound covers an event lost in a reconnect.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await future
            waiters = self._waiters.get(task_id, [])
            if future in waiters:
                waiters.remove(future)
                if not waiters:
                    self._waiters.pop(task_id, None)

    async def _watch(self) -> None:
        while True:
            try:
                agents = {a.name: a for a in await self.broker.agents()}
                self.counts = await self.broker.counts()
                if not self.available:
                    _LOGGER.info("Agent broker reachable again")
                self.available = True
            except BrokerUnavailableError as err:
                if self.available:
                    _LOGGER.warning("Agent broker unreachable: %s", err)
                self.available = False
                await asyncio.sleep(WATCH_INTERVAL)
                continue
            for name in agents.keys() - self.known_agents.keys():
                self.node.events.publish("agent", {"status": "online", **agents[name].to_json()})
            for name in self.known_agents.keys() - agents.keys():
                gone = self.known_agents[name].to_json()
                self.node.events.publish("agent", {"status": "offline", **gone})
            self.known_agents = agents
            await asyncio.sleep(WATCH_INTERVAL)

    async def run(self) -> AsyncIterator[None]:
        await self.broker.start()
        tasks = [
            asyncio.create_task(self.runner.run(), name="prime-spark-agents"),
            asyncio.create_task(self._watch(), name="prime-spark-agents-watch"),
        ]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.close()


class _AgentCollector(Collector):
    """Task counts and queue depth per capability, from the watcher's last snapshot."""

    def __init__(self, service: AgentService) -> None:
        self._service = service

    def collect(self) -> list[Metric]:
        counts = self._service.counts
        live = GaugeMetricFamily(
            "prime_spark_agent_tasks",
            "Tasks not yet final, by capability and state (whole cluster)",
            labels=["capability", "state"],
        )
        depth = GaugeMetricFamily(
            "prime_spark_agent_queue_depth",
            "Tasks waiting to run (queued or waiting for a retry), by capability",
            labels=["capability"],
        )
        for capability, states in sorted(counts.live.items()):
            for state, value in states.items():
                live.add_metric([capability, state], value)
            depth.add_metric([capability], counts.pending(capability))
        finished = CounterMetricFamily(
            "prime_spark_agent_tasks_finished",
            "Tasks that reached a final state (whole cluster)",
            labels=["state"],
        )
        for state, value in sorted(counts.finished.items()):
            finished.add_metric([state], value)
        agents = GaugeMetricFamily(
            "prime_spark_agents", "Live agents by capability", labels=["capability"]
        )
        by_capability: dict[str, int] = {}
        for agent in self._service.known_agents.values():
            for capability in agent.capabilities:
                by_capability[capability] = by_capability.get(capability, 0) + 1
        for capability, value in sorted(by_capability.items()):
            agents.add_metric([capability], value)
        return [live, depth, finished, agents]


AGENTS_KEY: Final = web.AppKey("agents", AgentService)


async def agents_lifecycle(app: web.Application) -> AsyncIterator[None]:
    async for _ in app[AGENTS_KEY].run():
        yield
