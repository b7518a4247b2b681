"""Carries a routing plan out for one OpenAI request: edge, cloud, and fallback between them.

This sits between the OpenAI routes and the engines: a route validates the body, then hands it
here with a callable that serves it locally. A cloud attempt forwards the body to the peer
(:mod:`inference_server.backends.remote`); a local one calls back into the route.

Fallback happens only before the first byte reached the client. A non-streaming answer is sent
whole, so any failure of the chosen side can still fall back. A stream is forwarded only once the
peer produced its first line; if the peer dies later the client gets an ``error`` chunk that says
so (``upstream_stream_cut``) and ``data: [DONE]``: text already shown cannot be taken back, and
starting over on the edge would show the start twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiohttp import web

from inference_server.analytics.events import RoutingEvent
from inference_server.analytics.requests import current_record, forwarded_by, note_generation
from inference_server.api.errors import ApiError
from inference_server.backends.base import (
    BackendError,
    GenerationTimeoutError,
    InvalidGrammarError,
    ModelNotFoundError,
    PromptTooLongError,
    QueueFullError,
)
from inference_server.backends.remote import (
    FORWARDED_HEADER,
    FORWARDED_MAX_LENGTH,
    RemoteStream,
    UpstreamBusy,
    UpstreamError,
    UpstreamRejected,
)
from inference_server.models.embedding import EMBEDDING_MODEL_ID
from inference_server.node import NODE_KEY, Node
from inference_server.power.modes import HeavyWorkRefused
from inference_server.routing.router import (
    CLOUD_EDGE_FAILED,
    CLOUD_EDGE_QUEUE_FULL,
    CLOUD_PEER_FAILED,
    EDGE_CLOUD_FAILED,
    REFUSED_POWER,
    Kind,
    Plan,
    RouteRefused,
    RouteRequest,
    Target,
    Upstream,
)
from inference_server.security.middleware import PRINCIPAL_KEY

_LOGGER = logging.getLogger(__name__)

ROUTE_HEADER: Final = "x-prime-spark-route"
PEER_HEADER: Final = "x-prime-spark-peer"
PRIVATE_HEADER: Final = "X-Prime-Spark-Private"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_PATHS: dict[Kind, str] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
_CLIENT_ERRORS = (ModelNotFoundError, PromptTooLongError, InvalidGrammarError)
"""Local failures that are the request's own fault: the cloud would refuse them too."""

Local = Callable[[dict[str, Any]], Awaitable[web.StreamResponse]]


class AnswerTap(Protocol):
    """Sees a cloud peer's successful answer as it passes through (the response cache uses it
    to store what the cloud said, so the next identical request never leaves the edge)."""

    def answer(self, data: dict[str, Any]) -> None:
        """A whole (non-streamed) answer."""

    def line(self, line: bytes) -> None:
        """One SSE line of a streamed answer, as forwarded to the client."""

    def done(self) -> None:
        """The stream ended complete (never called after a cut or a client leaving)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RouteInfo:
    reason: str
    peer: str | None = None


ROUTE_KEY: Final = web.RequestKey("route", RouteInfo)


async def add_route_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer of a routed request says where it went and why,
    including error answers and streams (their headers leave before the first chunk)."""
    info = request.get(ROUTE_KEY)
    if info is None:
        return
    response.headers[ROUTE_HEADER] = info.reason
    if info.peer is not None:
        response.headers[PEER_HEADER] = info.peer


def is_private(request: web.Request, body: dict[str, Any], node: Node) -> bool:
    """Private when the body or the header says so; else the node's default for this caller."""
    header = _private_header(request)
    flag: bool | None = None
    if "private" in body:
        flag = body["private"]
        if not isinstance(flag, bool):
            raise ApiError(400, "private: expected a boolean", param="private")
    return _private(request, header, flag, node)


def private_verdict(request: web.Request, body_flag: bool | None, node: Node) -> bool:
    """:func:`is_private` for a body whose ``private`` field (``None``: absent) is known."""
    return _private(request, _private_header(request), body_flag, node)


def _private_header(request: web.Request) -> bool | None:
    header = request.headers.get(PRIVATE_HEADER)
    if header is None:
        return None
    value = header.strip().lower()
    if value not in _TRUE | _FALSE:
        raise ApiError(400, f"{PRIVATE_HEADER}: expected true or false", code="invalid_header")
    return value in _TRUE


def _private(request: web.Request, header: bool | None, body: bool | None, node: Node) -> bool:
    if header is not None or body is not None:
        return bool(header) or bool(body)
    settings = node.settings.routing
    principal = request.get(PRINCIPAL_KEY)
    by_token = principal is not None and principal.name in settings.private_tokens
    return settings.default_private or by_token


