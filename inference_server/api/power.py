"""``/api/v1/power``: the power mode and what it does, plus the board's power draw."""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from aiohttp import web

from inference_server.analytics.events import PowerEvent
from inference_server.api.errors import ApiError
from inference_server.api.validation import read_json, validate
from inference_server.config import POWER_MODES
from inference_server.node import NODE_KEY, Node
from inference_server.power.modes import PROFILES, PowerManager
from inference_server.security.middleware import requires

routes = web.RouteTableDef()

POWER_SCHEMA = vol.Schema(
    {vol.Required("mode"): vol.In(POWER_MODES, msg=f"expected one of {', '.join(POWER_MODES)}")}
)


def _power(node: Node) -> PowerManager:
    if node.power is None:  # pragma: no cover - create_app always attaches one
        raise ApiError(503, "Power modes are not available", type_="server_error")
    return node.power


async def describe_power(node: Node) -> dict[str, Any]:
    """Also the ``power`` block of ``/api/v1/status``."""
    power = _power(node)
    threads, slots = node.engine.limits()
    profile = power.profile
    reading = await node.power_reader.read() if node.power_reader is not None else None
    if reading is not None:
        node.power_watts = reading.watts
    return {
        "mode": power.mode,
        "modes": list(POWER_MODES),
        "threads": threads,
        "slots": slots,
        "max_tokens_cap": profile.max_tokens_cap,
        "edge_weight": profile.edge_weight,
        "prefer_cloud": profile.prefer_cloud,
        "refuse_heavy": profile.refuse_heavy,
        "power_watts": None if reading is None else reading.watts,
        "rails_watts": None if reading is None else reading.rails,
        "telemetry": None if reading is None else "pmic",
        "profiles": {
            mode: {
                "threads": power.limits(mode)[0],
                "slots": power.limits(mode)[1],
                "max_tokens_cap": p.max_tokens_cap,
                "edge_weight": p.edge_weight,
                "prefer_cloud": p.prefer_cloud,
                "refuse_heavy": p.refuse_heavy,
            }
            for mode, p in PROFILES.items()
        },
    }


@routes.get("/api/v1/power")
@requires("reader")
async def get_power(request: web.Request) -> web.Response:
    return web.json_response(await describe_power(request.app[NODE_KEY]))


@routes.put("/api/v1/power")
@requires("operator")
async def put_power(request: web.Request) -> web.Response:
    """Switch modes: threads and slots change for the next requests (running ones finish)."""
    node = request.app[NODE_KEY]
    body = validate(POWER_SCHEMA, await read_json(request))
    power = _power(node)
    previous = power.mode
    power.set_mode(body["mode"])
    if power.mode != previous:
        node.emit_event(
            PowerEvent(kind="mode_change", mode=power.mode, previous_mode=previous, source="api")
        )
    return web.json_response(await describe_power(node))
