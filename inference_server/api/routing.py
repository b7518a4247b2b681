"""``/api/v1/routing``: read and change how requests are split between the edge and the cloud."""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from aiohttp import web

from inference_server.api.errors import ApiError
from inference_server.api.validation import read_json, validate
from inference_server.config import ROUTING_MODES
from inference_server.node import NODE_KEY
from inference_server.routing.router import Router
from inference_server.security.middleware import requires

routes = web.RouteTableDef()

ROUTING_SCHEMA = vol.Schema(
    {
        vol.Required("mode"): vol.In(
            ROUTING_MODES, msg=f"expected one of {', '.join(ROUTING_MODES)}"
        ),
    }
)


def _router(request: web.Request) -> Router:
    router = request.app[NODE_KEY].router
    if router is None:  # pragma: no cover - create_app always attaches one
        raise ApiError(503, "Routing is not available", type_="server_error")
    return router


def _describe(router: Router) -> dict[str, Any]:
    return router.describe()


@routes.get("/api/v1/routing")
@requires("reader")
async def get_routing(request: web.Request) -> web.Response:
    """Mode, each peer's breaker and latency, the edge share and the last decision."""
    return web.json_response(_describe(_router(request)))


@routes.put("/api/v1/routing")
@requires("operator")
async def put_routing(request: web.Request) -> web.Response:
    """Change the mode for the next requests; kept in the data dir across restarts."""
    body = validate(ROUTING_SCHEMA, await read_json(request))
    router = _router(request)
    router.set_mode(body["mode"])
    return web.json_response(_describe(router))
