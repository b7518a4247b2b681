"""Vision backends: the CPU detector on a real photograph, and the Hailo backend's error paths.

The CPU test uses scikit-image's ``astronaut`` (a NASA portrait of Eileen Collins). The Hailo
tests run the real backend code against (a) this machine, which has no HailoRT and no device,
and (b) a stand-in ``hailo_platform`` module (tests/server/fakes) for the hardware we lack.
"""

from __future__ import annotations

import asyncio
import importlib
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from inference_server.backends.cpu_vision import CpuVisionBackend
from inference_server.backends.hailo import HailoBackend
from inference_server.backends.vision import (
    Detection,
    Image,
    ImageDecodeError,
    VisionBackend,
    VisionService,
    VisionUnavailableError,
    decode_image,
    plan_steps,
)

FAKES = Path(__file__).parent / "fakes"
FACE_CENTRE = (223, 113)  # Eileen Collins' face in the 512x512 astronaut image


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)


def test_cpu_detector_finds_the_astronaut(astronaut: np.ndarray) -> None:
    found = CpuVisionBackend().detect(astronaut, min_score=0.5, max_detections=10)
    faces = [d for d in found if d.label == "face"]
    assert faces, found
    x_min, y_min, x_max, y_max = faces[0].box
    assert x_min <= FACE_CENTRE[0] <= x_max and y_min <= FACE_CENTRE[1] <= y_max
    assert 0.5 <= faces[0].score <= 1.0


def test_cpu_detector_scales_boxes_back_to_the_original(astronaut: np.ndarray) -> None:
    """A 2x image is detected on a smaller copy; boxes come back in the big image's pixels."""
    big = cv2.resize(astronaut, (1024, 1024))
    faces = [
        d
        for d in CpuVisionBackend().detect(big, min_score=0.5, max_detections=10)
        if d.label == "face"
    ]
    assert faces
    x_min, y_min, x_max, y_max = faces[0].box
    assert x_min <= 2 * FACE_CENTRE[0] <= x_max and y_min <= 2 * FACE_CENTRE[1] <= y_max


def test_cpu_detector_no_people_where_there_are_none(astronaut: np.ndarray) -> None:
    """HOG's weak hits on clutter (a rocket, a helmet) stay under the default score."""
    rocket = cv2.cvtColor(skdata.rocket(), cv2.COLOR_RGB2BGR)
    assert CpuVisionBackend().detect(rocket, min_score=0.5, max_detections=10) == []
    found = CpuVisionBackend().detect(astronaut, min_score=0.5, max_detections=10)
    assert [d.label for d in found] == ["face"]


@pytest.mark.parametrize("value", [0, 255])
def test_cpu_detector_finds_nothing_in_a_blank_image(value: int) -> None:
    blank = np.full((480, 640, 3), value, dtype=np.uint8)
    assert CpuVisionBackend().detect(blank, min_score=0.0, max_detections=10) == []


@pytest.mark.parametrize("shape", [(1, 1), (64, 64), (128, 64), (127, 300), (600, 63)])
def test_cpu_detector_survives_tiny_images(shape: tuple[int, int]) -> None:
    """OpenCV's HOG segfaults below its 64x128 window: such images must not reach it."""
    image = np.zeros((*shape, 3), dtype=np.uint8)
    assert CpuVisionBackend().detect(image, min_score=0.5, max_detections=5) == []


def test_decode_refuses_what_is_not_an_image() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"GIF89a but not really")
    ok, bomb = cv2.imencode(".png", np.zeros((8000, 8000), np.uint8))  # 64 MP in 70 kB
    assert ok
    with pytest.raises(ImageDecodeError, match="more than 40 megapixels"):
        decode_image(bomb.tobytes())
    with pytest.raises(ImageDecodeError, match="more than 40 megapixels"):
        decode_image(png_header(30_000, 30_000))  # 900 MP: Pillow's own bomb limit trips first


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size (signature and IHDR only): headers are all the check reads."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_hailo_without_a_model_or_device(tmp_path: Path) -> None:
    assert "vision.hailo_hef" in (HailoBackend(device=tmp_path / "hailo0", hef=None).probe() or "")
    hef = tmp_path / "yolov8s.hef"
    hef.write_bytes(b"x")
    reason = HailoBackend(device=tmp_path / "hailo0", hef=hef).probe()
    assert reason is not None and "no Hailo device at" in reason


