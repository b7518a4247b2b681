"""The one door from agents to the language model: chat and embeddings.

:func:`chat` goes through the node's router like ``POST /v1/chat/completions``: the routing
mode, power mode, peer breakers and privacy decide edge or cloud, the decision is counted and
published (the ``route`` event, ``prime_spark_route_decisions_total``), and a failed side falls
back to the other as for an HTTP request. A ``private`` task never leaves the node. The cloud
is asked over its OpenAI API, so what it served shows in its own ``/metrics``. Embeddings stay
local: vectors from another model would not compare with this node's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from inference_server.analytics.events import InferenceEvent
from inference_server.backends.base import (
    FinishEvent,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
)
from inference_server.backends.remote import UpstreamError, UpstreamRejected
from inference_server.chat import prepare_chat
from inference_server.node import Node
from inference_server.routing.dispatch import (
    publish_decision,
    record_upstream_failure,
    record_upstream_outcome,
    run_attempts,
)
from inference_server.routing.router import (
    RouteRefused,
    RouteRequest,
    Upstream,
)


class CloudRejectedError(Exception):
    """The cloud peer answered the request with a 4xx: the request is wrong, not the peer."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ChatOutput:
    text: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    target: str = "edge"
    """Where it ran: ``edge`` (this node) or ``cloud``."""
    peer: str | None = None
    reason: str | None = None
    """The router's reason (one of ``routing.router.REASONS``)."""
    generation_seconds: float = 0.0
    """Decode time on this node (0 for a cloud answer: the peer records its own)."""


AGENT_ROUTE = "agents:llm"
"""The ``route`` of an agent task's inference event (HTTP requests carry their URL path)."""


async def chat(
    node: Node,
    messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float = 0.7,
    private: bool = False,
) -> ChatOutput:
    """One non-streamed chat completion, on the edge or a cloud peer as the router decides.

    Raises :class:`RouteRefused` when no side may serve it (private and the model only on the
    cloud: 400; every serving peer cooling down: 503), :class:`CloudRejectedError` when the
    peer refused the request itself, the engine's errors when the edge fails last, and
    :class:`~inference_server.routing.dispatch.NoPeerAdmitted` when every peer's half-open
    probe was already out (the fallback policy is :func:`run_attempts`, shared with HTTP).
    """
    started = time.perf_counter()
    try:
        out = await _routed_chat(
            node, messages, model=model, max_tokens=max_tokens, temperature=temperature,
            private=private,
        )  # fmt: skip
    except asyncio.CancelledError:
        raise
    except Exception as err:
        status = 400 if isinstance(err, CloudRejectedError) else getattr(err, "status", 500)
        _record(node, None, model, started, status if isinstance(status, int) else 500)
        raise
    _record(node, out, model, started, 200)
    return out


def _record(
    node: Node, out: ChatOutput | None, model: str | None, started: float, status: int
) -> None:
    """The task's inference event: an agent's call has no HTTP request whose middleware would
    record it, and a cloud peer marks the call ``served_for`` this node (it was forwarded), so
    without this event a shared store would count it nowhere."""
    node.emit_event(
        InferenceEvent(
            model=(out.model if out else None) or model or node.settings.models.default,
            side="cloud" if out is not None and out.target == "cloud" else "edge",
            route=AGENT_ROUTE,
            status=status,
            prompt_tokens=out.prompt_tokens if out else 0,
            completion_tokens=out.completion_tokens if out else 0,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            generation_ms=round(out.generation_seconds * 1000, 3) if out else 0.0,
            peer=out.peer if out else None,
        )
    )


async def _routed_chat(
    node: Node,
    messages: list[dict[str, Any]],
    *,
    model: str | None,
    max_tokens: int | None,
    temperature: float,
    private: bool,
) -> ChatOutput:
    router = node.router
    if router is None:
        return await _local_chat(node, messages, model, max_tokens, temperature)
    route = RouteRequest(
        kind="chat", model=model or None, private=private, forwarded=False, stream=False
    )
    try:
        plan = await router.plan(route)
    except RouteRefused as err:
        publish_decision(node, route, target=None, reason=err.reason, peer=None, ok=False)
        raise

    async def edge(reason: str) -> ChatOutput:
        router.edge_inflight += 1
        started = time.monotonic()
        try:
            out = await _local_chat(node, messages, model, max_tokens, temperature)
        finally:
            router.edge_inflight -= 1
        router.observe_edge(time.monotonic() - started)
        publish_decision(node, route, target="edge", reason=reason, peer=None, ok=True)
        return replace(out, reason=reason)

    async def cloud(upstream: Upstream, reason: str) -> ChatOutput:
        body = {
            "messages": messages,
            "max_tokens": max_tokens or node.settings.models.max_tokens_default,
            "temperature": temperature,
        }
        return await _cloud_chat(node, upstream, route, reason, body)

    return await run_attempts(plan, edge=edge, cloud=cloud)


async def _cloud_chat(
    node: Node, upstream: Upstream, route: RouteRequest, reason: str, body: dict[str, Any]
) -> ChatOutput:
    router = node.router
    assert router is not None  # nosec B101: set up with routing
    peer_model = upstream.model_for(route.model, node.engine.default_model)
    forward = {**body, "model": peer_model} if peer_model is not None else body
    started = time.monotonic()
    upstream.inflight += 1
    upstream.requests += 1
    try:
        data = await upstream.backend.post("/v1/chat/completions", forward)
    except UpstreamRejected as err:
        upstream.breaker.record_success()  # it answered: it is healthy
        record_upstream_outcome(node, upstream, "rejected")
        publish_decision(node, route, target="cloud", reason=reason, peer=upstream.name, ok=False)
        raise CloudRejectedError(f"cloud peer '{upstream.name}' refused: {err}") from err
    except UpstreamError as err:
        record_upstream_failure(node, upstream, err)
        raise
    finally:
        upstream.inflight -= 1
    upstream.breaker.record_success()
    upstream.reachable = True
    router.observe_cloud(upstream, time.monotonic() - started)
    record_upstream_outcome(node, upstream, "ok")
    if node.routing_metrics is not None:
        node.routing_metrics.usage(upstream.name, data.get("usage"))
    publish_decision(node, route, target="cloud", reason=reason, peer=upstream.name, ok=True)
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    return ChatOutput(
        text=str(choice["message"].get("content") or "").strip(),
        model=str(data.get("model") or peer_model or ""),
        finish_reason=str(choice.get("finish_reason") or "stop"),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        target="cloud",
        peer=upstream.name,
        reason=reason,
    )


async def _local_chat(
    node: Node,
    messages: list[dict[str, Any]],
    model: str | None,
    max_tokens: int | None,
    temperature: float,
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
        generation_seconds=finish.generation_seconds,
    )


async def embed(
    node: Node, inputs: Sequence[str], *, model: str | None = None
) -> tuple[str, list[list[float]]]:
    """Embeddings (mean-pooled, L2-normalised) from this node's engine."""
    model_id = model or node.settings.models.default
    result = await node.engine.embed(model_id, inputs)
    node.metrics.observe_embedding(model_id, result.prompt_tokens)
    return model_id, result.vectors
