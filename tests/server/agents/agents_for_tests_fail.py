"""``test.fail``: a poison task that raises on every attempt (ends in the dead-letter stream)."""

from __future__ import annotations

from typing import Any, ClassVar

from inference_server.agents.base import Agent


class PoisonError(RuntimeError):
    pass


class FailAgent(Agent):
    capability: ClassVar[str] = "test.fail"
    default_capacity: ClassVar[int] = 2

    async def run(self, payload: dict[str, Any]) -> Any:
        raise PoisonError(f"poison payload {payload!r} on {self.context.node.node_id}")


AGENT = FailAgent
