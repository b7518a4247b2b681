"""What the agents subsystem talks about: tasks, their states, agents and dead letters.

Plain dataclasses shared by both brokers (Redis Streams and in-process), the worker and the API,
so the two brokers cannot drift apart in what a task looks like to a client.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TaskState = Literal["queued", "running", "retrying", "succeeded", "cancelled", "dead", "expired"]
TASK_STATES: tuple[TaskState, ...] = (
    "queued",
    "running",
    "retrying",
    "succeeded",
    "cancelled",
    "dead",
    "expired",
)
LIVE_STATES: tuple[TaskState, ...] = ("queued", "running", "retrying")
"""States a task can still leave; the others are final and expire after the result TTL."""
FINAL_STATES: tuple[TaskState, ...] = ("succeeded", "cancelled", "dead", "expired")

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
"""Highest first: a worker drains ``high`` before it looks at ``normal``, then ``low``."""

CAPABILITY_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
"""Capability names end up in Redis keys and metric labels: keep them short and plain."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskSpec:
    """A validated submission, before it has an id."""

    capability: str
    payload: dict[str, Any]
    priority: Priority = "normal"
    deadline: float | None = None
    """Unix time after which the task is not started any more (state ``expired``)."""
    idempotency_key: str | None = None


@dataclass(kw_only=True, slots=True)
class TaskRecord:
    """A task as a client sees it (``GET /api/v1/agents/tasks/{id}``)."""

    id: str
    capability: str
    payload: dict[str, Any]
    priority: Priority
    state: TaskState
    created_at: float
    updated_at: float
    deadline: float | None = None
    idempotency_key: str | None = None
    attempts: int = 0
    """How many times a worker started it (a reclaimed task counts again)."""
    agent: str | None = None
    """The agent that ran (or runs) it last."""
    result: Any = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivery:
    """One handing of a task to a worker; ``token`` lets the broker acknowledge it."""

    task_id: str
    capability: str
    token: str = ""
    """Broker-specific: the stream and entry id for Redis, empty in-process."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Begin:
    """What the broker says when a worker wants to start a delivery."""

    action: Literal["run", "skip"]
    attempt: int = 0
    task: TaskRecord | None = None


@dataclass(kw_only=True, slots=True)
class AgentInfo:
    """A registered agent: what it can do, how much, and how busy it is (heartbeat payload)."""

    name: str
    node_id: str
    tier: str
    capabilities: tuple[str, ...]
    capacity: int
    load: int = 0
    done: int = 0
    failed: int = 0
    last_error: str | None = None
    started_at: float = 0.0
    last_seen: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["capabilities"] = list(self.capabilities)
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class DeadLetter:
    id: str
    """The dead-letter entry's id (a stream id in Redis)."""
    task_id: str
    capability: str
    attempts: int
    error: str
    at: float
    payload: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskEvent:
    """A task changed state; becomes an ``agent_task`` event on the node's event stream."""

    task_id: str
    capability: str
    state: TaskState
    agent: str | None = None
    error: str | None = None


class BrokerUnavailableError(Exception):
    """The shared broker (Redis) cannot be reached; the API answers 503, workers retry."""
