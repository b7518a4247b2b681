"""The OpenAI-compatible surface: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings`` and ``/v1/models``.

Anything that speaks OpenAI (the official SDKs, Home Assistant's integrations, LangChain) can use
the node unchanged. Streaming follows OpenAI's SSE framing exactly (``data: {...}`` chunks, a
final ``data: [DONE]``); an error after the first byte is sent as an ``error`` chunk because the
status line is already gone.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from inference_server.analytics.requests import note_generation
from inference_server.api.errors import ApiError, from_backend
from inference_server.api.response_cache import (
    CloudAnswerTap,
    body_alias_key,
    cached_by_alias,
    cached_chat_response,
    remember_chat_response,
)
from inference_server.api.validation import (
    CHAT_SCHEMA,
    COMPLETION_SCHEMA,
    EMBEDDINGS_SCHEMA,
    parse_json,
    read_body,
    read_json,
    validate,
)
from inference_server.backends.base import (
    BackendError,
    FinishEvent,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
)
from inference_server.chat import ChatFormatError, PreparedChat, prepare_chat
from inference_server.memory.cache import Lookup
from inference_server.node import NODE_KEY, Node
from inference_server.routing.dispatch import dispatch, is_private
from inference_server.security.middleware import requires

_LOGGER = logging.getLogger(__name__)

routes = web.RouteTableDef()


@dataclass(frozen=True, kw_only=True, slots=True)
class _Call:
    """What one generation route needs besides the engine request: how to shape its output."""

    object_id: str
    created: int
    model: str
    stream: bool
    include_usage: bool


def _sampling(
    node: Node, body: dict[str, Any], *, grammar: str | None, extra_stop: tuple[str, ...] = ()
) -> SamplingParams:
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    max_tokens = max_tokens or node.settings.models.max_tokens_default
    if node.power is not None:
        max_tokens = node.power.max_tokens(max_tokens)  # power_save and critical cap it
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        stop=(*(body.get("stop") or ()), *extra_stop),
        seed=body.get("seed"),
        grammar=grammar,
    )


def _call(node: Node, body: dict[str, Any], prefix: str) -> _Call:
    options = body.get("stream_options") or {}
    return _Call(
        object_id=f"{prefix}-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=body.get("model") or node.settings.models.default,
        stream=bool(body.get("stream")),
        include_usage=bool(options.get("include_usage")),
    )


def _usage(finish: FinishEvent) -> dict[str, int]:
    return {
        "prompt_tokens": finish.usage.prompt_tokens,
        "completion_tokens": finish.usage.completion_tokens,
        "total_tokens": finish.usage.total_tokens,
    }


def _timings(finish: FinishEvent) -> dict[str, float]:
    """llama-server's timings block: lets a client see where the time went."""
    return {
        "queue_ms": round(finish.queue_seconds * 1000, 3),
        "prompt_ms": round(finish.prompt_seconds * 1000, 3),
        "predicted_ms": round(finish.generation_seconds * 1000, 3),
    }


async def _generate(
    node: Node, engine_request: GenerationRequest
) -> AsyncGenerator[TokenEvent | FinishEvent]:
    """The engine's events, with metrics recorded once the generation finishes."""
    async with aclosing(node.engine.generate(engine_request)) as events:
        async for event in events:
            if isinstance(event, FinishEvent):
                node.metrics.observe_generation(engine_request.model, event)
                node.stats.record_generation(
                    event.usage.completion_tokens, event.generation_seconds
                )
                note_generation(
                    engine_request.model,
                    event.usage.prompt_tokens,
                    event.usage.completion_tokens,
                    event.generation_seconds,
                )
            yield event


async def _collect(node: Node, engine_request: GenerationRequest) -> tuple[str, FinishEvent]:
    parts: list[str] = []
    finish: FinishEvent | None = None
    async for event in _generate(node, engine_request):
        if isinstance(event, TokenEvent):
            parts.append(event.text)
        else:
            finish = event
    if finish is None:  # pragma: no cover - the engine contract guarantees a FinishEvent
        raise ApiError(500, "The engine ended without finishing", type_="server_error")
    return "".join(parts), finish


