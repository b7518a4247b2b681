"""Builds the aiohttp application: middlewares, routes, and the node's lifecycle.

The server starts answering at once (``/health`` says 503 "loading" while the default model is
assembled and loaded in the background) so supervisors and HA see a live process, not a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import aiohttp_cors
from aiohttp import web

from inference_server import __version__
from inference_server.agents.service import AGENTS_KEY, AgentService, agents_lifecycle
from inference_server.analytics.events import NodeHealthEvent
from inference_server.analytics.service import (
    ANALYTICS_KEY,
    Analytics,
    AnalyticsCollector,
    load_average,
)
from inference_server.api import agents, control, health, link, openai, vision
from inference_server.api import analytics as analytics_api
from inference_server.api import power as power_api
from inference_server.api import routing as routing_api
from inference_server.api.memory import MEMORY_KEY, setup_memory
from inference_server.config import Settings
from inference_server.discovery import Advertiser
from inference_server.events import StateWatcher
from inference_server.link.monitor import LINK_KEY, LinkMonitor, link_lifecycle
from inference_server.metrics import METRICS_KEY, Metrics
from inference_server.middleware import request_middleware
from inference_server.models.registry import ModelRegistry
from inference_server.node import NODE_KEY, Node, resolve_node_id
from inference_server.routing.setup import attach_routing
from inference_server.security.auth import Authenticator, bootstrap_admin_token
from inference_server.security.middleware import AUTHENTICATOR_KEY, RATE_LIMITER_KEY
from inference_server.security.ratelimit import RateLimiter
from inference_server.stats import STATS_KEY
from inference_server.vision_cloud import attach_cloud_vision
from inference_server.vision_setup import build_vision_service

_LOGGER = logging.getLogger(__name__)


def create_app(settings: Settings, *, engine: ModelRegistry | None = None) -> web.Application:
    app = web.Application(
        middlewares=[request_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    node_id = resolve_node_id(settings)
    metrics = Metrics()
    metrics.info.info({"node_id": node_id, "version": __version__})
    registry = engine or ModelRegistry(settings)
    metrics.attach_engine(
        registry.slots,
        registry.queue_depth,
        registry.loaded_model_ids,
        registry.generated_tokens_total,
    )
    node = Node(settings=settings, node_id=node_id, engine=registry, metrics=metrics)
    app[NODE_KEY] = node
    app[METRICS_KEY] = metrics
    app[STATS_KEY] = node.stats
    attach_routing(app, node)
    bootstrap = bootstrap_admin_token(settings.security, settings.server.data_dir)
    app[AUTHENTICATOR_KEY] = Authenticator(
        settings.security, (bootstrap,) if bootstrap is not None else ()
    )
    app[RATE_LIMITER_KEY] = RateLimiter(settings.security.rate_limit_per_minute)
    for table in (
        openai.routes,
        control.routes,
        health.routes,
        analytics_api.routes,
        routing_api.routes,
        power_api.routes,
        agents.routes,
    ):
        app.router.add_routes(table)
    app[vision.VISION_KEY] = build_vision_service(settings.vision)
    attach_cloud_vision(app[vision.VISION_KEY], node)
    app.router.add_routes(vision.routes)
    app[LINK_KEY] = LinkMonitor(settings=settings.link, bus=node.events, emit=node.emit_event)
    app.router.add_routes(link.routes)
    if settings.link.enabled:
        app.cleanup_ctx.append(link_lifecycle)
    app.on_cleanup.append(_close_vision)
    setup_memory(app)
    # After vision and memory: the vision and memory agents use them.
    app[AGENTS_KEY] = AgentService(node, vision=app[vision.VISION_KEY], memory=app.get(MEMORY_KEY))
    if settings.analytics.enabled:
        _setup_analytics(app, node)
    _setup_cors(app, settings)
    app.cleanup_ctx.append(_engine_lifecycle)
    app.cleanup_ctx.append(agents_lifecycle)
    app.on_shutdown.append(_close_event_streams)
    if settings.discovery.enabled:
        app.cleanup_ctx.append(_discovery_lifecycle)
    return app


def _setup_analytics(app: web.Application, node: Node) -> None:
    """Events → spool → Kafka/store; started and flushed with the application."""

    def sample_health() -> NodeHealthEvent:
        state = node.state_snapshot()
        return NodeHealthEvent(
            ready=state["ready"],
            state=state["state"],
            slots_busy=state["slots_busy"],
            slots_total=state["slots_total"],
            queue_depth=state["queue_depth"],
            loaded_models=state["loaded_models"],
            uptime_seconds=round(node.uptime_seconds, 3),
            load_1m=load_average(),
            spool_backlog=analytics.spool.backlog,
        )

    analytics = Analytics(
        node.settings.analytics,
        node_id=node.node_id,
        data_dir=node.settings.server.data_dir,
        health_sampler=sample_health,
        default_model=node.settings.models.default,
    )
    app[ANALYTICS_KEY] = analytics
    node.analytics = analytics
    node.metrics.registry.register(AnalyticsCollector(analytics))
    app.cleanup_ctx.append(_analytics_lifecycle)


async def _analytics_lifecycle(app: web.Application) -> AsyncIterator[None]:
    analytics = app[ANALYTICS_KEY]
    await analytics.start()
    yield
    await analytics.stop()


def _setup_cors(app: web.Application, settings: Settings) -> None:
    """CORS stays off unless origins are listed: browsers must not reach a home AI by default."""
    if not settings.server.cors_origins:
        return
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        allow_headers=("Authorization", "Content-Type"),
        expose_headers=("Retry-After",),
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(settings.server.cors_origins, options))
    for route in list(app.router.routes()):
        cors.add(route)


def freeze_startup_heap(_: object = None) -> None:
    """Move everything alive once the default model is loaded out of the collector's reach.

    What exists by then (modules, settings, routes, schemas, the model's bindings) lives as long
    as the process, yet every full collection walked all of it: at 3000 cache hits/s those
    passes were the tail (p99 56-75 ms, p95 10-19 ms; after this 11-15 and 7.6-9.8 ms,
    bench/RESULTS.md).
    ``gc.freeze`` is CPython's tool for exactly this; the ``collect`` first frees what is
    already garbage so nothing dead is kept.
    """
    gc.collect()
    gc.freeze()


async def _engine_lifecycle(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE_KEY]
    watcher = StateWatcher(node.events, node.state_snapshot, node.stats_snapshot)
    tasks = [
        asyncio.create_task(node.engine.start(), name="prime-spark-load-default-model"),
        asyncio.create_task(watcher.run(), name="prime-spark-state-watcher"),
    ]
    tasks[0].add_done_callback(freeze_startup_heap)
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await node.engine.close()


async def _close_vision(app: web.Application) -> None:
    app[vision.VISION_KEY].close()


async def _close_event_streams(app: web.Application) -> None:
    app[NODE_KEY].events.shutdown()


async def _discovery_lifecycle(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE_KEY]
    advertiser = Advertiser(
        node_id=node.node_id,
        host=node.settings.server.host,
        port=node.settings.server.port,
        instance_name=node.settings.discovery.instance_name,
    )
    await advertiser.start()
    yield
    await advertiser.stop()
