"""The one interface both task brokers implement: Redis Streams across nodes, or in-process.

The API and the worker only talk to :class:`Broker`, so a single node without Redis offers the
same routes and semantics (priorities, capacity, retries with backoff, dead letters, idempotency,
result expiry) as a cluster; only what needs a second process (reclaiming a dead node's work,
surviving a restart) is Redis-only.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inference_server.agents.model import (
    AgentInfo,
    Begin,
    DeadLetter,
    Delivery,
    TaskEvent,
    TaskRecord,
    TaskSpec,
    TaskState,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerSettings:
    max_deliveries: int = 3
    result_ttl: float = 3600.0
    reclaim_idle: float = 30.0
    agent_timeout: float = 10.0


@dataclass(kw_only=True, slots=True)
class Counts:
    """Live tasks by capability and state, and how many reached each final state (ever)."""

    live: dict[str, dict[str, int]] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)

    def pending(self, capability: str) -> int:
        """Waiting to run: queued plus waiting for a retry."""
        states = self.live.get(capability, {})
        return states.get("queued", 0) + states.get("retrying", 0)


EventSink = Callable[[TaskEvent], None]


class Broker(abc.ABC):
    kind: str
    settings: BrokerSettings

    def __init__(self) -> None:
        self._sinks: list[EventSink] = []

    def on_event(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def _emit(self, event: TaskEvent) -> None:
        for sink in self._sinks:
            sink(event)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect and start background listeners."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop listeners and close connections."""

    # --- client side -------------------------------------------------------------------
    @abc.abstractmethod
    async def submit(self, spec: TaskSpec) -> tuple[TaskRecord, bool]:
        """Queue a task; ``(task, False)`` when its idempotency key was seen before."""

    @abc.abstractmethod
    async def get(self, task_id: str) -> TaskRecord | None: ...

    @abc.abstractmethod
    async def list_tasks(
        self, *, state: str | None, capability: str | None, limit: int
    ) -> list[TaskRecord]:
        """Newest first."""

    @abc.abstractmethod
    async def cancel(self, task_id: str) -> TaskRecord | None:
        """Cancel unless final; the record shows the state it ended in."""

    @abc.abstractmethod
    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """Newest first."""

    @abc.abstractmethod
    async def counts(self) -> Counts: ...

    # --- agent registry ----------------------------------------------------------------
    @abc.abstractmethod
    async def heartbeat(self, agent: AgentInfo) -> None:
        """Register or refresh; an agent silent for ``agent_timeout`` is gone."""

    @abc.abstractmethod
    async def deregister(self, name: str) -> None: ...

    @abc.abstractmethod
    async def agents(self) -> list[AgentInfo]: ...

    # --- worker side -------------------------------------------------------------------
    @abc.abstractmethod
    async def fetch(
        self, capability: str, consumer: str, count: int, block: float
    ) -> list[Delivery]:
        """Up to ``count`` deliveries, highest priority first; waits up to ``block`` s."""

    @abc.abstractmethod
    async def begin(self, delivery: Delivery, agent: str) -> Begin:
        """Mark running and count the attempt, or say to skip (cancelled, expired, dead)."""

    @abc.abstractmethod
    async def succeed(self, delivery: Delivery, attempt: int, result: Any) -> bool:
        """Store the result; ``False`` if this attempt no longer owns the task."""

    @abc.abstractmethod
    async def fail(
        self, delivery: Delivery, attempt: int, error: str, retry_in: float | None
    ) -> TaskState | None:
        """Retry after ``retry_in`` s, or dead-letter (no retry, or deliveries used up)."""

    @abc.abstractmethod
    async def keepalive(self, consumer: str, running: list[tuple[Delivery, int]]) -> set[str]:
        """Tell the broker these deliveries are still being worked on; returns the ids of
        tasks this worker should stop (cancelled, or now owned by another attempt)."""
