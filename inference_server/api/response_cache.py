"""Glue between ``/v1/chat/completions`` and the response cache: lookup before, store after.

The lookup runs *before* the router (a hit never reaches the edge's engine or a cloud peer and
its ``x-prime-spark-route`` says ``cache: hit``); a miss is stored whichever side answered: the
edge through :func:`remember_chat_response`, a cloud peer through :class:`CloudAnswerTap`, which
the dispatcher feeds with the peer's whole answer or its SSE lines.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Hashable
from typing import Any, Final

from aiohttp import web

from inference_server.analytics.events import CacheResult
from inference_server.analytics.requests import current_record
from inference_server.memory.cache import (
    CACHE_MODE_HEADER,
    CACHE_STATUS_KEY,
    HEADER,
    NAMESPACE_HEADER,
    RESPONSE_CACHE_KEY,
    Alias,
    CacheStatus,
    Lookup,
    hit_body,
)
from inference_server.node import Node
from inference_server.routing.dispatch import (
    PRIVATE_HEADER,
    ROUTE_KEY,
    RouteInfo,
    private_verdict,
)
from inference_server.security.middleware import PRINCIPAL_KEY

_ROUTES: Final[dict[CacheStatus, RouteInfo]] = {
    status: RouteInfo(reason=f"cache: {status}") for status in ("hit", "semantic-hit")
}
"""The route a hit took (``x-prime-spark-route``); ``RouteInfo`` is frozen, so one each."""
_ANALYTICS_CACHE: Final[dict[CacheStatus, CacheResult]] = {
    "hit": "exact",
    "semantic-hit": "semantic",
    "miss": "miss",
    "bypass": "none",
}


ALIAS_HEADERS_MAX: Final = 512
"""Characters of the three cache headers together beyond which a request gets no alias."""


def body_alias_key(request: web.Request, raw: bytes) -> Hashable | None:
    """The request bytes and everything outside them that an exact lookup depends on.

    The body's SHA-256 with the cache, privacy and namespace headers as sent and the caller's
    principal: two requests with the same alias key parse, validate and canonicalise to the
    same lookup, so an alias (:class:`~inference_server.memory.cache.Alias`) recorded for one
    answers the other without those steps. What may change under it (the node's default model,
    the router's privacy default, the cache being turned off, the entry's TTL) is checked again
    on every use (:func:`cached_by_alias`). ``None`` (no alias: the full path every time) when
    those headers are longer than :data:`ALIAS_HEADERS_MAX` together, or with the cache off
    (nothing to hash the body for).
    """
    cache = request.app.get(RESPONSE_CACHE_KEY)
    if cache is None or not cache.enabled:
        return None
    headers = request.headers
    principal = request.get(PRINCIPAL_KEY)
    mode = headers.get(CACHE_MODE_HEADER)
    namespace = headers.get(NAMESPACE_HEADER)
    private = headers.get(PRIVATE_HEADER)
    if len(mode or "") + len(namespace or "") + len(private or "") > ALIAS_HEADERS_MAX:
        return None  # kept as sent in the key: long values would make the aliases big
    return (
        hashlib.sha256(raw).digest(),
        mode,
        namespace,
        private,
        None if principal is None else principal.key,
    )


async def cached_by_alias(
    request: web.Request, alias_key: Hashable | None, node: Node
) -> web.StreamResponse | None:
    """The exact hit of a byte-identical request answered before (see :func:`body_alias_key`),
    else ``None`` with nothing recorded or counted: the caller then takes the full path."""
    cache = request.app.get(RESPONSE_CACHE_KEY)
    if cache is None or alias_key is None:
        return None
    alias = cache.alias(alias_key)
    if alias is None:
        return None
    model = alias.model or node.settings.models.default
    if model != alias.resolved_model:
        return None
    if private_verdict(request, alias.private, node) != alias.resolved_private:
        return None
    lookup = cache.lookup_alias(alias_key, alias)
    if lookup is None:
        return None
    return await _answer(
        request, lookup, model, stream=alias.stream, include_usage=alias.include_usage
    )


async def cached_chat_response(
    request: web.Request,
    body: dict[str, Any],
    model: str,
    *,
    stream: bool,
    include_usage: bool,
    private: bool | None = None,
    object_id: str | None = None,
    created: int | None = None,
    alias_key: Hashable | None = None,
) -> tuple[web.StreamResponse | None, Lookup | None]:
    """A response for a cache hit (JSON or SSE like the request asked), else the lookup to store.

    ``private`` is the router's verdict (flags, token and node defaults), so the cache's privacy
    scope is exactly the one that decides whether a request may leave the node. ``object_id``
    and ``created`` are the ones the handler already made for this request (made here if not).
    A JSON hit is the entry's JSON encoded when it was stored, with this request's id and time
    in front: the reply is not serialized again on every hit. After an exact hit, an
    ``alias_key`` (:func:`body_alias_key`) is remembered, so the same bytes hit without parsing.
    """
    cache = request.app.get(RESPONSE_CACHE_KEY)
    if cache is None:
        return None, None
    lookup = await cache.lookup(body, request.headers, model, private=private)
    if lookup.status == "hit" and alias_key is not None and private is not None and lookup.key:
        flag = body.get("private")
        cache.remember_alias(
            alias_key,
            Alias(
                key=lookup.key,
                model=body.get("model") or None,
                private=flag if isinstance(flag, bool) else None,
                resolved_model=model,
                resolved_private=private,
                stream=stream,
                include_usage=include_usage,
            ),
        )
    if lookup.response is None:
        _note(request, lookup, model)
        return None, lookup
    response = await _answer(
        request,
        lookup,
        model,
        stream=stream,
        include_usage=include_usage,
        object_id=object_id,
        created=created,
    )
    return response, lookup


def _note(request: web.Request, lookup: Lookup, model: str) -> None:
    """What the cache did, for the response header and the request's inference event."""
    request[CACHE_STATUS_KEY] = lookup.status
    record = current_record()
    if record is not None:  # the inference event's cache column (the summary's hit rate)
        record.cache = _ANALYTICS_CACHE[lookup.status]
        record.model = record.model or model


