"""``/api/v1/vision/detect``, ``/api/v1/vision`` and ``/api/v1/link`` on a real server process."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from tests.server.api.test_http_contract import assert_matches_contract
from tests.server.server_process import TOKENS, ServerProcess


def _jpeg(image: Any) -> bytes:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


ASTRONAUT = _jpeg(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
DETECT = "/api/v1/vision/detect"


def test_detect_finds_the_astronaut_on_the_cpu(server: ServerProcess) -> None:
    status, _, body = server.request(
        "POST",
        DETECT,
        raw=ASTRONAUT,
        token=TOKENS["operator"],
        headers={"Content-Type": "image/jpeg"},
    )
    assert status == 200, body
    assert_matches_contract("POST", DETECT, status, body)
    assert body["backend"] == "cpu"
    assert "vision.hailo_hef" in body["fallback_reason"]  # why not the Hailo
    assert (body["width"], body["height"]) == (512, 512)
    face = next(o for o in body["objects"] if o["label"] == "face")
    assert face["box"]["x_min"] <= 223 <= face["box"]["x_max"]
    assert set(body["timings"]) == {"decode_ms", "inference_ms", "total_ms"}


@pytest.mark.parametrize("shape", [(240, 320), (1, 1), (64, 128)])
def test_detect_blank_image_finds_nothing(server: ServerProcess, shape: tuple[int, int]) -> None:
    """Tiny images too: OpenCV's HOG would crash the server on them if they reached it."""
    blank = _jpeg(np.zeros((*shape, 3), np.uint8))
    status, _, body = server.request(
        "POST", DETECT + "?min_score=0.1", raw=blank, token=TOKENS["operator"]
    )
    assert status == 200
    assert body["objects"] == []


@pytest.mark.parametrize(
    ("query", "raw", "status", "param"),
    [
        ("", b"", 400, "image"),
        ("", b"definitely not an image", 400, "image"),
        ("?min_score=2", ASTRONAUT, 400, "min_score"),
        ("?min_score=high", ASTRONAUT, 400, "min_score"),
        ("?max_detections=0", ASTRONAUT, 400, "max_detections"),
        ("?backend=tpu", ASTRONAUT, 400, "backend"),
        ("?backend=", ASTRONAUT, 400, "backend"),  # found by bench/fuzz.py: was "any backend"
        ("?backend=hailo", ASTRONAUT, 409, "backend"),
    ],
)
def test_detect_refuses_bad_input(
    server: ServerProcess, query: str, raw: bytes, status: int, param: str
) -> None:
    got, _, body = server.request("POST", DETECT + query, raw=raw, token=TOKENS["operator"])
    assert got == status, body
    assert body["error"]["param"] == param
    assert_matches_contract("POST", DETECT, got, body)


def test_detect_needs_operator(server: ServerProcess) -> None:
    status, _, body = server.request("POST", DETECT, raw=ASTRONAUT, token=TOKENS["reader"])
    assert status == 403
    assert_matches_contract("POST", DETECT, status, body)


def test_vision_status(server: ServerProcess) -> None:
    status, _, body = server.request("GET", "/api/v1/vision", token=TOKENS["reader"])
    assert status == 200
    assert_matches_contract("GET", "/api/v1/vision", status, body)
    assert body["active"] == "cpu"
    hailo = next(b for b in body["backends"] if b["name"] == "hailo")
    assert hailo["available"] is False and hailo["reason"]


def test_link_disabled_by_default(server: ServerProcess) -> None:
    status, _, body = server.request("GET", "/api/v1/link", token=TOKENS["reader"])
    assert status == 200
    assert_matches_contract("GET", "/api/v1/link", status, body)
    assert body["state"] == "disabled"
    status, _, body = server.request("GET", "/api/v1/status", token=TOKENS["reader"])
    assert body["link"]["state"] == "disabled"
    assert_matches_contract("GET", "/api/v1/status", status, body)
