"""``embed``: embedding vectors from the node's model. Payload: ``{"input": str | [str]}``."""

from __future__ import annotations

from typing import Any, ClassVar

import voluptuous as vol

from inference_server.agents import engine
from inference_server.agents.base import Agent, AgentContext


class EmbedAgent(Agent):
    capability: ClassVar[str] = "embed"
    default_capacity: ClassVar[int] = 2
    payload_schema: ClassVar[vol.Schema] = vol.Schema(
        {
            vol.Required("input"): vol.Any(
                vol.All(str, vol.Length(min=1)),
                vol.All([vol.All(str, vol.Length(min=1))], vol.Length(min=1, max=256)),
            ),
            vol.Optional("model"): vol.All(str, vol.Length(min=1)),
        }
    )

    @classmethod
    def unavailable(cls, context: AgentContext) -> str | None:
        if not context.settings.models.embeddings:
            return "embeddings are turned off (models.embeddings)"
        return None

    async def run(self, payload: dict[str, Any]) -> Any:
        inputs = payload["input"]
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        model, vectors = await engine.embed(self.context.node, texts, model=payload.get("model"))
        return {"model": model, "embeddings": vectors}


AGENT = EmbedAgent
