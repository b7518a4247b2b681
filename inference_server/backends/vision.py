"""The detection contract every vision backend honours, and the choice between them.

One schema whatever ran the model: objects with a label, a score in 0-1 and a pixel box
``(x_min, y_min, x_max, y_max)`` in the coordinates of the image as sent. A backend that cannot
run here (no HailoRT, no /dev/hailo0, a driver that does not match the library) says why through
:class:`VisionUnavailableError`; the service then falls back to the next one and reports the
reason, so "why is this on the CPU?" has an answer in every response.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

MAX_IMAGE_PIXELS = 40_000_000
"""Larger images are refused: a small PNG can decode to gigabytes (an 8K frame is 33 MP)."""

type Image = npt.NDArray[np.uint8]

_LOGGER = logging.getLogger(__name__)


class VisionError(Exception):
    """Base of the vision failures."""


class VisionUnavailableError(VisionError):
    """This backend cannot run on this node; ``str()`` says why and what to do."""


class ImageDecodeError(VisionError, ValueError):
    """The bytes are not an image OpenCV can read."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Detection:
    label: str
    score: float
    box: tuple[int, int, int, int]
    """x_min, y_min, x_max, y_max in pixels of the original image."""

    def as_dict(self) -> dict[str, Any]:
        x_min, y_min, x_max, y_max = self.box
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "box": {"x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max},
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class DetectionResult:
    backend: str
    model: str
    width: int
    height: int
    detections: tuple[Detection, ...]
    timings: dict[str, float]
    fallback_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "width": self.width,
            "height": self.height,
            "objects": [d.as_dict() for d in self.detections],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "fallback_reason": self.fallback_reason,
        }


class VisionBackend(Protocol):
    name: str
    model: str

    def probe(self) -> str | None:
        """None when the backend can run; otherwise the reason it cannot (cheap, no model load)."""

    def detect(self, image: Image, *, min_score: float, max_detections: int) -> list[Detection]:
        """Blocking detection on a BGR image; run it in a worker thread."""

    def close(self) -> None: ...


def decode_image(data: bytes) -> Image:
    """JPEG/PNG/BMP/WebP bytes → BGR array; anything else raises ImageDecodeError."""
    if not data:
        raise ImageDecodeError("the request body is empty; send the image bytes")
    _check_size(data)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise ImageDecodeError(f"the image could not be decoded ({err.msg})") from None
    if image is None:
        raise ImageDecodeError("the body is not an image OpenCV can decode (JPEG, PNG, BMP, WebP)")
    return np.asarray(image, dtype=np.uint8)


def _check_size(data: bytes) -> None:
    """Read only the header (Pillow opens lazily) and refuse images too large to decode.

    OpenCV's own limit (``OPENCV_IO_MAX_IMAGE_PIXELS``) is fixed when cv2 is first imported,
    which this module does not control; the header check does not depend on import order.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as header:
                width, height = header.size
    except PILImage.DecompressionBombError:
        raise ImageDecodeError(
            f"the image has more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        return  # not for Pillow to judge: OpenCV decides whether it is an image
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(
            f"the image has {width}x{height} pixels, more than "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels"
        )


def clamp_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[int, int, int, int]:
    x_min, y_min, x_max, y_max = box
    return (
        max(0, min(width, round(x_min))),
        max(0, min(height, round(y_min))),
        max(0, min(width, round(x_max))),
        max(0, min(height, round(y_max))),
    )


@dataclass(kw_only=True)
class VisionService:
    """Tries the backends in order (Hailo before CPU under ``auto``) and remembers who can run.

    ``probe()`` results are cached: a node without a Hailo does not re-check the device on
    every frame. A backend that fails at detection time is marked unavailable with the
    error as its reason, and the request is answered by the next backend. An unavailable
    backend is probed again after ``retry_after`` seconds (a device that was busy, a model
    file copied in later).
    """

    backends: list[VisionBackend]
    preferred: str = "auto"
    min_score: float = 0.5
    max_detections: int = 50
    retry_after: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _reasons: dict[str, str | None] = field(default_factory=dict)
    _checked: dict[str, float] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def availability(self) -> dict[str, str | None]:
        now = self.clock()
        for backend in self.backends:
            known = backend.name in self._reasons
            stale = now - self._checked.get(backend.name, now) >= self.retry_after
            if not known or (self._reasons[backend.name] is not None and stale):
                self._mark(backend.name, backend.probe())
        return dict(self._reasons)

    def _mark(self, name: str, reason: str | None) -> None:
        self._reasons[name] = reason
        self._checked[name] = self.clock()

    def status(self) -> dict[str, Any]:
        reasons = self.availability()
        order = self._order()
        active = next((b.name for b in order if reasons.get(b.name) is None), None)
        return {
            "preferred": self.preferred,
            "active": active,
            "backends": [
                {
                    "name": b.name,
                    "model": b.model,
                    "available": reasons.get(b.name) is None,
                    "reason": reasons.get(b.name),
                }
                for b in self.backends
            ],
        }

    def _order(self) -> list[VisionBackend]:
        if self.preferred == "auto":
            return list(self.backends)
        return [b for b in self.backends if b.name == self.preferred]

    async def detect(
        self,
        data: bytes,
        *,
        backend: str | None = None,
        min_score: float | None = None,
        max_detections: int | None = None,
    ) -> DetectionResult:
        started = time.perf_counter()
        image = await asyncio.to_thread(decode_image, data)
        decoded = time.perf_counter()
        reasons = self.availability()
        order = [b for b in self.backends if b.name == backend] if backend else self._order()
        skipped: list[str] = []
        for candidate in order:
            reason = reasons.get(candidate.name)
            if reason is not None:
                skipped.append(f"{candidate.name}: {reason}")
                continue
            try:
                async with self._lock:  # one model run at a time: the device is shared
                    t0 = time.perf_counter()
                    found = await asyncio.to_thread(
                        candidate.detect,
                        image,
                        min_score=self.min_score if min_score is None else min_score,
                        max_detections=max_detections or self.max_detections,
                    )
                    t1 = time.perf_counter()
            except VisionUnavailableError as err:
                _LOGGER.warning("Vision backend %s failed, falling back: %s", candidate.name, err)
                self._mark(candidate.name, str(err))
                skipped.append(f"{candidate.name}: {err}")
                continue
            height, width = image.shape[:2]
            return DetectionResult(
                backend=candidate.name,
                model=candidate.model,
                width=int(width),
                height=int(height),
                detections=tuple(found),
                timings={
                    "decode_ms": (decoded - started) * 1000,
                    "inference_ms": (t1 - t0) * 1000,
                    "total_ms": (time.perf_counter() - started) * 1000,
                },
                fallback_reason="; ".join(skipped) or None,
            )
        raise VisionUnavailableError(
            "no vision backend can run here: " + ("; ".join(skipped) or "none configured")
        )

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