def test_hailo_without_the_library(tmp_path: Path) -> None:
    """This machine: no hailo_platform installed. A clear reason, never an ImportError."""
    assert importlib.util.find_spec("hailo_platform") is None
    device, hef = tmp_path / "hailo0", tmp_path / "m.hef"
    device.touch()
    hef.touch()
    backend = HailoBackend(device=device, hef=hef)
    reason = backend.probe()
    assert reason is not None and "hailo_platform" in reason and "not installed" in reason
    with pytest.raises(VisionUnavailableError, match="not installed"):
        backend.detect(np.zeros((10, 10, 3), np.uint8), min_score=0.5, max_detections=5)


@pytest.fixture
def fake_hailort(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[Path, Path, Path]]:
    monkeypatch.syspath_prepend(str(FAKES))
    sys.modules.pop("hailo_platform", None)
    device, hef, driver = tmp_path / "hailo0", tmp_path / "yolov8s.hef", tmp_path / "version"
    device.touch()
    hef.touch()
    driver.write_text("4.21.0\n")
    yield device, hef, driver
    sys.modules.pop("hailo_platform", None)


def test_hailo_driver_mismatch(
    fake_hailort: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    device, hef, driver = fake_hailort
    monkeypatch.setenv("FAKE_HAILORT_VERSION", "4.20.0")
    reason = HailoBackend(device=device, hef=hef, driver_version_file=driver).probe()
    assert reason is not None
    assert "4.20.0" in reason and "4.21.0" in reason and "HAILO_INVALID_DRIVER_VERSION" in reason


def test_hailo_device_that_does_not_open(fake_hailort: tuple[Path, Path, Path]) -> None:
    """The library is there but HailoRT finds no PCIe device: unavailable, with HailoRT's words."""
    device, hef, driver = fake_hailort
    backend = HailoBackend(device=device, hef=hef, driver_version_file=driver)
    assert backend.probe() is None
    with pytest.raises(VisionUnavailableError, match="HAILO_OUT_OF_PHYSICAL_DEVICES"):
        backend.detect(np.zeros((10, 10, 3), np.uint8), min_score=0.5, max_detections=5)


def test_hailo_detections_are_decoded_into_the_common_schema(
    fake_hailort: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    device, hef, driver = fake_hailort
    monkeypatch.setenv("FAKE_HAILO_DEVICE", "present")
    backend = HailoBackend(device=device, hef=hef, driver_version_file=driver)
    found = backend.detect(np.zeros((400, 800, 3), np.uint8), min_score=0.5, max_detections=5)
    assert [(d.label, d.box) for d in found] == [("person", (200, 100, 400, 300))]
    backend.close()


def test_service_falls_back_to_the_cpu_and_says_why(
    fake_hailort: tuple[Path, Path, Path], astronaut: np.ndarray
) -> None:
    device, hef, driver = fake_hailort
    service = VisionService(
        backends=[
            HailoBackend(device=device, hef=hef, driver_version_file=driver),
            CpuVisionBackend(),
        ]
    )
    result = asyncio.run(service.detect(jpeg(astronaut)))
    assert result.backend == "cpu"
    assert (
        result.fallback_reason is not None
        and "HAILO_OUT_OF_PHYSICAL_DEVICES" in result.fallback_reason
    )
    assert any(d.label == "face" for d in result.detections)
    status = service.status()
    assert status["active"] == "cpu"
    assert status["backends"][0]["available"] is False
    with pytest.raises(VisionUnavailableError, match="no vision backend"):
        asyncio.run(service.detect(jpeg(astronaut), backend="hailo"))


def test_service_probes_an_unavailable_backend_again_later(
    fake_hailort: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No device at first; once it answers, the Hailo takes over after retry_after."""
    device, hef, driver = fake_hailort
    now = [0.0]
    backend = HailoBackend(device=device, hef=hef, driver_version_file=driver)
    service = VisionService(
        backends=[backend, CpuVisionBackend()], retry_after=60, clock=lambda: now[0]
    )
    image = jpeg(np.zeros((64, 64, 3), np.uint8))
    assert asyncio.run(service.detect(image)).backend == "cpu"
    monkeypatch.setenv("FAKE_HAILO_DEVICE", "present")
    now[0] = 30
    assert asyncio.run(service.detect(image)).backend == "cpu"  # not yet
    now[0] = 61
    result = asyncio.run(service.detect(image))
    assert result.backend == "hailo"
    assert result.fallback_reason is None
    assert [d.label for d in result.detections] == ["person"]
    backend.close()


def test_hailo_follows_the_power_mode(
    fake_hailort: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """performance → ULTRA_PERFORMANCE, every other mode → PERFORMANCE, applied at configure."""
    device, hef, driver = fake_hailort
    monkeypatch.setenv("FAKE_HAILO_DEVICE", "present")
    mode = ["balanced"]
    backend = HailoBackend(device=device, hef=hef, driver_version_file=driver)
    service = VisionService(backends=[backend, CpuVisionBackend()], power_mode=lambda: mode[0])
    image = jpeg(np.zeros((64, 64, 3), np.uint8))
    fake = importlib.import_module("hailo_platform")
    configured = fake.CONFIGURED_POWER_MODES
    configured.clear()
    assert asyncio.run(service.detect(image)).backend == "hailo"
    assert asyncio.run(service.detect(image)).backend == "hailo"
    assert [m.name for m in configured] == ["PERFORMANCE"]  # configured once, kept
    mode[0] = "performance"
    asyncio.run(service.detect(image))
    mode[0] = "critical"
    asyncio.run(service.detect(image))
    assert [m.name for m in configured] == ["PERFORMANCE", "ULTRA_PERFORMANCE", "PERFORMANCE"]
    backend.close()


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name
        self.model = name

    def probe(self) -> str | None:
        return None

    def detect(self, image: Image, *, min_score: float, max_detections: int) -> list[Detection]:
        return []

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("mode", "cloud", "allow_cpu", "order"),
    [
        ("performance", True, False, ["hailo", "cpu", "cloud"]),
        ("balanced", True, False, ["hailo", "cpu", "cloud"]),
        ("balanced", False, False, ["hailo", "cpu"]),
        ("power_save", True, False, ["hailo", "cloud", "cpu"]),
        ("power_save", False, False, ["hailo", "cpu"]),
        ("critical", True, False, ["hailo", "cloud"]),
        ("critical", True, True, ["hailo", "cloud"]),
        ("critical", False, False, ["hailo"]),
        ("critical", False, True, ["hailo", "cpu"]),
    ],
)
def test_power_mode_order(mode: str, cloud: bool, allow_cpu: bool, order: list[str]) -> None:
    local: list[VisionBackend] = [_Named("hailo"), _Named("cpu")]
    steps = plan_steps(mode, local, cloud=cloud, allow_cpu=allow_cpu)
    assert [s if isinstance(s, str) else s.name for s in steps] == order


def test_the_server_starts_without_the_image_stack() -> None:
    """OpenCV and Pillow load with the first image, not with the app (the idle-RSS budget)."""
    probe = (
        "import sys, inference_server.app, inference_server.vision_setup as v;"
        "from inference_server.config import VisionSettings;"
        "v.build_vision_service(VisionSettings());"
        "print(sorted(m for m in ('cv2', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
