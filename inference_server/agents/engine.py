"""The one door from agents to the language model: chat and embeddings.

:func:`chat` goes through the node's router like ``POST /v1/chat/completions``: the routing
mode, power mode, peer breakers and privacy decide edge or cloud, the decision is counted and
published (the ``route`` event, ``prime_spark_route_decisions_total``), and a failed side falls
back to the other as for an HTTP request. A ``private`` task never leaves the node. The cloud
is asked over its OpenAI API, so what it served shows in its own ``/metrics``. Embeddings stay
local: vectors from another model would not compare with this node's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from inference_server.backends.base import (
    BackendError,
    FinishEvent,
    GenerationRequest,
    GenerationTimeoutError,
    InvalidGrammarError,
    ModelNotFoundError,
    PromptTooLongError,
    QueueFullError,
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
)
from inference_server.routing.router import (
    CLOUD_EDGE_QUEUE_FULL,
    RouteRefused,
    RouteRequest,
    Upstream,
)

_LOGGER = logging.getLogger(__name__)

_CLIENT_ERRORS = (ModelNotFoundError, PromptTooLongError, InvalidGrammarError)


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
    peer refused the request itself, and the engine's errors when the edge fails last.
    """
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
    failure: BaseException | None = None
    reason_override: str | None = None
    for index, attempt in enumerate(plan.attempts):
        last = index == len(plan.attempts) - 1
        reason = attempt.reason
        if attempt.target == "edge":
            router.edge_inflight += 1
            started = time.monotonic()
            try:
                out = await _local_chat(node, messages, model, max_tokens, temperature)
            except QueueFullError as err:
                if last:
                    raise
                failure, reason_override = err, CLOUD_EDGE_QUEUE_FULL
                continue
            except (*_CLIENT_ERRORS, GenerationTimeoutError):
                raise
            except BackendError as err:
                if last:
                    raise
                _LOGGER.warning("The edge failed (%s); trying the cloud", err)
                failure = err
                continue
            finally:
                router.edge_inflight -= 1
            router.observe_edge(time.monotonic() - started)
            publish_decision(node, route, target="edge", reason=reason, peer=None, ok=True)
            return replace(out, reason=reason)
        upstream = attempt.upstream
        assert upstream is not None
        if not upstream.admit():
            continue  # another request holds the half-open probe
        try:
            return await _cloud_chat(
                node,
                upstream,
                route,
                reason_override or reason,
                {
                    "messages": messages,
                    "max_tokens": max_tokens or node.settings.models.max_tokens_default,
                    "temperature": temperature,
                },
            )
        except UpstreamError as err:
            _LOGGER.warning("%s; %s", err, "giving up" if last else "falling back")
            failure = err
    if failure is not None:
        raise failure
    raise RuntimeError("no cloud peer could take the request (half-open probes busy)")


async def _cloud_chat(
    node: Node, upstream: Upstream, route: RouteRequest, reason: str, body: dict[str, Any]
) -> ChatOutput:
    router = node.router
    assert router is not None
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
    )


async def embed(
    node: Node, inputs: Sequence[str], *, model: str | None = None
) -> tuple[str, list[list[float]]]:
    """Embeddings (mean-pooled, L2-normalised) from this node's engine."""
    model_id = model or node.settings.models.default
    result = await node.engine.embed(model_id, inputs)
    node.metrics.observe_embedding(model_id, result.prompt_tokens)
    return model_id, result.vectors