async def dispatch(
    request: web.Request,
    kind: Kind,
    body: dict[str, Any],
    local: Local,
    *,
    tap: AnswerTap | None = None,
) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    router = node.router
    if router is None:  # pragma: no cover - create_app always attaches one
        return await local(body)
    forwarded = request.headers.get(FORWARDED_HEADER)
    if forwarded is not None and forwarded_by(request) is None:
        raise ApiError(
            400,
            f"{FORWARDED_HEADER}: expected the forwarding node's id "
            f"(1 to {FORWARDED_MAX_LENGTH} characters)",
            code="invalid_header",
        )
    private = is_private(request, body, node)
    body = {k: v for k, v in body.items() if k != "private"}
    route = RouteRequest(
        kind=kind,
        model=body.get("model") or None,
        private=private,
        forwarded=forwarded is not None,
        stream=kind != "embeddings" and bool(body.get("stream")),
    )
    try:
        plan = await router.plan(route)
    except RouteRefused as err:
        request[ROUTE_KEY] = RouteInfo(reason=err.reason)
        _decided(request, node, route, target=None, reason=err.reason, peer=None, ok=False)
        raise ApiError(err.status, str(err), code=err.code, param="model") from err

    async def edge(reason: str) -> web.StreamResponse:
        return await _edge(request, node=node, route=route, body=body, reason=reason, local=local)

    async def cloud(upstream: Upstream, reason: str) -> web.StreamResponse:
        return await _cloud(
            request, node=node, upstream=upstream, route=route, body=body, reason=reason, tap=tap
        )

    try:
        return await run_attempts(plan, edge=edge, cloud=cloud)
    except (UpstreamError, NoPeerAdmitted) as err:
        raise ApiError(502, str(err), type_="server_error", code="upstream_failed") from err


class NoPeerAdmitted(Exception):
    """Every planned peer was cooling down with its one half-open probe already out."""

    def __init__(self) -> None:
        super().__init__("No cloud peer could take the request")


async def run_attempts[T](
    plan: Plan,
    *,
    edge: Callable[[str], Awaitable[T]],
    cloud: Callable[[Upstream, str], Awaitable[T]],
) -> T:
    """Try a plan's sides in order, falling back on the failures a fallback can cure.

    The one fallback policy of HTTP requests (:func:`dispatch`) and agent tasks
    (agents/engine.py). ``edge(reason)`` serves here; ``cloud(upstream, reason)`` asks a peer.
    A request's own mistakes (unknown model, prompt too long, bad grammar) and timeouts are
    raised at once: the other side would fail them too. A full edge queue or an engine failure
    moves on to the next attempt (a queue-full fallback is reported as such), as does a peer
    failure. The last attempt's error is raised; :class:`NoPeerAdmitted` when no attempt ran.
    """
    failure: BaseException | None = None
    reason_override: str | None = None
    for index, attempt in enumerate(plan.attempts):
        last = index == len(plan.attempts) - 1
        if attempt.target == "edge":
            try:
                return await edge(attempt.reason)
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
        upstream = attempt.upstream
        assert upstream is not None  # nosec B101: set up with routing
        if not upstream.admit():
            continue  # another request holds the half-open probe
        try:
            return await cloud(upstream, reason_override or attempt.reason)
        except UpstreamError as err:
            _LOGGER.warning("%s; %s", err, "giving up" if last else "falling back")
            failure = err
    if failure is not None:
        raise failure
    raise NoPeerAdmitted


async def _edge(
    request: web.Request,
    *,
    node: Node,
    route: RouteRequest,
    body: dict[str, Any],
    reason: str,
    local: Local,
) -> web.StreamResponse:
    router = node.router
    power = node.power
    assert router is not None  # nosec B101: set up with routing
    assert power is not None  # nosec B101: set up with routing
    request[ROUTE_KEY] = RouteInfo(reason=reason)
    if power.profile.refuse_heavy:
        model = body.get("model") or ""
        resolved: str | None = None
        try:
            resolved = await node.engine.resolve(model)
            loaded = resolved in node.engine.loaded_model_ids()
        except ModelNotFoundError:
            loaded = True  # let the local path give its 404
        # Generation only: the embedding model is separate and small, and not a chat model.
        smallest = min(
            (m for m in await node.engine.models() if m.id != EMBEDDING_MODEL_ID),
            key=lambda m: (m.size_bytes, m.id),
            default=None,
        )
        try:
            power.check_heavy(
                route.kind,
                body,
                model_loaded=loaded,
                model=resolved,
                smallest=None if smallest is None or route.kind == "embeddings" else smallest.id,
            )
        except HeavyWorkRefused as err:
            request[ROUTE_KEY] = RouteInfo(reason=REFUSED_POWER)
            _decided(request, node, route, target=None, reason=REFUSED_POWER, peer=None, ok=False)
            # 409, not 503: the node works as its mode says; the caller can ask for less.
            raise ApiError(
                409,
                f"The node is in critical power mode and refuses heavy work: {err}. Ask for "
                "less, or change the power mode (PUT /api/v1/power).",
                code="power_critical",
            ) from err
    started = time.monotonic()
    router.edge_inflight += 1
    ok = False
    try:
        response = await local(body)
        ok = response.status < 400
        return response
    finally:
        router.edge_inflight -= 1
        if ok:
            router.observe_edge(time.monotonic() - started)
            _decided(request, node, route, target="edge", reason=reason, peer=None, ok=True)


