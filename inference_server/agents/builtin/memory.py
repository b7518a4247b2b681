"""``memory``: store, recall and forget notes by key, in the node's tiered memory.

The same store the ``/api/v1/memory`` routes use (hot → warm → cold, see README "Memory"), so a
note an agent stores is visible there and survives what that store survives. Notes go to the
namespace ``agent:memory`` unless the payload names another (``agent:<name>`` for a named agent
of yours, or any namespace the memory API accepts). The default is per agent *type*, not per
agent instance: a recall may be served by any node's memory agent and must find what another
stored (with the hot tier on Redis every node sees the same items).

Payload: ``{"op": "store", "key": k, "value": v}`` (optional ``tags``, ``ttl_seconds``),
``{"op": "recall", "key": k}``, ``{"op": "forget", "key": k}``; each may add ``namespace``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import voluptuous as vol

from inference_server.agents.base import Agent, AgentContext, TaskRejectedError
from inference_server.api.validation import number_range
from inference_server.memory.record import MAX_KEY_CHARS, NAMESPACE_RE
from inference_server.memory.store import InvalidItemError, TieredMemory

DEFAULT_NAMESPACE = "agent:memory"
KEY = vol.All(str, vol.Length(min=1, max=MAX_KEY_CHARS))
NAMESPACE = vol.All(str, vol.Match(NAMESPACE_RE, msg="namespace: letters, digits, _.:@-"))


class MemoryAgent(Agent):
    capability: ClassVar[str] = "memory"
    default_capacity: ClassVar[int] = 8
    payload_schema: ClassVar[vol.Schema] = vol.Schema(
        vol.Any(
            {
                vol.Required("op"): "store",
                vol.Required("key"): KEY,
                vol.Required("value"): object,
                vol.Optional("namespace"): NAMESPACE,
                vol.Optional("tags"): vol.All(
                    [vol.All(str, vol.Length(min=1, msg="a tag must not be empty"))],
                    vol.Length(max=32, msg="at most 32 tags"),
                ),
                vol.Optional("ttl_seconds"): number_range(1, 10 * 365 * 86400),
            },
            {
                vol.Required("op"): vol.In(("recall", "forget")),
                vol.Required("key"): KEY,
                vol.Optional("namespace"): NAMESPACE,
            },
            msg="expected op store (with key and value), recall or forget (with key)",
        )
    )

    @classmethod
    def unavailable(cls, context: AgentContext) -> str | None:
        if context.memory is None:
            return "the memory subsystem is turned off (memory.enabled)"
        return None

    def __init__(self, context: AgentContext) -> None:
        super().__init__(context)
        assert context.memory is not None  # nosec B101: type narrowing, unavailable() guards
        self.memory: TieredMemory = context.memory

    async def run(self, payload: dict[str, Any]) -> Any:
        key = payload["key"]
        namespace = payload.get("namespace", DEFAULT_NAMESPACE)
        # TierUnavailableError propagates: every tier down is an outage, worth a retry.
        if payload["op"] == "store":
            try:
                _, tier = await self.memory.put(
                    namespace,
                    key,
                    payload["value"],
                    tags=payload.get("tags", ()),
                    ttl_seconds=payload.get("ttl_seconds"),
                )
            except InvalidItemError as err:  # too large, bad tags: no retry can fix it
                raise TaskRejectedError(str(err)) from err
            return {"namespace": namespace, "key": key, "stored": True, "tier": tier}
        if payload["op"] == "recall":
            found = await self.memory.get(namespace, key)
            if found is None:
                return {"namespace": namespace, "key": key, "found": False, "value": None}
            item, tier = found
            return {
                "namespace": namespace,
                "key": key,
                "found": True,
                "value": item.value,
                "tier": tier,
            }
        forgotten = await self.memory.delete(namespace, key)
        return {"namespace": namespace, "key": key, "forgotten": forgotten}


AGENT = MemoryAgent
