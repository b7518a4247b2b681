"""``/health`` for load balancers and the add-on watchdog, ``/metrics`` for Prometheus."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inference_server.metrics import METRICS_KEY
from inference_server.node import NODE_KEY
from inference_server.security.middleware import public, requires

routes = web.RouteTableDef()


@routes.get("/health")
@public
async def health(request: web.Request) -> web.Response:
    """200 once the default model is ready; 503 with the reason before (llama-server's contract)."""
    node = request.app[NODE_KEY]
    state = node.engine.state
    if state.ready:
        return web.json_response({"status": "ok"})
    return web.json_response(
        {"status": state.status, "reason": state.reason},
        status=503,
        headers={"Retry-After": "5"},
    )


@routes.get("/metrics")
@requires("reader")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY].registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
