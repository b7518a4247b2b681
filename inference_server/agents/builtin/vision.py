"""``vision``: object detection through the node's vision service (Hailo first, CPU fallback).

Payload: ``{"image": "<base64 of JPEG/PNG/BMP/WebP bytes>"}``; optional ``min_score`` (0-1),
``max_detections`` and ``backend`` (``hailo`` or ``cpu``), as the query parameters of
``POST /api/v1/vision/detect``. The result is that route's answer, field for field.

The image travels *in* the task, never as a file path: a task may run on any node holding a
vision agent, where a path names another file or none, and reading paths a caller names would
let an operator read the node's files. A camera snapshot of a few hundred kB fits in the task
(``server.max_body_bytes`` bounds the submit).

The agent is registered where at least one backend can run. The CPU detector needs only OpenCV
(a dependency of the server), so in practice every node has a vision agent; the Hailo node
serves it faster, and ``agents.enabled`` leaves it off on nodes that should not take the work.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, ClassVar

import voluptuous as vol

from inference_server.agents.base import Agent, AgentContext, TaskRejectedError
from inference_server.api.validation import integer_range, number_range
from inference_server.backends.vision import (
    ImageDecodeError,
    VisionService,
    VisionUnavailableError,
)


def decode_base64(value: Any) -> bytes:
    """The image bytes; a ``data:`` URL prefix is accepted and dropped."""
    if not isinstance(value, str) or not value:
        raise vol.Invalid("expected the image as a non-empty base64 string")
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise vol.Invalid("not valid base64") from None
    if not data:
        raise vol.Invalid("the image is empty")
    return data


def _checked_image(value: Any) -> Any:
    decode_base64(value)
    return value  # kept as text: the payload is stored as JSON


class VisionAgent(Agent):
    capability: ClassVar[str] = "vision"
    default_capacity: ClassVar[int] = 1
    """The service runs one model at a time (the device is shared); more would only queue."""
    payload_schema: ClassVar[vol.Schema] = vol.Schema(
        {
            vol.Required("image"): _checked_image,
            vol.Optional("min_score"): number_range(0, 1),
            vol.Optional("max_detections"): integer_range(1, 1000),
            vol.Optional("backend"): vol.In(("hailo", "cpu")),
        }
    )

    @classmethod
    def unavailable(cls, context: AgentContext) -> str | None:
        if context.vision is None:
            return "this node has no vision service"
        reasons = context.vision.availability()
        if any(reason is None for reason in reasons.values()):
            return None
        return "no vision backend can run here: " + (
            "; ".join(f"{name}: {reason}" for name, reason in reasons.items()) or "none configured"
        )

    def __init__(self, context: AgentContext) -> None:
        super().__init__(context)
        assert context.vision is not None  # nosec B101: type narrowing, unavailable() guards
        self.vision: VisionService = context.vision

    async def run(self, payload: dict[str, Any]) -> Any:
        data = decode_base64(payload["image"])
        backend = payload.get("backend")
        try:
            result = await self.vision.detect(
                data,
                backend=backend,
                min_score=payload.get("min_score"),
                max_detections=payload.get("max_detections"),
            )
        except ImageDecodeError as err:
            raise TaskRejectedError(f"invalid image: {err}") from err
        except VisionUnavailableError as err:
            if backend is not None:  # the caller insisted on a backend this node lacks
                raise TaskRejectedError(str(err)) from err
            raise  # every backend failed just now: an outage, worth a retry
        return result.as_dict()


AGENT = VisionAgent
