"""``/api/v1/link``: the WireGuard link to the cloud peers, as last polled."""

from __future__ import annotations

from aiohttp import web

from inference_server.link.monitor import LINK_KEY
from inference_server.security.middleware import requires

routes = web.RouteTableDef()


@routes.get("/api/v1/link")
@requires("reader")
async def link_status(request: web.Request) -> web.Response:
    """Handshake age, traffic and endpoint per peer; ``state: disabled`` without a link."""
    return web.json_response(request.app[LINK_KEY].snapshot())
