"""Glue between ``/v1/chat/completions`` and the response cache: lookup before, store after.

Kept out of api/openai.py so the chat route gains two calls, and a router in front of the
engine can later sit behind the same two calls.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Final

from aiohttp import web

from inference_server.analytics.events import CacheResult
from inference_server.analytics.requests import current_record
from inference_server.memory.cache import (
    CACHE_STATUS_KEY,
    HEADER,
    RESPONSE_CACHE_KEY,
    CacheStatus,
    Lookup,
)

_ANALYTICS_CACHE: Final[dict[CacheStatus, CacheResult]] = {
    "hit": "exact",
    "semantic-hit": "semantic",
    "miss": "miss",
    "bypass": "none",
}


async def cached_chat_response(
    request: web.Request, body: dict[str, Any], model: str, *, stream: bool, include_usage: bool
) -> tuple[web.StreamResponse | None, Lookup | None]:
    """A response for a cache hit (JSON or SSE like the request asked), else the lookup to store."""
    cache = request.app.get(RESPONSE_CACHE_KEY)
    if cache is None:
        return None, None
    lookup = await cache.lookup(body, request.headers, model)
    request[CACHE_STATUS_KEY] = lookup.status
    record = current_record()
    if record is not None:  # the inference event's cache column (the summary's hit rate)
        record.cache = _ANALYTICS_CACHE[lookup.status]
        record.model = record.model or model
    if lookup.response is None:
        return None, lookup
    cached = lookup.response
    object_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not stream:
        return web.json_response({**cached, "id": object_id, "created": created}), lookup
    return await _replay_stream(request, cached, object_id, created, include_usage), lookup


async def _replay_stream(
    request: web.Request,
    cached: dict[str, Any],
    object_id: str,
    created: int,
    include_usage: bool,
) -> web.StreamResponse:
    """The cached answer in OpenAI's chunk framing: role, content (or tool calls), finish."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    choice = cached["choices"][0]
    message = choice["message"]
    base = {
        "id": object_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": cached["model"],
        "system_fingerprint": cached.get("system_fingerprint"),
    }

    def frame(delta: dict[str, Any], finish: str | None) -> bytes:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish}]}  # fmt: skip
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    delta: dict[str, Any] = {key: value for key, value in message.items() if key != "role"}
    if delta.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(delta["tool_calls"])]
    await response.write(frame({"role": "assistant", "content": ""}, None))
    await response.write(frame(delta, None))
    await response.write(frame({}, choice["finish_reason"]))
    if include_usage and cached.get("usage"):
        usage = {**base, "choices": [], "usage": cached["usage"]}
        await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def remember_chat_response(
    request: web.Request, lookup: Lookup | None, response: dict[str, Any]
) -> None:
    """Store a complete chat.completion (built from a streamed reply, too) after a miss."""
    if lookup is None:
        return
    cache = request.app.get(RESPONSE_CACHE_KEY)
    if cache is not None:
        cache.store(lookup, response)


async def add_cache_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every chat response says what the cache did."""
    status = request.get(CACHE_STATUS_KEY)
    if status is not None:
        response.headers[HEADER] = status
