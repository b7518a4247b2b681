"""The control plane under ``/api/v1``: what Home Assistant and operators read and change.

Versioned separately from the OpenAI surface; the OpenAPI document served here is the contract
the integration's client is tested against.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web

from inference_server.analytics.service import ANALYTICS_KEY
from inference_server.api.power import describe_power
from inference_server.discovery import API_VERSION
from inference_server.events import SHUTDOWN
from inference_server.link.monitor import LINK_KEY
from inference_server.node import NODE_KEY
from inference_server.security.middleware import PRINCIPAL_KEY, public, requires

routes = web.RouteTableDef()


@cache
def openapi_document() -> dict[str, Any]:
    text = resources.files("inference_server.api").joinpath("openapi.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


@routes.get("/api/v1/openapi.json")
@public
async def openapi(request: web.Request) -> web.Response:
    """Public like /health: a client needs the contract before it has a token."""
    return web.json_response(openapi_document())


@routes.get("/api/v1/status")
@requires("reader")
async def status(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    engine = node.engine
    state = engine.state
    slots = engine.slots()
    models = await engine.models()
    principal = request[PRINCIPAL_KEY]
    routing = node.router.describe() if node.router is not None else None
    analytics = request.app.get(ANALYTICS_KEY)
    return web.json_response(
        {
            "node_id": node.node_id,
            "version": node.version,
            "api_version": API_VERSION,
            "started_at": node.started_at,
            "uptime_seconds": round(node.uptime_seconds, 3),
            "ready": state.ready,
            "state": state.status,
            "reason": state.reason,
            "default_model": node.settings.models.default,
            "models": [_model(m) for m in models],
            "slots": {
                "total": len(slots),
                "busy": sum(1 for s in slots if s.busy),
                "detail": [dataclasses.asdict(s) for s in slots],
            },
            "queue": {
                "depth": engine.queue_depth(),
                "capacity": node.settings.models.queue_size,
            },
            "stats": node.stats_snapshot(),
            "caller": {"name": principal.name, "role": principal.role},
            "link": request.app[LINK_KEY].snapshot(),
            "routing": routing,
            "power": await describe_power(node) if node.power is not None else None,
            "analytics": analytics.health() if analytics is not None else None,
        }
    )


KEEPALIVE_SECONDS = 15.0


@routes.get("/api/v1/events")
@requires("reader")
async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a ``state`` snapshot at once, then every change as it happens.

    A comment line every 15 s keeps proxies from closing an idle stream and lets the client
    detect a dead connection. ``retry`` tells EventSource clients how soon to reconnect.
    """
    node = request.app[NODE_KEY]
    subscription = node.events.subscribe()
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        await response.write(b"retry: 2000\n\n")
        await _send_event(response, 0, "state", node.state_snapshot())
        await _send_event(response, 0, "stats", node.stats_snapshot())
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    event = await subscription.queue.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if event.type == SHUTDOWN:
                break
            if subscription.overflowed:
                subscription.overflowed = False
                await _send_event(response, event.id, "resync", node.state_snapshot())
            await _send_event(response, event.id, event.type, event.data)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        subscription.close()
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def _send_event(
    response: web.StreamResponse, event_id: int, type_: str, data: dict[str, Any]
) -> None:
    payload = json.dumps(data, separators=(",", ":"))
    await response.write(f"id: {event_id}\nevent: {type_}\ndata: {payload}\n\n".encode())


def _model(info: Any) -> dict[str, Any]:
    data = dataclasses.asdict(info)
    data.pop("chat_template", None)
    data["has_chat_template"] = info.chat_template is not None
    return data


@routes.get("/api/v1/models")
@requires("reader")
async def models(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return web.json_response(
        {
            "default": node.settings.models.default,
            "max_loaded": node.settings.models.max_loaded,
            "models": [_model(m) for m in await node.engine.models()],
        }
    )


@routes.post("/api/v1/models/{model_id}/reload")
@requires("operator")
async def reload_model(request: web.Request) -> web.Response:
    """Load (or unload and load again) a model; answers when it is ready to serve."""
    node = request.app[NODE_KEY]
    model_id = request.match_info["model_id"]
    info = await node.engine.reload(model_id)
    return web.json_response(_model(info))
