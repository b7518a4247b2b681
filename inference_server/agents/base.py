"""The contract an agent type fulfils; adding a type is one small module exposing ``AGENT``.

An agent type owns one capability (``llm``, ``embed`` ...). It says whether this node can run it
(:meth:`Agent.unavailable`: a vision agent without a vision backend is not registered rather than
faked), checks a payload before the task is queued (so a bad payload is a 400 at submit time,
not a dead letter later) and runs one task. A module is found by import path: the built-ins are
listed in :data:`BUILTIN_MODULES`, more come from the ``agents.modules`` setting.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import voluptuous as vol

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from inference_server.backends.vision import VisionService
    from inference_server.config import Settings
    from inference_server.memory.store import TieredMemory
    from inference_server.node import Node

BUILTIN_MODULES: tuple[str, ...] = (
    "inference_server.agents.builtin.llm",
    "inference_server.agents.builtin.embed",
    "inference_server.agents.builtin.memory",
    "inference_server.agents.builtin.vision",
)


class TaskRejectedError(Exception):
    """The task can never succeed (bad payload for this agent): dead-letter it, do not retry."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentContext:
    """What an agent may use: the node (its engine and router), the settings, Redis when
    configured, and the node's vision service and tiered memory when it has them."""

    node: Node
    settings: Settings
    redis: Redis | None
    key_prefix: str
    vision: VisionService | None = None
    memory: TieredMemory | None = None


class Agent:
    """Base class of agent types. Subclasses set the class attributes and implement ``run``."""

    capability: ClassVar[str]
    default_capacity: ClassVar[int] = 1
    """Tasks one agent runs at once unless ``agents.capacity`` says otherwise."""
    payload_schema: ClassVar[vol.Schema] = vol.Schema(dict)

    def __init__(self, context: AgentContext) -> None:
        self.context = context

    @classmethod
    def unavailable(cls, context: AgentContext) -> str | None:
        """Why this node cannot run the agent (it is then not registered); ``None`` if it can."""
        return None

    @classmethod
    def validate(cls, payload: Any) -> dict[str, Any]:
        """The payload, checked; raises ``vol.Invalid`` with the field's path."""
        result: dict[str, Any] = cls.payload_schema(payload)
        return result

    async def run(self, payload: dict[str, Any]) -> Any:
        """Do the work; the return value (JSON-serialisable) becomes the task's result."""
        raise NotImplementedError


def load_agent_types(modules: tuple[str, ...]) -> dict[str, type[Agent]]:
    """Import each module and collect its ``AGENT`` by capability (a later module wins)."""
    found: dict[str, type[Agent]] = {}
    for name in (*BUILTIN_MODULES, *modules):
        module = importlib.import_module(name)
        agent = getattr(module, "AGENT", None)
        if not (isinstance(agent, type) and issubclass(agent, Agent)):
            raise TypeError(f"agent module {name} has no AGENT subclass of Agent")
        found[agent.capability] = agent
    return found


def describe_invalid(err: vol.Invalid, root: str = "payload") -> tuple[str, str]:
    """``(param, message)`` for an API error from a voluptuous failure."""
    path = ".".join(str(part) for part in (root, *err.path))
    return path, f"{path}: {err.error_message or err}"


def as_mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise vol.Invalid("expected a JSON object")
    return value
