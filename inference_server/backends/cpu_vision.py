"""CPU object detection with what OpenCV ships: no model download, runs on any node.

Two detectors from OpenCV's own package data: the HOG + linear SVM pedestrian detector
(Dalal-Triggs, label ``person``) and the Viola-Jones frontal face cascade (label ``face``).
They are far less capable than a YOLO model on the Hailo, but they answer "is somebody there"
for a camera snapshot in a fraction of a second on a Pi, which is what the fallback is for.
OpenCV 5 dropped the HOG detector from its main modules, hence the ``<5`` pin.

Raw detector confidences (SVM margins, cascade stage sums) are unbounded; a logistic maps them
to 0-1 so that ``min_score`` means the same thing as on the Hailo.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from inference_server.backends.vision import (
    Detection,
    Image,
    VisionUnavailableError,
    clamp_box,
)

MAX_SIDE = 640
"""Images are scaled down to this longest side first: HOG's cost grows with the pixel count."""
HOG_WINDOW = (64, 128)
"""The people detector's window (width, height). OpenCV 4.x crashes the process (SIGSEGV) on
images smaller than it, and nobody fits in them anyway: such images skip the HOG pass."""


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


class CpuVisionBackend:
    name = "cpu"
    model = "opencv-hog-people+haar-frontalface"

    def __init__(self) -> None:
        self._hog: Any = None
        self._faces: Any = None

    def probe(self) -> str | None:
        # Without importing OpenCV: the status asks at start-up, and the import is the largest
        # part of an idle node's memory (see backends/vision.py). _load checks the rest.
        if importlib.util.find_spec("cv2") is None:
            return "OpenCV is not installed (the opencv-python-headless package)"
        return None

    def _load(self) -> tuple[Any, Any]:
        import cv2  # noqa: PLC0415 - on first use, see probe()

        if self._hog is None:
            if not hasattr(cv2, "HOGDescriptor"):
                raise VisionUnavailableError(
                    f"OpenCV {cv2.__version__} has no HOG detector (needs OpenCV 4.x)"
                )
            hog = cv2.HOGDescriptor()
            hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())  # type: ignore[attr-defined]
            faces = cv2.CascadeClassifier(
                cv2.data.haarcascades  # type: ignore[attr-defined]
                + "haarcascade_frontalface_default.xml"
            )
            if faces.empty():
                raise VisionUnavailableError("OpenCV's frontal face cascade did not load")
            self._hog, self._faces = hog, faces
        return self._hog, self._faces

    def detect(self, image: Image, *, min_score: float, max_detections: int) -> list[Detection]:
        import cv2  # noqa: PLC0415 - loaded by _load already; see probe()

        hog, faces = self._load()
        height, width = image.shape[:2]
        scale = min(1.0, MAX_SIDE / max(height, width))
        small = (
            cv2.resize(
                image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
            )
            if scale < 1.0
            else image
        )
        found: list[Detection] = []
        small_h, small_w = small.shape[:2]
        if small_w >= HOG_WINDOW[0] and small_h >= HOG_WINDOW[1]:
            boxes, weights = hog.detectMultiScale(
                small, winStride=(8, 8), padding=(8, 8), scale=1.05
            )
        else:
            boxes, weights = (), ()
        for (x, y, w, h), weight in zip(boxes, weights, strict=True):
            # SVM margins under ~1 are mostly clutter (0.6-0.7 on the rocket and the
            # astronaut's helmet in scikit-image's samples): margin 1 maps to score 0.5.
            margin = 2.0 * (float(weight) - 1.0)
            found.append(self._detection("person", margin, (x, y, w, h), scale, width, height))
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        boxes, _levels, weights = faces.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24), outputRejectLevels=True
        )
        for (x, y, w, h), weight in zip(boxes, weights, strict=True):
            # Cascade stage sums sit around 0-10; /2 spreads them over the logistic's slope.
            found.append(
                self._detection("face", float(weight) / 2, (x, y, w, h), scale, width, height)
            )
        found = [d for d in found if d.score >= min_score]
        found.sort(key=lambda d: d.score, reverse=True)
        return found[:max_detections]

    @staticmethod
    def _detection(  # noqa: PLR0917 - a private helper, called twice right above
        label: str,
        margin: float,
        rect: tuple[int, int, int, int],
        scale: float,
        width: int,
        height: int,
    ) -> Detection:
        x, y, w, h = (float(v) / scale for v in rect)
        return Detection(
            label=label, score=_sigmoid(margin), box=clamp_box((x, y, x + w, y + h), width, height)
        )

    def close(self) -> None:
        self._hog = self._faces = None