async def _cloud(
    request: web.Request,
    *,
    node: Node,
    upstream: Upstream,
    route: RouteRequest,
    body: dict[str, Any],
    reason: str,
    tap: AnswerTap | None = None,
) -> web.StreamResponse:
    router = node.router
    assert router is not None  # nosec B101: set up with routing
    metrics = node.routing_metrics
    model = upstream.model_for(route.model, node.engine.default_model)
    forward = {**body, "model": model} if model is not None else body
    request[ROUTE_KEY] = RouteInfo(reason=reason, peer=upstream.name)
    path = _PATHS[route.kind]
    started = time.monotonic()
    upstream.inflight += 1
    upstream.requests += 1
    try:
        if not route.stream:
            try:
                data = await upstream.backend.post(path, forward)
            except UpstreamRejected as err:
                upstream.breaker.record_success()  # it answered: it is healthy
                _outcome(node, upstream, "rejected")
                _decided(
                    request,
                    node,
                    route,
                    target="cloud",
                    reason=reason,
                    peer=upstream.name,
                    ok=False,
                )
                return web.json_response(err.body, status=err.status)
            except UpstreamError as err:
                _failed(node, upstream, err)
                raise
            upstream.breaker.record_success()
            upstream.reachable = True
            router.observe_cloud(upstream, time.monotonic() - started)
            _outcome(node, upstream, "ok")
            if metrics is not None:
                metrics.usage(upstream.name, data.get("usage"))
            _note_cloud_usage(model or route.model, data)
            _decided(
                request, node, route, target="cloud", reason=reason, peer=upstream.name, ok=True
            )
            if tap is not None:
                tap.answer(data)
            return web.json_response(data)
        # Ask for the usage chunk whatever the client asked: the inference record needs the
        # token counts; the chunk is kept from a client that did not ask for it.
        client_usage = _wants_usage(body)
        streamed = {**forward, "stream_options": {**_options(body), "include_usage": True}}
        try:
            try:
                stream = await upstream.backend.stream(path, streamed)
            except UpstreamRejected as err:
                if "stream_options" in body or err.status not in {400, 422}:
                    raise
                # A strict peer that does not know the field refused the body we changed:
                # ask again as the client asked (its tokens are then counted by text chunks).
                stream = await upstream.backend.stream(path, forward)
        except UpstreamRejected as err:
            upstream.breaker.record_success()
            _outcome(node, upstream, "rejected")
            _decided(
                request, node, route, target="cloud", reason=reason, peer=upstream.name, ok=False
            )
            return web.json_response(err.body, status=err.status)
        except UpstreamError as err:
            _failed(node, upstream, err)
            raise
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        _decided(request, node, route, target="cloud", reason=reason, peer=upstream.name, ok=True)
        try:
            await response.prepare(request)
            async for line in stream.chunks():
                if tap is not None:
                    tap.line(line)  # the whole answer, usage included (the cache replays it)
                if stream.usage_only and not client_usage:
                    continue
                await response.write(line)
        except UpstreamError as err:
            _note_stream_usage(model or route.model, stream)  # what was sent was still work
            _failed(node, upstream, err, outcome="cut")
            error = {
                "error": {
                    "message": f"{err}. Streaming had begun, so the request cannot fall back "
                    "to the edge; send it again.",
                    "type": "server_error",
                    "param": None,
                    "code": "upstream_stream_cut",
                }
            }
            await response.write(b"data: " + json.dumps(error).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
        except ConnectionResetError:
            _note_stream_usage(model or route.model, stream)
            stream.close()  # the client left: closing the connection stops the peer too
            upstream.breaker.release_probe()
            return response
        else:
            upstream.breaker.record_success()
            router.observe_cloud(upstream, time.monotonic() - started)
            _outcome(node, upstream, "ok")
            if metrics is not None:
                metrics.usage(upstream.name, stream.usage)
            _note_stream_usage(model or route.model, stream)
            if tap is not None:
                tap.done()
        await response.write_eof()
        return response
    finally:
        upstream.inflight -= 1


def _failed(node: Node, upstream: Upstream, err: UpstreamError, outcome: str = "failed") -> None:
    if isinstance(err, UpstreamBusy):
        upstream.breaker.record_success()  # it is alive, only full
        _outcome(node, upstream, "busy")
        return
    upstream.failures += 1
    if err.status is None:
        upstream.reachable = False  # no answer at all (an HTTP error still means it is up)
    upstream.breaker.record_failure(str(err))
    _outcome(node, upstream, outcome)


def _outcome(node: Node, upstream: Upstream, outcome: str) -> None:
    if node.routing_metrics is not None:
        node.routing_metrics.upstream_requests.labels(upstream.name, outcome).inc()


def _decided(
    request: web.Request,
    node: Node,
    route: RouteRequest,
    *,
    target: Target | None,
    reason: str,
    peer: str | None,
    ok: bool,
) -> None:
    """Count, remember and publish one decision (the ``route`` event HA shows)."""
    publish_decision(node, route, target=target, reason=reason, peer=peer, ok=ok)


def publish_decision(
    node: Node,
    route: RouteRequest,
    *,
    target: Target | None,
    reason: str,
    peer: str | None,
    ok: bool,
) -> None:
    """:func:`_decided` without an HTTP request: agent tasks are routed too (agents/engine)."""
    router = node.router
    assert router is not None  # nosec B101: set up with routing
    decision: dict[str, Any] = {
        "target": target,
        "peer": peer,
        "reason": reason,
        "mode": router.mode,
        "power_mode": node.power.mode if node.power is not None else None,
        "kind": route.kind,
        "model": route.model,
        "private": route.private,
        "stream": route.stream,
        "ok": ok,
        "at": time.time(),
    }
    if target is not None:
        router.record(target, decision)
    else:
        router.last_decision = decision
    decision["edge_share_percent"] = router.edge_share()
    if node.routing_metrics is not None:
        node.routing_metrics.decisions.labels(target or "none", peer or "", reason).inc()
    node.events.publish("route", decision)
    if target is not None:
        _emit_decision(node, route, target=target, reason=reason, peer=peer, ok=ok)


FALLBACK_REASONS: Final = frozenset(
    {EDGE_CLOUD_FAILED, CLOUD_EDGE_FAILED, CLOUD_PEER_FAILED, CLOUD_EDGE_QUEUE_FULL}
)


def _emit_decision(
    node: Node, route: RouteRequest, *, target: Target, reason: str, peer: str | None, ok: bool
) -> None:
    """The ``routing`` analytics event, and the side/peer of the request's inference event.

    A refused request (no target) has no routing event: the schema's ``decision`` is a side,
    and its inference event (4xx/503) already records it. Only a cloud answer that worked
    marks the record ``cloud``, so the edge/cloud share counts who really served it.
    """
    router = node.router
    assert router is not None  # nosec B101: set up with routing
    node.emit_event(
        RoutingEvent(
            mode=router.mode,
            decision=target,
            reason=reason,
            model=route.model,
            private=route.private,
            fallback=reason in FALLBACK_REASONS,
            peer=peer,
        )
    )
    record = current_record()
    if record is not None and ok:
        record.side = target
        record.peer = peer


def _note_cloud_usage(model: str | None, data: dict[str, Any]) -> None:
    """Model and tokens of a peer's answer into the inference record (the edge path's
    generation code does this for local answers); a stream's go through _note_stream_usage."""
    usage = data.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    note_generation(
        str(data.get("model") or model or ""),
        prompt if isinstance(prompt, int) and prompt >= 0 else 0,
        completion if isinstance(completion, int) and completion >= 0 else 0,
    )


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("stream_options")
    return options if isinstance(options, dict) else {}


def _wants_usage(body: dict[str, Any]) -> bool:
    return bool(_options(body).get("include_usage"))


def _note_stream_usage(model: str | None, stream: RemoteStream) -> None:
    """Tokens of a streamed peer answer into the inference record: the peer's usage chunk
    when it sent one, else the chunks that carried text (one token each in the servers we
    know; an undercount for a peer that packs tokens, and the prompt stays unknown: 0)."""
    if stream.usage is not None:
        _note_cloud_usage(model, {"model": stream.model, "usage": stream.usage})
    else:
        note_generation(str(stream.model or model or ""), 0, stream.text_chunks)


record_upstream_failure = _failed
"""Breaker and counter bookkeeping of a failed peer call, for callers outside an HTTP route."""
record_upstream_outcome = _outcome
