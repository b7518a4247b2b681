"""Typed models of the node's vision and WireGuard link answers (``/api/v1/vision/detect``,
``/api/v1/link``), parsed as strictly as the other models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models import _Fields


@dataclass(frozen=True, kw_only=True, slots=True)
class DetectedObject:
    label: str
    score: float
    x_min: int
    y_min: int
    x_max: int
    y_max: int

    @classmethod
    def from_dict(cls, data: object) -> DetectedObject:
        f = _Fields(data, "object")
        box = f.obj("box")
        return cls(
            label=f.string("label"),
            score=f.number("score"),
            x_min=box.integer("x_min"),
            y_min=box.integer("y_min"),
            x_max=box.integer("x_max"),
            y_max=box.integer("y_max"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "box": {
                "x_min": self.x_min,
                "y_min": self.y_min,
                "x_max": self.x_max,
                "y_max": self.y_max,
            },
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Detections:
    """``POST /api/v1/vision/detect``: what was found, by which backend, how fast."""

    backend: str
    model: str
    width: int
    height: int
    objects: tuple[DetectedObject, ...]
    inference_ms: float
    total_ms: float
    fallback_reason: str | None

    @classmethod
    def from_dict(cls, data: object) -> Detections:
        f = _Fields(data, "detections")
        timings = f.obj("timings")
        return cls(
            backend=f.string("backend"),
            model=f.string("model"),
            width=f.integer("width"),
            height=f.integer("height"),
            objects=tuple(DetectedObject.from_dict(o) for o in f.array("objects")),
            inference_ms=timings.number("inference_ms"),
            total_ms=timings.number("total_ms"),
            fallback_reason=f.opt_string("fallback_reason"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkPeer:
    public_key: str
    endpoint: str | None
    connected: bool
    handshake_age_seconds: float | None
    rx_bytes: int
    tx_bytes: int

    @classmethod
    def from_dict(cls, data: object) -> LinkPeer:
        f = _Fields(data, "link peer")
        return cls(
            public_key=f.string("public_key"),
            endpoint=f.opt_string("endpoint"),
            connected=f.boolean("connected"),
            handshake_age_seconds=f.opt_number("handshake_age_seconds"),
            rx_bytes=f.integer("rx_bytes"),
            tx_bytes=f.integer("tx_bytes"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkStatus:
    """``GET /api/v1/link``: the WireGuard link to the cloud peers."""

    enabled: bool
    interface: str
    state: str
    reason: str | None
    connected: bool
    handshake_age_seconds: float | None
    rx_bytes: int
    tx_bytes: int
    stale_after: float | None
    peers: tuple[LinkPeer, ...]

    @classmethod
    def from_dict(cls, data: object) -> LinkStatus:
        f = _Fields(data, "link")
        enabled = f.boolean("enabled")
        return cls(
            enabled=enabled,
            interface=f.string("interface"),
            state=f.string("state"),
            reason=f.opt_string("reason"),
            connected=enabled and f.boolean("connected"),
            handshake_age_seconds=f.opt_number("handshake_age_seconds"),
            rx_bytes=(f.opt_integer("rx_bytes") or 0),
            tx_bytes=(f.opt_integer("tx_bytes") or 0),
            stale_after=f.opt_number("stale_after"),
            peers=tuple(LinkPeer.from_dict(p) for p in f.array("peers", optional=True)),
        )

    @property
    def endpoint(self) -> str | None:
        return next((p.endpoint for p in self.peers if p.endpoint), None)
