"""The node's agents API (``/api/v1/agents``): registry and tasks, typed.

A companion of :class:`~.client.PrimeSpark` rather than more methods on it, so the agents
surface stays in one module; it uses the client's request plumbing (errors, timeouts, token).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .client import PrimeSpark
from .exceptions import PrimeSparkInvalidResponseError
from .models import _Fields, _str_list

type TaskPriority = Literal["high", "normal", "low"]
FINAL_TASK_STATES = frozenset({"succeeded", "cancelled", "dead", "expired"})


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentInfo:
    """One live agent of the cluster."""

    name: str
    node_id: str
    tier: str
    capabilities: tuple[str, ...]
    capacity: int
    load: int
    done: int
    failed: int
    last_error: str | None
    last_seen: float

    @classmethod
    def from_dict(cls, data: object) -> AgentInfo:
        f = _Fields(data, "agent")
        return cls(
            name=f.string("name"),
            node_id=f.string("node_id"),
            tier=f.string("tier"),
            capabilities=_str_list(f.array("capabilities"), "agent.capabilities"),
            capacity=f.integer("capacity"),
            load=f.integer("load"),
            done=f.integer("done"),
            failed=f.integer("failed"),
            last_error=f.opt_string("last_error"),
            last_seen=f.number("last_seen"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentList:
    """``GET /api/v1/agents``: agents by name, and tasks waiting per capability."""

    agents: dict[str, AgentInfo]
    pending: dict[str, int]

    @classmethod
    def from_dict(cls, data: object) -> AgentList:
        f = _Fields(data, "agents")
        agents = [AgentInfo.from_dict(a) for a in f.array("agents")]
        pending = {}
        for capability, entry in f.raw("capabilities").items():
            pending[capability] = _Fields(entry, f"capabilities.{capability}").integer("pending")
        return cls(agents={a.name: a for a in agents}, pending=pending)


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentTask:
    """One task as the node reports it."""

    id: str
    capability: str
    state: str
    attempts: int
    agent: str | None
    result: Any
    error: str | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_TASK_STATES

    @classmethod
    def from_dict(cls, data: object) -> AgentTask:
        f = _Fields(data, "task")
        if not isinstance(data, Mapping):  # pragma: no cover - _Fields checked it
            raise PrimeSparkInvalidResponseError("task: expected an object")
        return cls(
            id=f.string("id"),
            capability=f.string("capability"),
            state=f.string("state"),
            attempts=f.integer("attempts"),
            agent=f.opt_string("agent"),
            result=data.get("result"),
            error=f.opt_string("error"),
        )


@dataclass(frozen=True, slots=True)
class PrimeSparkAgents:
    """Agents calls through a :class:`PrimeSpark` client."""

    client: PrimeSpark

    async def agents(self) -> AgentList:
        url = self.client._url("api", "v1", "agents")
        return AgentList.from_dict(await self.client._request("GET", url))

    async def run_task(
        self,
        capability: str,
        payload: Mapping[str, Any],
        *,
        priority: TaskPriority = "normal",
        wait: float = 60.0,
    ) -> AgentTask:
        """Submit a task and wait up to ``wait`` seconds for it to finish (server long poll).

        The task's deadline is the same ``wait``: one that did not start by then expires
        instead of running later for nobody.
        """
        url = self.client._url("api", "v1", "agents", "tasks")
        body = {
            "capability": capability,
            "payload": dict(payload),
            "priority": priority,
            "timeout": wait,
            "wait": wait,
        }
        data = await self.client._request(
            "POST", url, body=body, request_timeout=wait + self.client.request_timeout
        )
        return AgentTask.from_dict(data)
