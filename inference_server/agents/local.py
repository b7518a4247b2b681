"""The in-process broker: the single-node default when no Redis is configured.

Same semantics as the Redis broker within one process: priority queues per capability, retries
after a backoff, dead letters after ``max_deliveries``, idempotency keys, results that expire.
Work does not survive a restart of the process; configure Redis for that.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import time
import uuid
from typing import Any

from inference_server.agents.broker import Broker, BrokerSettings, Counts
from inference_server.agents.model import (
    FINAL_STATES,
    LIVE_STATES,
    PRIORITIES,
    AgentInfo,
    Begin,
    DeadLetter,
    Delivery,
    TaskEvent,
    TaskRecord,
    TaskSpec,
    TaskState,
)

DEAD_LETTERS_KEPT = 1000


class LocalBroker(Broker):
    kind = "local"

    def __init__(self, settings: BrokerSettings) -> None:
        super().__init__()
        self.settings = settings
        self._tasks: dict[str, TaskRecord] = {}
        self._expires: dict[str, float] = {}
        self._idempotency: dict[str, str] = {}
        """Key → task id, for as long as the task is kept."""
        self._queues: dict[str, dict[str, collections.deque[str]]] = {}
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wakeup: dict[str, asyncio.Event] = {}
        self._dead: collections.deque[DeadLetter] = collections.deque(maxlen=DEAD_LETTERS_KEPT)
        self._finished: collections.Counter[str] = collections.Counter()
        self._agents: dict[str, AgentInfo] = {}

    # --- helpers -----------------------------------------------------------------------
    def _queue(self, capability: str) -> dict[str, collections.deque[str]]:
        return self._queues.setdefault(capability, {p: collections.deque() for p in PRIORITIES})

    def _event(self, capability: str) -> asyncio.Event:
        return self._wakeup.setdefault(capability, asyncio.Event())

    def _set(self, task: TaskRecord, state: TaskState, **changes: Any) -> None:
        now = time.time()
        task.state = state
        task.updated_at = now
        for key, value in changes.items():
            setattr(task, key, value)
        if state in FINAL_STATES:
            task.finished_at = now
            self._finished[state] += 1
            self._expires[task.id] = now + self.settings.result_ttl
        self._emit(
            TaskEvent(
                task_id=task.id,
                capability=task.capability,
                state=state,
                agent=task.agent,
                error=task.error,
            )
        )

    def _enqueue(self, task: TaskRecord) -> None:
        self._queue(task.capability)[task.priority].append(task.id)
        self._event(task.capability).set()

    def _purge(self) -> None:
        now = time.time()
        for task_id in [t for t, at in self._expires.items() if at <= now]:
            del self._expires[task_id]
            self._tasks.pop(task_id, None)
        for key in [k for k, task_id in self._idempotency.items() if task_id not in self._tasks]:
            del self._idempotency[key]

    def _move_due(self) -> None:
        now = time.time()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, task_id = heapq.heappop(self._delayed)
            task = self._tasks.get(task_id)
            if task is not None and task.state == "retrying":
                self._set(task, "queued")
                self._enqueue(task)

    def _dead_letter(self, task: TaskRecord, error: str) -> None:
        self._dead.appendleft(
            DeadLetter(
                id=uuid.uuid4().hex,
                task_id=task.id,
                capability=task.capability,
                attempts=task.attempts,
                error=error,
                at=time.time(),
                payload=task.payload,
            )
        )
        self._set(task, "dead", error=error)

    # --- client side -------------------------------------------------------------------
    async def submit(self, spec: TaskSpec) -> tuple[TaskRecord, bool]:
        self._purge()
        if spec.idempotency_key is not None and spec.idempotency_key in self._idempotency:
            existing = self._tasks.get(self._idempotency[spec.idempotency_key])
            if existing is not None:
                return existing, False
        now = time.time()
        task = TaskRecord(
            id=uuid.uuid4().hex,
            capability=spec.capability,
            payload=spec.payload,
            priority=spec.priority,
            state="queued",
            created_at=now,
            updated_at=now,
            deadline=spec.deadline,
            idempotency_key=spec.idempotency_key,
        )
        self._tasks[task.id] = task
        if spec.idempotency_key is not None:
            self._idempotency[spec.idempotency_key] = task.id
        self._enqueue(task)
        self._emit(TaskEvent(task_id=task.id, capability=task.capability, state="queued"))
        return task, True

    async def get(self, task_id: str) -> TaskRecord | None:
        self._purge()
        return self._tasks.get(task_id)

    async def list_tasks(
        self, *, state: str | None, capability: str | None, limit: int
    ) -> list[TaskRecord]:
        self._purge()
        chosen = [
            t
            for t in reversed(self._tasks.values())
            if (state is None or t.state == state)
            and (capability is None or t.capability == capability)
        ]
        return chosen[:limit]

    async def cancel(self, task_id: str) -> TaskRecord | None:
        task = await self.get(task_id)
        if task is None or task.final:
            return task
        if task.state == "queued":
            queue = self._queue(task.capability)[task.priority]
            if task_id in queue:
                queue.remove(task_id)
        self._set(task, "cancelled")
        return task

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        return list(itertools.islice(self._dead, limit))

    async def counts(self) -> Counts:
        self._purge()
        live: dict[str, dict[str, int]] = {}
        for task in self._tasks.values():
            if task.state in LIVE_STATES:
                by_state = live.setdefault(task.capability, dict.fromkeys(LIVE_STATES, 0))
                by_state[task.state] += 1
        for capability in self._queues:
            live.setdefault(capability, dict.fromkeys(LIVE_STATES, 0))
        return Counts(live=live, finished=dict(self._finished))

    # --- agent registry ----------------------------------------------------------------
    async def heartbeat(self, agent: AgentInfo) -> None:
        agent.last_seen = time.time()
        self._agents[agent.name] = agent

    async def deregister(self, name: str) -> None:
        self._agents.pop(name, None)

    async def agents(self) -> list[AgentInfo]:
        cutoff = time.time() - self.settings.agent_timeout
        for name in [n for n, a in self._agents.items() if a.last_seen < cutoff]:
            del self._agents[name]
        return sorted(self._agents.values(), key=lambda a: a.name)

    # --- worker side -------------------------------------------------------------------
    async def fetch(
        self, capability: str, consumer: str, count: int, block: float
    ) -> list[Delivery]:
        deadline = time.monotonic() + block
        event = self._event(capability)
        while True:
            self._move_due()
            out: list[Delivery] = []
            queues = self._queue(capability)
            for priority in PRIORITIES:
                queue = queues[priority]
                while queue and len(out) < count:
                    out.append(Delivery(task_id=queue.popleft(), capability=capability))
            if not any(queues.values()):
                event.clear()
            if out:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            wait = remaining
            if self._delayed:
                wait = min(wait, max(0.0, self._delayed[0][0] - time.time()))
            try:
                async with asyncio.timeout(wait):
                    await event.wait()
            except TimeoutError:
                pass

    async def begin(self, delivery: Delivery, agent: str) -> Begin:
        task = self._tasks.get(delivery.task_id)
        if task is None or task.state != "queued":
            return Begin(action="skip")
        if task.deadline is not None and task.deadline < time.time():
            self._set(task, "expired", error="the deadline passed before the task could start")
            return Begin(action="skip")
        task.attempts += 1
        self._set(task, "running", agent=agent, started_at=time.time())
        return Begin(action="run", attempt=task.attempts, task=task)

    def _owned(self, delivery: Delivery, attempt: int) -> TaskRecord | None:
        task = self._tasks.get(delivery.task_id)
        if task is None or task.state != "running" or task.attempts != attempt:
            return None
        return task

    async def succeed(self, delivery: Delivery, attempt: int, result: Any) -> bool:
        task = self._owned(delivery, attempt)
        if task is None:
            return False
        self._set(task, "succeeded", result=result, error=None)
        return True

    async def fail(
        self, delivery: Delivery, attempt: int, error: str, retry_in: float | None
    ) -> TaskState | None:
        task = self._owned(delivery, attempt)
        if task is None:
            return None
        if retry_in is None or task.attempts >= self.settings.max_deliveries:
            self._dead_letter(task, error)
            return "dead"
        self._set(task, "retrying", error=error)
        heapq.heappush(self._delayed, (time.time() + retry_in, next(self._seq), task.id))
        self._event(task.capability).set()
        return "retrying"

    async def keepalive(self, consumer: str, running: list[tuple[Delivery, int]]) -> set[str]:
        return {d.task_id for d, attempt in running if self._owned(d, attempt) is None}
