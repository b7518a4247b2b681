"""Agent types the tests (and bench/agents.py) load through the ``agents.modules`` setting.

They also prove the extension point: an agent type is one small module exposing ``AGENT``.
``test.sleep`` records each start and finish in a Redis list (``<prefix>runs``) when the node
uses Redis, so a test can count how often a task really ran and where.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, ClassVar

import voluptuous as vol

from inference_server.agents.base import Agent


class SleepAgent(Agent):
    capability: ClassVar[str] = "test.sleep"
    default_capacity: ClassVar[int] = 1
    payload_schema: ClassVar[vol.Schema] = vol.Schema(
        {
            vol.Optional("seconds", default=0.0): vol.Coerce(float),
            vol.Optional("tag"): str,
            # bench/faults.py: no write after the work, so a run that finishes while Redis is
            # down succeeds and the worker must keep its outcome until Redis is back.
            vol.Optional("log_finish", default=True): bool,
        }
    )

    async def _record(self, event: str, payload: dict[str, Any]) -> None:
        redis: Any = self.context.redis
        if redis is not None:
            entry = {
                "event": event,
                "tag": payload.get("tag"),
                "node": self.context.node.node_id,
                "pid": os.getpid(),
                "at": time.time(),
            }
            await redis.rpush(f"{self.context.key_prefix}runs", json.dumps(entry))

    async def run(self, payload: dict[str, Any]) -> Any:
        await self._record("start", payload)
        await asyncio.sleep(payload["seconds"])
        if payload["log_finish"]:
            await self._record("finish", payload)
        return {"node": self.context.node.node_id, "tag": payload.get("tag")}


AGENT = SleepAgent
