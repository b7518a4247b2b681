"""Object detection on a Hailo-8/8L through HailoRT's Python API (``hailo_platform``).

The path follows HailoRT's asynchronous InferModel API, as Frigate's Hailo detector does:
``VDevice`` → ``create_infer_model(HEF)`` → ``configure()`` → ``create_bindings`` →
``run_async`` → wait. The HEF is a detection network compiled with Hailo's on-chip NMS (the
model zoo's YOLO HEFs), whose FLOAT32 output is one array per class of
``[y_min, x_min, y_max, x_max, score]`` rows in 0-1 coordinates.

``hailo_platform`` is not on PyPI: it comes as a wheel matching the HailoRT release, and the
library must match the kernel driver exactly (HA OS 16 ships driver 4.21.0; any other library
fails with ``HAILO_INVALID_DRIVER_VERSION``). So everything is checked before the device is
touched, and every failure becomes a :class:`VisionUnavailableError` that says what to do; the
vision service then falls back to the CPU detector instead of crashing.

The node's power mode reaches the chip through ``InferModel.set_power_mode(HailoPowerMode.X)``
(HailoRT's ``InferModel::set_power_mode(hailo_power_mode_t)``, exposed to Python by
``InferModelWrapper``). HailoRT has two modes: ``PERFORMANCE`` (its default, lower clocks) and
``ULTRA_PERFORMANCE``. The mode is a configure-time parameter (it lands in the network group's
configure params), so a change closes the configured model and the next frame configures it
again. A HailoRT without ``HailoPowerMode`` or ``set_power_mode`` keeps its default mode.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from inference_server.backends.vision import (
    Detection,
    Image,
    VisionUnavailableError,
    clamp_box,
)

DRIVER_VERSION_FILE = Path("/sys/module/hailo_pci/version")
RUN_TIMEOUT_MS = 10_000

HAILO_POWER_MODES: dict[str, str] = {
    "performance": "ULTRA_PERFORMANCE",
    "balanced": "PERFORMANCE",
    "power_save": "PERFORMANCE",
    "critical": "PERFORMANCE",
}
"""Node power mode → ``HailoPowerMode`` member: only ``performance`` pays for the extra clocks."""

COCO_LABELS: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic_light",
    "fire_hydrant",
    "stop_sign",
    "parking_meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports_ball",
    "kite",
    "baseball_bat",
    "baseball_glove",
    "skateboard",
    "surfboard",
    "tennis_racket",
    "bottle",
    "wine_glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot_dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted_plant",
    "bed",
    "dining_table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell_phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy_bear",
    "hair_drier",
    "toothbrush",
)


def _library_version(module: ModuleType) -> str | None:
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    for dist in ("hailort", "hailo_platform"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _release(version: str) -> tuple[str, ...]:
    return tuple(version.strip().split(".")[:3])


class HailoBackend:
    name = "hailo"

    def __init__(
        self,
        *,
        device: Path,
        hef: Path | None,
        driver_version_file: Path = DRIVER_VERSION_FILE,
        labels: tuple[str, ...] = COCO_LABELS,
    ) -> None:
        self.device = device
        self.hef = hef
        self.driver_version_file = driver_version_file
        self.labels = labels
        self.model = hef.stem if hef is not None else "none"
        self._lock = threading.Lock()
        self._vdevice: Any = None
        self._infer_model: Any = None
        self._configured: Any = None
        self.hailo_power_mode = HAILO_POWER_MODES["balanced"]

    def set_power_mode(self, mode: str) -> None:
        """Follow the node's power mode; a change takes effect at the next configure."""
        wanted = HAILO_POWER_MODES.get(mode, HAILO_POWER_MODES["balanced"])
        if wanted == self.hailo_power_mode:
            return
        with self._lock:
            self.hailo_power_mode = wanted
            self.close()  # set_power_mode only applies when the model is configured

    def _import(self) -> ModuleType:
        try:
            return importlib.import_module("hailo_platform")
        except ImportError as err:
            raise VisionUnavailableError(
                "HailoRT's Python library (hailo_platform) is not installed; install the "
                "hailort wheel that matches the driver, or let the CPU detector answer"
                f" ({err})"
            ) from None

    def probe(self) -> str | None:
        try:
            self._check()
        except VisionUnavailableError as err:
            return str(err)
        return None

    def _check(self) -> ModuleType:
        """Everything that can be known without opening the device, cheapest first."""
        if self.hef is None:
            raise VisionUnavailableError("no HEF model configured (vision.hailo_hef)")
        if not self.device.exists():
            raise VisionUnavailableError(
                f"no Hailo device at {self.device} (is the M.2 module seated and the device "
                "mapped into the container?)"
            )
        if not self.hef.is_file():
            raise VisionUnavailableError(f"the HEF model {self.hef} does not exist")
        module = self._import()
        library = _library_version(module)
        try:
            driver = self.driver_version_file.read_text(encoding="utf-8").strip()
        except OSError:
            driver = None
        if library and driver and _release(library) != _release(driver):
            raise VisionUnavailableError(
                f"HailoRT library {library} does not match the hailo_pci driver {driver} "
                "(HAILO_INVALID_DRIVER_VERSION): install the hailort wheel of version "
                f"{driver}"
            )
        return module

    def _open(self) -> Any:
        if self._configured is not None:
            return self._configured
        module = self._check()
        error_type: type[BaseException] = getattr(module, "HailoRTException", RuntimeError)
        try:
            params = module.VDevice.create_params()
            params.scheduling_algorithm = module.HailoSchedulingAlgorithm.ROUND_ROBIN
            self._vdevice = module.VDevice(params)
            self._infer_model = self._vdevice.create_infer_model(str(self.hef))
            self._infer_model.set_batch_size(1)
            power_modes = getattr(module, "HailoPowerMode", None)
            if power_modes is not None and hasattr(self._infer_model, "set_power_mode"):
                self._infer_model.set_power_mode(getattr(power_modes, self.hailo_power_mode))
            self._infer_model.input().set_format_type(module.FormatType.UINT8)
            self._infer_model.output().set_format_type(module.FormatType.FLOAT32)
            self._configured = self._infer_model.configure().__enter__()
        except error_type as err:
            self.close()
            raise VisionUnavailableError(f"HailoRT could not open {self.device}: {err}") from None
        return self._configured

    def detect(self, image: Image, *, min_score: float, max_detections: int) -> list[Detection]:
        import cv2  # noqa: PLC0415 - on first use, see backends/vision.py
        import numpy as np  # noqa: PLC0415

        with self._lock:
            configured = self._open()
            height, width = image.shape[:2]
            in_h, in_w = self._infer_model.input().shape[:2]
            rgb = cv2.cvtColor(cv2.resize(image, (in_w, in_h)), cv2.COLOR_BGR2RGB)
            bindings = configured.create_bindings()
            bindings.input().set_buffer(np.ascontiguousarray(rgb, dtype=np.uint8))
            done = threading.Event()
            failure: list[BaseException] = []

            def callback(completion_info: Any) -> None:
                exception = getattr(completion_info, "exception", None)
                if exception is not None:
                    failure.append(exception)
                done.set()

            try:
                configured.wait_for_async_ready(timeout_ms=RUN_TIMEOUT_MS)
                job = configured.run_async([bindings], callback)
                job.wait(RUN_TIMEOUT_MS)
            except Exception as err:  # HailoRT raises its own exception types
                raise VisionUnavailableError(f"Hailo inference failed: {err}") from None
            done.wait(RUN_TIMEOUT_MS / 1000)
            if failure:
                raise VisionUnavailableError(f"Hailo inference failed: {failure[0]}")
            output = bindings.output().get_buffer()
        return self._decode(output, width, height, min_score, max_detections)

    def _decode(
        self, output: Any, width: int, height: int, min_score: float, max_detections: int
    ) -> list[Detection]:
        """NMS-by-class output → detections in the original image's pixels."""
        found: list[Detection] = []
        for class_id, rows in enumerate(output):
            label = self.labels[class_id] if class_id < len(self.labels) else f"class_{class_id}"
            for row in rows:
                y_min, x_min, y_max, x_max, score = (float(v) for v in row[:5])
                if score < min_score:
                    continue
                box = clamp_box(
                    (x_min * width, y_min * height, x_max * width, y_max * height), width, height
                )
                found.append(Detection(label=label, score=score, box=box))
        found.sort(key=lambda d: d.score, reverse=True)
        return found[:max_detections]

    def close(self) -> None:
        configured, self._configured = self._configured, None
        if configured is not None:
            with contextlib.suppress(Exception):  # releasing a device that already failed
                configured.__exit__(None, None, None)
        vdevice, self._vdevice = self._vdevice, None
        if vdevice is not None:
            with contextlib.suppress(Exception):
                vdevice.release()
        self._infer_model = None
