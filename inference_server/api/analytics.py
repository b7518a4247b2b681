"""Analytics routes under ``/api/v1/analytics``: the windowed summary HA's sensors read, the
subsystem's health, ingest for emitters outside this process, and running a job on demand.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from inference_server.analytics.schema import EventSchemaError, validate_event
from inference_server.analytics.service import ANALYTICS_KEY, Analytics
from inference_server.analytics.summary import WINDOWS
from inference_server.api.errors import ApiError
from inference_server.api.validation import read_json
from inference_server.security.middleware import requires

routes = web.RouteTableDef()

MAX_INGEST = 1000


def _analytics(request: web.Request) -> Analytics:
    analytics = request.app.get(ANALYTICS_KEY)
    if analytics is None:
        raise ApiError(
            503,
            "Analytics is disabled on this node (analytics.enabled: false)",
            type_="server_error",
            code="analytics_disabled",
        )
    return analytics


@routes.get("/api/v1/analytics/summary")
@requires("reader")
async def summary(request: web.Request) -> web.Response:
    analytics = _analytics(request)
    window = request.query.get("window", "1h")
    if window not in WINDOWS:
        raise ApiError(
            400,
            f"window must be one of {', '.join(WINDOWS)}",
            code="invalid_window",
            param="window",
        )
    if analytics.store_error is not None:
        raise ApiError(
            503,
            f"The analytics store is unavailable: {analytics.store_error}",
            type_="server_error",
            code="analytics_store_unavailable",
        )
    body = await analytics.summary(window)
    health = analytics.health()
    body["health"] = {
        "healthy": health["healthy"],
        "store": health["store"],
        "kafka_configured": health["kafka"]["configured"],
        "kafka_connected": health["kafka"]["connected"],
        "spool_backlog": health["spool"]["backlog_events"],
        "spool_near_full": health["spool"]["near_full"],
    }
    return web.json_response(body)


@routes.get("/api/v1/analytics/health")
@requires("reader")
async def health(request: web.Request) -> web.Response:
    return web.json_response(_analytics(request).health())


@routes.post("/api/v1/analytics/events")
@requires("operator")
async def ingest(request: web.Request) -> web.Response:
    """Accept events from emitters outside this process (another node, a script).

    The whole request is refused (400, nothing enqueued) when any event breaks its schema, so
    a sender can fix and resend it without creating partial duplicates.
    """
    analytics = _analytics(request)
    body: Any = await read_json(request)
    events = body if isinstance(body, list) else [body]
    if not events or len(events) > MAX_INGEST:
        raise ApiError(400, f"send between 1 and {MAX_INGEST} events", code="invalid_batch")
    for index, event in enumerate(events):
        try:
            validate_event(event)
        except EventSchemaError as err:
            analytics.rejected["ingest"] += 1
            where = f"[{index}] " if isinstance(body, list) else ""
            raise ApiError(400, f"{where}{err}", code="schema_violation") from err
    for event in events:
        analytics.emit_envelope(event, stage="ingest")
    return web.json_response(
        {"accepted": len(events), "event_ids": [e["event_id"] for e in events]}, status=202
    )


@routes.post("/api/v1/analytics/jobs/{name}/run")
@requires("operator")
async def run_job(request: web.Request) -> web.Response:
    analytics = _analytics(request)
    name = request.match_info["name"]
    if name not in analytics.scheduler.jobs:
        raise ApiError(
            404,
            f"No job '{name}' (jobs: {', '.join(analytics.scheduler.jobs)})",
            code="job_not_found",
        )
    job = await analytics.scheduler.run_job(name)
    return web.json_response(job.status())
