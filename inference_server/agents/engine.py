"""The one door from agents to the language model: chat and embeddings.

Agents call these two functions and nothing else of the engine, so when the router lands (edge
or cloud per request) only this module changes: point :func:`chat` and :func:`embed` at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from inference_server.backends.base import (
    FinishEvent,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
)
from inference_server.chat import prepare_chat
from inference_server.node import Node


@dataclass(frozen=True, kw_only=True, slots=True)
class ChatOutput:
    text: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


async def chat(
    node: Node,
    messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float = 0.7,
) -> ChatOutput:
    """One non-streamed chat completion on this node's engine (same path as /v1/chat)."""
    model_id = model or node.settings.models.default
    info = await node.engine.chat_info(model_id)
    prepared = prepare_chat(
        {"messages": messages}, info, template_override=node.settings.models.chat_template
    )
    request = GenerationRequest(
        model=model_id,
        prompt=prepared.prompt,
        params=SamplingParams(
            max_tokens=max_tokens or node.settings.models.max_tokens_default,
            temperature=temperature,
            top_p=1.0,
            stop=prepared.stop,
            grammar=prepared.grammar,
        ),
        timeout=node.settings.models.request_timeout,
        add_bos=prepared.add_bos,
    )
    parts: list[str] = []
    finish: FinishEvent | None = None
    async with aclosing(node.engine.generate(request)) as events:
        async for event in events:
            if isinstance(event, TokenEvent):
                parts.append(event.text)
            else:
                finish = event
    if finish is None:  # pragma: no cover - the engine contract guarantees a FinishEvent
        raise RuntimeError("the engine ended without finishing")
    node.metrics.observe_generation(model_id, finish)
    return ChatOutput(
        text="".join(parts).strip(),
        model=model_id,
        finish_reason=finish.finish_reason,
        prompt_tokens=finish.usage.prompt_tokens,
        completion_tokens=finish.usage.completion_tokens,
    )


async def embed(
    node: Node, inputs: Sequence[str], *, model: str | None = None
) -> tuple[str, list[list[float]]]:
    """Embeddings (mean-pooled, L2-normalised) from this node's engine."""
    model_id = model or node.settings.models.default
    result = await node.engine.embed(model_id, inputs)
    node.metrics.observe_embedding(model_id, result.prompt_tokens)
    return model_id, result.vectors