async def _answer(
    request: web.Request,
    lookup: Lookup,
    model: str,
    *,
    stream: bool,
    include_usage: bool,
    object_id: str | None = None,
    created: int | None = None,
) -> web.StreamResponse:
    """The reply of a hit: JSON spliced from the stored encoding, or the stream replayed."""
    _note(request, lookup, model)
    request[ROUTE_KEY] = _ROUTES[lookup.status]
    cached = lookup.response or {}
    object_id = object_id or f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time()) if created is None else created
    if not stream:
        if not lookup.encoded:
            return web.json_response({**cached, "id": object_id, "created": created})
        body_bytes = hit_body(lookup.encoded, object_id, created)
        return web.Response(body=body_bytes, content_type="application/json", charset="utf-8")
    return await _replay_stream(request, cached, object_id, created, include_usage)


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


class CloudAnswerTap:
    """Stores a cloud peer's answer after a miss: whole, or rebuilt from its SSE chunks.

    A stream is only stored when it ended complete (``[DONE]`` after a finish reason, no error
    frame); a cut or abandoned stream never becomes a cache entry.
    """

    def __init__(self, request: web.Request, lookup: Lookup) -> None:
        self._request = request
        self._lookup = lookup
        self._base: dict[str, Any] = {}
        self._content: list[str] = []
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._broken = False

    def answer(self, data: dict[str, Any]) -> None:
        if data.get("object") == "chat.completion":
            stored = {key: value for key, value in data.items() if key != "timings"}
            remember_chat_response(self._request, self._lookup, stored)

    def line(self, line: bytes) -> None:
        if self._broken or not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            return
        try:
            chunk = json.loads(line[6:])
        except ValueError:
            self._broken = True
            return
        if not isinstance(chunk, dict) or "error" in chunk:
            self._broken = True
            return
        if not self._base:
            self._base = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self._content.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                self._merge_tool_call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def _merge_tool_call(self, call: dict[str, Any]) -> None:
        empty = {"type": "function", "function": {"name": "", "arguments": ""}}
        slot = self._tool_calls.setdefault(int(call.get("index", 0)), empty)
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""

    def done(self) -> None:
        if self._broken or self._finish is None or not self._base:
            return
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content)}
        if self._tool_calls:
            message["content"] = message["content"] or None
            message["tool_calls"] = [
                {"id": c.get("id", ""), "type": c["type"], "function": c["function"]}
                for _, c in sorted(self._tool_calls.items())
            ]
        response: dict[str, Any] = {
            **self._base,
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self._finish}
            ],
        }
        if self._usage is not None:
            response["usage"] = self._usage
        remember_chat_response(self._request, self._lookup, response)


async def add_cache_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every chat response says what the cache did."""
    status = request.get(CACHE_STATUS_KEY)
    if status is not None:
        response.headers[HEADER] = status
