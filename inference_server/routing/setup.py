"""Wires routing and power into the application: objects on the node, background tasks.

Kept out of ``app.py`` so the application factory only gains one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from inference_server.analytics.events import PowerEvent
from inference_server.backends.base import ModelNotFoundError
from inference_server.node import NODE_KEY, Node
from inference_server.power.modes import PowerManager
from inference_server.power.telemetry import PmicReader
from inference_server.routing.dispatch import add_route_headers
from inference_server.routing.metrics import RoutingMetrics
from inference_server.routing.router import EdgeView, Router

_LOGGER = logging.getLogger(__name__)

TELEMETRY_INTERVAL = 10.0


def attach_routing(app: web.Application, node: Node) -> None:
    engine = node.engine
    settings = node.settings

    def apply_limits(threads: int, slots: int) -> None:
        engine.set_limits(threads=threads, slots=slots)

    power = PowerManager(settings, apply_limits)
    power.apply()

    async def has_model(model: str | None) -> bool:
        if not model:
            return True
        try:
            await engine.resolve(model)
        except ModelNotFoundError:
            return False
        return True

    edge = EdgeView(
        has_model=has_model,
        ready=lambda: engine.state.ready,
        capacity=lambda: engine.limits()[1] + settings.models.queue_size,
        slots=lambda: engine.limits()[1],
        default_model=engine.default_model,
    )
    router = Router(settings, edge, power, node_id=node.node_id)
    node.power = power
    node.router = router
    node.routing_metrics = RoutingMetrics(node.metrics.registry, router)
    app.on_response_prepare.append(add_route_headers)
    app.cleanup_ctx.append(_routing_lifecycle)


async def _routing_lifecycle(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE_KEY]
    router = node.router
    power = node.power
    assert router is not None  # nosec B101: set up with routing
    assert power is not None  # nosec B101: set up with routing
    await router.start()
    reader = PmicReader(node.settings.power.pmic_command)
    tasks = [
        asyncio.create_task(router.run(), name="prime-spark-peer-health"),
        asyncio.create_task(_telemetry(node, reader), name="prime-spark-power-telemetry"),
    ]
    node.power_reader = reader
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await router.close()


async def _telemetry(node: Node, reader: PmicReader) -> None:
    while True:
        try:
            reading = await reader.read()
            node.power_watts = None if reading is None else reading.watts
            if reading is not None:  # no telemetry, no reading event (never a made-up 0 W)
                node.emit_event(
                    PowerEvent(
                        kind="reading",
                        mode=node.power.mode if node.power is not None else None,
                        watts=max(0.0, reading.watts),
                        source=reader.source[:128],
                    )
                )
        except Exception:  # never let telemetry take the node down
            _LOGGER.exception("Reading power telemetry failed")
        await asyncio.sleep(TELEMETRY_INTERVAL)
