"""``memory``: store, recall and forget short notes by key.

A deliberately tiny key-value (a Redis hash when agents use Redis, so every node sees the same
notes; a dict in-process otherwise) standing in until the tiered memory subsystem lands; then
this agent calls that subsystem instead and keeps its payload format.

Payload: ``{"op": "store", "key": k, "value": v}``, ``{"op": "recall", "key": k}``,
``{"op": "forget", "key": k}``.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import voluptuous as vol

from inference_server.agents.base import Agent, AgentContext

KEY = vol.All(str, vol.Length(min=1, max=256))


class InterimKeyValue:
    """The interim store: one Redis hash, or this process's dict."""

    _local: ClassVar[dict[str, dict[str, str]]] = {}

    def __init__(self, context: AgentContext) -> None:
        self._redis: Any = context.redis
        self._hash = f"{context.key_prefix}memory"

    async def set(self, key: str, value: Any) -> None:
        text = json.dumps(value)
        if self._redis is None:
            self._local.setdefault(self._hash, {})[key] = text
        else:
            await self._redis.hset(self._hash, key, text)

    async def get(self, key: str) -> tuple[bool, Any]:
        if self._redis is None:
            text: str | bytes | None = self._local.get(self._hash, {}).get(key)
        else:
            text = await self._redis.hget(self._hash, key)
        return (False, None) if text is None else (True, json.loads(text))

    async def delete(self, key: str) -> bool:
        if self._redis is None:
            return self._local.get(self._hash, {}).pop(key, None) is not None
        return bool(await self._redis.hdel(self._hash, key))


class MemoryAgent(Agent):
    capability: ClassVar[str] = "memory"
    default_capacity: ClassVar[int] = 8
    payload_schema: ClassVar[vol.Schema] = vol.Schema(
        vol.Any(
            {vol.Required("op"): "store", vol.Required("key"): KEY, vol.Required("value"): object},
            {vol.Required("op"): vol.In(("recall", "forget")), vol.Required("key"): KEY},
            msg="expected op store (with key and value), recall or forget (with key)",
        )
    )

    def __init__(self, context: AgentContext) -> None:
        super().__init__(context)
        self.store = InterimKeyValue(context)

    async def run(self, payload: dict[str, Any]) -> Any:
        key = payload["key"]
        if payload["op"] == "store":
            await self.store.set(key, payload["value"])
            return {"key": key, "stored": True}
        if payload["op"] == "recall":
            found, value = await self.store.get(key)
            return {"key": key, "found": found, "value": value}
        return {"key": key, "forgotten": await self.store.delete(key)}


AGENT = MemoryAgent
