"""``/api/v1/vision``: object detection on an image, on the Hailo when there is one.

The body is the image itself (JPEG, PNG, BMP or WebP bytes, any content type), so a camera
snapshot goes in without base64 or multipart. Query parameters tune one request:
``min_score`` (0-1), ``max_detections``, ``backend`` (``hailo`` or ``cpu`` to insist on one; no
cloud fallback then) and ``allow_cpu`` (``true`` lets critical power mode detect on the CPU when
no Hailo and no cloud peer can). ``X-Prime-Spark-Private: true`` keeps the image on this node.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from inference_server.api.errors import ApiError
from inference_server.backends.remote import FORWARDED_HEADER
from inference_server.backends.vision import (
    ImageDecodeError,
    VisionPowerRefused,
    VisionService,
    VisionUnavailableError,
)
from inference_server.node import NODE_KEY
from inference_server.routing.dispatch import is_private
from inference_server.security.middleware import requires

VISION_KEY: Final = web.AppKey("vision", VisionService)
BACKEND_NAMES = ("hailo", "cpu")

routes = web.RouteTableDef()


def _query_float(request: web.Request, name: str, low: float, high: float) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be a number", param=name) from None
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low:g} and {high:g}", param=name)
    return value


@routes.get("/api/v1/vision")
@requires("reader")
async def vision_status(request: web.Request) -> web.Response:
    """Which backends could run and why not: the answer to "why is detection on the CPU?"."""
    return web.json_response(request.app[VISION_KEY].status())


@routes.post("/api/v1/vision/detect")
@requires("operator")
async def detect(request: web.Request) -> web.Response:
    service = request.app[VISION_KEY]
    min_score = _query_float(request, "min_score", 0.0, 1.0)
    max_detections = _query_float(request, "max_detections", 1, 1000)
    backend = request.query.get("backend")  # "?backend=" names no backend: a 400, not "any"
    if backend is not None and backend not in BACKEND_NAMES:
        raise ApiError(400, f"'backend' must be one of {', '.join(BACKEND_NAMES)}", param="backend")
    allow_cpu = request.query.get("allow_cpu", "false").strip().lower()
    if allow_cpu not in ("true", "false", "1", "0"):
        raise ApiError(400, "'allow_cpu' must be true or false", param="allow_cpu")
    private = is_private(request, {}, request.app[NODE_KEY])
    data = await request.read()
    try:
        result = await service.detect(
            data,
            backend=backend,
            min_score=min_score,
            max_detections=None if max_detections is None else int(max_detections),
            private=private,
            forwarded=FORWARDED_HEADER in request.headers,
            allow_cpu=allow_cpu in ("true", "1"),
        )
    except ImageDecodeError as err:
        raise ApiError(400, str(err), code="invalid_image", param="image") from err
    except VisionPowerRefused as err:
        # 409 like the LLM routes' power refusal: the caller can allow the CPU or change mode.
        raise ApiError(409, str(err), code="power_critical", param="allow_cpu") from err
    except VisionUnavailableError as err:
        if backend is not None:
            # The caller chose a backend this node lacks: its choice to change (409), not an
            # outage of the node, which still detects with ``backend`` left out.
            raise ApiError(
                409, str(err), code="vision_backend_unavailable", param="backend"
            ) from err
        raise ApiError(
            503, str(err), type_="server_error", code="vision_unavailable", param="backend"
        ) from err
    return web.json_response(result.as_dict())
