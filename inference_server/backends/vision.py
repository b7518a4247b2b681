"""The detection contract every vision backend honours, and the choice between them.

One schema whatever ran the model: objects with a label, a score in 0-1 and a pixel box
``(x_min, y_min, x_max, y_max)`` in the coordinates of the image as sent. A backend that cannot
run here (no HailoRT, no /dev/hailo0, a driver that does not match the library) says why through
:class:`VisionUnavailableError`; the service then falls back to the next one and reports the
reason, so "why is this on the CPU?" has an answer in every response.

The node's power mode changes the order (see :func:`plan_steps`), and a healthy routing peer is
the last resort - or an earlier one when the battery is low: the image goes to the peer's own
``POST /api/v1/vision/detect`` and the answer says ``backend: "cloud:<peer>"``. A private
request, and one a peer forwarded to us, never leaves this node.

| power mode             | order                                                   |
|------------------------|---------------------------------------------------------|
| performance, balanced  | Hailo → CPU → cloud                                     |
| power_save             | Hailo → cloud → CPU                                     |
| critical               | Hailo → cloud; CPU only with ``allow_cpu`` and no cloud |
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    # OpenCV, NumPy and Pillow are imported by the functions that decode and detect, on the
    # first image: loaded at start-up they cost an idle node ~20 MB of its 120 MB edge budget
    # (bench/RESULTS.md, load section), and most nodes see no image for hours, or ever.
    import numpy as np
    import numpy.typing as npt

MAX_IMAGE_PIXELS = 40_000_000
"""Larger images are refused: a small PNG can decode to gigabytes (an 8K frame is 33 MP)."""

type Image = npt.NDArray[np.uint8]

_LOGGER = logging.getLogger(__name__)


class VisionError(Exception):
    """Base of the vision failures."""


class VisionUnavailableError(VisionError):
    """This backend cannot run on this node; ``str()`` says why and what to do."""


class VisionPowerRefused(VisionError):
    """Critical power mode refuses CPU detection here; ``str()`` says what would be accepted."""


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


class CloudDetector(Protocol):
    """Detection on a routing peer (see :mod:`inference_server.vision_cloud`)."""

    def available(self) -> bool:
        """Whether a peer could be asked now (one with its circuit breaker not open)."""

    async def detect(self, data: bytes, params: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """(peer name, the peer's response body); VisionUnavailableError when none answered."""


CLOUD: Literal["cloud"] = "cloud"
type Step = VisionBackend | Literal["cloud"]


def plan_steps(
    mode: str, local: list[VisionBackend], *, cloud: bool, allow_cpu: bool
) -> list[Step]:
    """The order of attempts for one request under a power mode (the table above).

    ``cloud`` is whether a peer may be asked at all (not private, not forwarded, one is up).
    """
    accel = [b for b in local if b.name != "cpu"]
    cpu = [b for b in local if b.name == "cpu"]
    remote: list[Step] = [CLOUD] if cloud else []
    if mode == "critical":
        return [*accel, *remote, *(cpu if allow_cpu and not cloud else [])]
    if mode == "power_save":
        return [*accel, *remote, *cpu]
    return [*local, *remote]


def decode_image(data: bytes) -> Image:
    """JPEG/PNG/BMP/WebP bytes → BGR array; anything else raises ImageDecodeError."""
    if not data:
        raise ImageDecodeError("the request body is empty; send the image bytes")
    _check_size(data)
    import cv2  # noqa: PLC0415 - on first use, see the imports above
    import numpy as np  # noqa: PLC0415

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
    from PIL import Image as PILImage  # noqa: PLC0415 - on first use, see the imports above
    from PIL import UnidentifiedImageError  # noqa: PLC0415

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
    power_mode: Callable[[], str] = lambda: "balanced"
    """The node's power mode, read at every request (the power manager owns it)."""
    cloud: CloudDetector | None = None
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
        private: bool = False,
        forwarded: bool = False,
        allow_cpu: bool = False,
    ) -> DetectionResult:
        started = time.perf_counter()
        image = await asyncio.to_thread(decode_image, data)
        decoded = time.perf_counter()
        reasons = self.availability()
        mode = self.power_mode()
        local = [b for b in self.backends if b.name == backend] if backend else self._order()
        cloud_ok = (
            self.cloud is not None
            and backend is None
            and not private
            and not forwarded
            and self.cloud.available()
        )
        steps = plan_steps(mode, local, cloud=cloud_ok, allow_cpu=allow_cpu)
        skipped: list[str] = []
        height, width = image.shape[:2]
        score = self.min_score if min_score is None else min_score
        limit = max_detections or self.max_detections
        for step in steps:
            if step == CLOUD:
                assert self.cloud is not None  # nosec B101: CLOUD is a step only with a cloud
                params = {"min_score": str(score), "max_detections": str(limit)}
                try:
                    t0 = time.perf_counter()
                    peer, body = await self.cloud.detect(data, params)
                    t1 = time.perf_counter()
                    return _from_cloud(
                        peer,
                        body,
                        timings={
                            "decode_ms": (decoded - started) * 1000,
                            "inference_ms": (t1 - t0) * 1000,
                            "total_ms": (time.perf_counter() - started) * 1000,
                        },
                        fallback_reason="; ".join(skipped) or None,
                    )
                except VisionUnavailableError as err:
                    skipped.append(f"cloud: {err}")
                    continue
            assert not isinstance(step, str)  # nosec B101: type narrowing
            candidate = step
            reason = reasons.get(candidate.name)
            if reason is not None:
                skipped.append(f"{candidate.name}: {reason}")
                continue
            try:
                async with self._lock:  # one model run at a time: the device is shared
                    set_mode = getattr(candidate, "set_power_mode", None)
                    if set_mode is not None:
                        set_mode(mode)
                    t0 = time.perf_counter()
                    found = await asyncio.to_thread(
                        candidate.detect, image, min_score=score, max_detections=limit
                    )
                    t1 = time.perf_counter()
            except VisionUnavailableError as err:
                _LOGGER.warning("Vision backend %s failed, falling back: %s", candidate.name, err)
                self._mark(candidate.name, str(err))
                skipped.append(f"{candidate.name}: {err}")
                continue
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
        if private and self.cloud is not None and backend is None:
            skipped.append("cloud: not asked, the request is private and never leaves this node")
        elif forwarded:
            skipped.append("cloud: not asked, a peer forwarded this request")
        cpu_planned = any(not isinstance(s, str) and s.name == "cpu" for s in steps)
        cpu_held_back = any(b.name == "cpu" for b in local) and not cpu_planned
        if mode == "critical" and cpu_held_back and reasons.get("cpu") is None:
            raise VisionPowerRefused(
                "the node is in critical power mode and does not detect on its CPU: "
                + ("; ".join(skipped) or "no Hailo and no cloud peer")
                + ". Send allow_cpu=true to accept CPU detection when no cloud peer is up, "
                "or change the power mode (PUT /api/v1/power)"
            )
        raise VisionUnavailableError(
            "no vision backend can run here: " + ("; ".join(skipped) or "none configured")
        )

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


def _from_cloud(
    peer: str, body: dict[str, Any], *, timings: dict[str, float], fallback_reason: str | None
) -> DetectionResult:
    """The peer's answer in the common schema; a malformed one is the peer's failure."""
    try:
        detections = tuple(
            Detection(
                label=str(o["label"]),
                score=float(o["score"]),
                box=(
                    int(o["box"]["x_min"]),
                    int(o["box"]["y_min"]),
                    int(o["box"]["x_max"]),
                    int(o["box"]["y_max"]),
                ),
            )
            for o in body["objects"]
        )
        return DetectionResult(
            backend=f"cloud:{peer}",
            model=str(body["model"]),
            width=int(body["width"]),
            height=int(body["height"]),
            detections=detections,
            timings=timings,
            fallback_reason=fallback_reason,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise VisionUnavailableError(
            f"the cloud peer '{peer}' answered with an invalid detection ({err!r})"
        ) from None