class _SSE:
    """Server-sent events in OpenAI's framing."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )

    async def start(self) -> None:
        await self.response.prepare(self._request)

    async def send(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        await self.response.write(b"data: " + data.encode() + b"\n\n")

    async def send_raw(self, data: bytes) -> None:
        await self.response.write(data)

    async def done(self) -> None:
        await self.response.write(b"data: [DONE]\n\n")
        await self.response.write_eof()


_TEXT_MARK = "\x00prime-spark-text\x00"


def _token_frame(
    make_chunk: Callable[[str | None, str | None], dict[str, Any]],
) -> Callable[[str], bytes]:
    """Pre-render the per-token SSE frame once; each token then costs one string escape.

    Tokens are by far the most frequent frames, and re-serialising the whole chunk object
    for each one was measurable against raw llama-cpp-python's tokens/s.
    """
    rendered = json.dumps(make_chunk(_TEXT_MARK, None), separators=(",", ":"), ensure_ascii=False)
    marker = json.dumps(_TEXT_MARK, ensure_ascii=False)
    head, _, tail = rendered.partition(marker)
    prefix = b"data: " + head.encode()
    suffix = tail.encode() + b"\n\n"

    def frame(text: str) -> bytes:
        return prefix + json.dumps(text, ensure_ascii=False).encode() + suffix

    return frame


async def _stream(
    request: web.Request,
    node: Node,
    *,
    engine_request: GenerationRequest,
    make_chunk: Callable[[str | None, str | None], dict[str, Any]],
    call: _Call,
    first: dict[str, Any] | None = None,
    on_finish: Callable[[dict[str, Any], str, FinishEvent], None] | None = None,
) -> web.StreamResponse:
    """Drive one streamed generation.

    The response starts only once the engine has produced its first event, so queue-full,
    unknown-model and prompt-too-long errors still get a proper status code. A client that goes
    away raises ConnectionResetError on write; leaving the ``async with`` closes the engine
    iterator, which frees the slot at once.
    """
    sse = _SSE(request)
    token_frame = _token_frame(make_chunk)
    parts: list[str] = []
    async with aclosing(_generate(node, engine_request)) as events:
        started = False
        try:
            async for event in events:
                if not started:
                    await sse.start()
                    started = True
                    if first is not None:
                        await sse.send(first)
                if isinstance(event, TokenEvent):
                    if event.text:
                        await sse.send_raw(token_frame(event.text))
                        if on_finish is not None:
                            parts.append(event.text)
                    continue
                final = make_chunk(None, event.finish_reason)
                final["timings"] = _timings(event)
                await sse.send(final)
                if call.include_usage:
                    usage_chunk = make_chunk(None, None)
                    usage_chunk["choices"] = []
                    usage_chunk["usage"] = _usage(event)
                    await sse.send(usage_chunk)
                if on_finish is not None:
                    on_finish(
                        {"role": "assistant", "content": "".join(parts)}, event.finish_reason, event
                    )
        except BackendError as err:
            if not started:
                raise
            await sse.send(from_backend(err).body())
        except ConnectionResetError:
            _LOGGER.debug("Client went away mid-stream; generation stopped")
            return sse.response
    await sse.done()
    return sse.response


@routes.post("/v1/completions")
@requires("operator")
async def completions(request: web.Request) -> web.StreamResponse:
    body = validate(COMPLETION_SCHEMA, await read_json(request))
    return await dispatch(request, "completions", body, lambda b: _completions(request, b))


async def _completions(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Serve a completion on this node (the router chose the edge)."""
    node = request.app[NODE_KEY]
    prompt = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
    call = _call(node, body, "cmpl")
    engine_request = GenerationRequest(
        model=call.model,
        prompt=prompt,
        params=_sampling(node, body, grammar=None),
        timeout=node.settings.models.request_timeout,
    )

    def chunk(text: str | None, finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": call.object_id,
            "object": "text_completion",
            "created": call.created,
            "model": call.model,
            "choices": [
                {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    if call.stream:
        return await _stream(
            request, node, engine_request=engine_request, make_chunk=chunk, call=call
        )
    text, finish = await _collect(node, engine_request)
    result = chunk(text, finish.finish_reason)
    result["usage"] = _usage(finish)
    result["timings"] = _timings(finish)
    return web.json_response(result)


async def _prepare(node: Node, body: dict[str, Any], model: str) -> PreparedChat:
    info = await node.engine.chat_info(model)
    try:
        return prepare_chat(
            body,
            info,
            template_override=node.settings.models.chat_template,
        )
    except ChatFormatError as err:
        raise ApiError(400, str(err), param=err.param) from err


@routes.post("/v1/chat/completions")
@requires("operator")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """The response cache sits in front of the router: a hit is answered here, a miss is
    stored by whichever side (edge or cloud peer) answers it. A byte-identical repeat of a
    request that hit exactly is answered from its alias before the body is even parsed."""
    node = request.app[NODE_KEY]
    raw = await read_body(request)
    alias_key = body_alias_key(request, raw)
    hit = await cached_by_alias(request, alias_key, node)
    if hit is not None:
        return hit
    body = validate(CHAT_SCHEMA, parse_json(raw))
    call = _call(node, body, "chatcmpl")
    cached, lookup = await cached_chat_response(
        request,
        body,
        call.model,
        stream=call.stream,
        include_usage=call.include_usage,
        private=is_private(request, body, node),
        object_id=call.object_id,
        created=call.created,
        alias_key=alias_key,
    )
    if cached is not None:
        return cached
    tap = CloudAnswerTap(request, lookup) if lookup is not None and lookup.key else None
    return await dispatch(
        request, "chat", body, lambda b: _chat_completions(request, b, lookup), tap=tap
    )


async def _chat_completions(
    request: web.Request, body: dict[str, Any], lookup: Lookup | None
) -> web.StreamResponse:
    """Serve a chat completion on this node (the router chose the edge; the cache missed)."""
    node = request.app[NODE_KEY]
    call = _call(node, body, "chatcmpl")
    prepared = await _prepare(node, body, call.model)
    engine_request = GenerationRequest(
        model=call.model,
        prompt=prepared.prompt,
        params=_sampling(node, body, grammar=prepared.grammar, extra_stop=prepared.stop),
        timeout=node.settings.models.request_timeout,
        add_bos=prepared.add_bos,
    )

    def remember(message: dict[str, Any], finish_reason: str, finish: FinishEvent) -> None:
        remember_chat_response(
            request,
            lookup,
            {
                "id": call.object_id,
                "object": "chat.completion",
                "created": call.created,
                "model": call.model,
                "system_fingerprint": node.fingerprint,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": _usage(finish),
            },
        )

    def chunk(text: str | None, finish_reason: str | None) -> dict[str, Any]:
        delta: dict[str, Any] = {} if text is None else {"content": text}
        return {
            "id": call.object_id,
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model,
            "system_fingerprint": node.fingerprint,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    if call.stream and not prepared.uses_tools:
        first = chunk(None, None)
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        return await _stream(
            request,
            node,
            engine_request=engine_request,
            make_chunk=chunk,
            call=call,
            first=first,
            on_finish=remember,
        )

    if call.stream:
        return await _stream_tool_mode(
            request,
            node,
            engine_request=engine_request,
            call=call,
            prepared=prepared,
            on_finish=remember,
        )
    text, finish = await _collect(node, engine_request)
    message, finish_reason = prepared.parse_output(text, finish.finish_reason)
    result = {
        "id": call.object_id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": node.fingerprint,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": _usage(finish),
    }
    remember_chat_response(request, lookup, result)
    return web.json_response({**result, "timings": _timings(finish)})


async def _stream_tool_mode(
    request: web.Request,
    node: Node,
    *,
    engine_request: GenerationRequest,
    call: _Call,
    prepared: PreparedChat,
    on_finish: Callable[[dict[str, Any], str, FinishEvent], None] | None = None,
) -> web.StreamResponse:
    """Stream a reply whose tool calls are only known once the whole output is parsed.

    The response starts with the first engine event (errors before it keep their status code)
    and the role delta; while the output is buffered, a comment line at least every
    ``server.stream_keepalive_seconds`` tells the client the node is still working, so its idle
    timeout measures silence, not the length of a slow tool call. The parsed message then
    leaves as one delta, in OpenAI's ``tool_calls`` shape.
    """
    sse = _SSE(request)
    base = {
        "id": call.object_id,
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": node.fingerprint,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**base, "choices": [choice]}

    keepalive = node.settings.server.stream_keepalive_seconds
    parts: list[str] = []
    started = False
    last_write = 0.0
    async with aclosing(_generate(node, engine_request)) as events:
        try:
            async for event in events:
                if not started:
                    await sse.start()
                    started = True
                    await sse.send(chunk({"role": "assistant", "content": None}, None))
                    last_write = time.monotonic()
                if isinstance(event, TokenEvent):
                    parts.append(event.text)
                    if time.monotonic() - last_write >= keepalive:
                        await sse.send_raw(b": keep-alive\n\n")
                        last_write = time.monotonic()
                    continue
                message, finish_reason = prepared.parse_output("".join(parts), event.finish_reason)
                if on_finish is not None:
                    on_finish(message, finish_reason, event)
                delta = {key: value for key, value in message.items() if key != "role"}
                if delta.get("tool_calls"):
                    delta["tool_calls"] = [
                        {"index": i, **tool_call} for i, tool_call in enumerate(delta["tool_calls"])
                    ]
                await sse.send(chunk(delta, None))
                final = chunk({}, finish_reason)
                final["timings"] = _timings(event)
                await sse.send(final)
                if call.include_usage:
                    await sse.send({**base, "choices": [], "usage": _usage(event)})
        except BackendError as err:
            if not started:
                raise
            await sse.send(from_backend(err).body())
        except ConnectionResetError:
            _LOGGER.debug("Client went away mid-stream; generation stopped")
            return sse.response
    await sse.done()
    return sse.response


@routes.post("/v1/embeddings")
@requires("operator")
async def embeddings(request: web.Request) -> web.StreamResponse:
    body = validate(EMBEDDINGS_SCHEMA, await read_json(request))
    return await dispatch(request, "embeddings", body, lambda b: _embeddings(request, b))


async def _embeddings(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Embed on this node (the router chose the edge)."""
    node = request.app[NODE_KEY]
    model = body.get("model") or node.settings.models.default
    inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
    result = await node.engine.embed(model, inputs)
    node.metrics.observe_embedding(model, result.prompt_tokens)
    note_generation(model, result.prompt_tokens)
    as_base64 = body.get("encoding_format") == "base64"
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": (
                base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if as_base64 else v
            ),
        }
        for i, v in enumerate(result.vectors)
    ]
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }
    )


@routes.get("/v1/models")
@requires("reader")
async def list_models(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    models = await node.engine.models()
    return web.json_response(
        {
            "object": "list",
            "data": [
                {
                    "id": m.id,
                    "object": "model",
                    "created": node.started_at,
                    "owned_by": "prime-spark",
                }
                for m in models
            ],
        }
    )
