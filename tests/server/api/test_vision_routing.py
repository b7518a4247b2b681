"""Vision between real nodes on loopback: the power mode's order, the cloud fallback, privacy.

Three real server processes: a cloud node that detects on its CPU, an edge whose only vision
backend is a Hailo it does not have (``vision.backend: hailo``, no HEF), and an edge in
``auto`` whose CPU detector works. What reached the cloud is read from the cloud's own
``/metrics``, never from the edge's word for it. The ``fast`` edge also has a second local model
that sorts first at equal size, to show critical mode serving only the smallest one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
from skimage import data as skdata

from tests.server.api.conftest import MakeServer
from tests.server.api.test_http_contract import assert_matches_contract
from tests.server.server_process import TOKENS, ServerProcess, first_peer, requests_served, until

DETECT = "/api/v1/vision/detect"
PRIVATE = {"X-Prime-Spark-Private": "true"}
SMALLEST = "0-tiny"
CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}


def _jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return bytes(buf.tobytes())


ASTRONAUT = _jpeg()


def _peer_settings(cloud: ServerProcess) -> dict[str, Any]:
    return {
        "mode": "edge_first",
        "peers": [
            {
                "name": "cloud",
                "url": cloud.url,
                "token": TOKENS["operator"],
                "connect_timeout": 1,
            }
        ],
        "health_interval": 0.5,
    }


@pytest.fixture(scope="module")
def cloud(make_server: MakeServer) -> Iterator[ServerProcess]:
    proc = make_server({"models": {"slots": 1}}, name="vcloud").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def blind(make_server: MakeServer, cloud: ServerProcess) -> Iterator[ServerProcess]:
    """An edge whose only vision backend (a Hailo) cannot run here."""
    proc = make_server(
        {"vision": {"backend": "hailo"}, "routing": _peer_settings(cloud)}, name="vblind"
    ).start()
    until(lambda: first_peer(proc)["reachable"] is True, "the first health check")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def sighted(
    make_server: MakeServer, cloud: ServerProcess, seed_data_dir: Callable[[Path], Path]
) -> Iterator[ServerProcess]:
    """An edge in ``auto`` (no HEF, so its CPU detects), with a second local model."""
    proc = make_server({"routing": _peer_settings(cloud)}, name="vsighted")
    extra = proc.data_dir / "extra-models"
    extra.mkdir()
    os.link(seed_data_dir(proc.data_dir), extra / f"{SMALLEST}.gguf")
    _rewrite_models(proc, [str(extra)])
    proc.start()
    until(lambda: first_peer(proc)["reachable"] is True, "the first health check")
    yield proc
    _set_power(proc, "balanced")
    proc.stop()


@pytest.fixture(autouse=True)
def _balanced(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("blind", "sighted"):
        if name in request.fixturenames:
            _set_power(request.getfixturevalue(name), "balanced")


def _rewrite_models(proc: ServerProcess, paths: list[str]) -> None:
    import yaml

    data = yaml.safe_load(proc.config_path.read_text())
    data.setdefault("models", {})["paths"] = paths
    proc.config_path.write_text(yaml.safe_dump(data))


def _set_power(edge: ServerProcess, mode: str) -> None:
    status, _, body = edge.request("PUT", "/api/v1/power", {"mode": mode}, token=TOKENS["operator"])
    assert status == 200, body


def _detect(
    proc: ServerProcess, query: str = "", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    status, _, body = proc.request(
        "POST",
        DETECT + query,
        raw=ASTRONAUT,
        token=TOKENS["operator"],
        headers={"Content-Type": "image/jpeg", **(headers or {})},
    )
    return status, body


# ---------------------------------------------------------------------------------- vision


def test_an_edge_without_a_backend_detects_through_the_cloud(
    blind: ServerProcess, cloud: ServerProcess
) -> None:
    before = requests_served(cloud, DETECT, status="200")
    status, body = _detect(blind)
    assert status == 200, body
    assert_matches_contract("POST", DETECT, status, body)
    assert body["backend"] == "cloud:cloud"
    assert "hailo:" in body["fallback_reason"]  # why not locally
    assert any(o["label"] == "face" for o in body["objects"])  # the cloud's CPU detector
    assert (body["width"], body["height"]) == (512, 512)
    assert requests_served(cloud, DETECT, status="200") == before + 1


def test_a_private_image_never_leaves_the_node(blind: ServerProcess, cloud: ServerProcess) -> None:
    before = requests_served(cloud, DETECT, status="200")
    status, body = _detect(blind, headers=PRIVATE)
    assert status == 503, body
    assert body["error"]["code"] == "vision_unavailable"
    assert "private" in body["error"]["message"]
    assert requests_served(cloud, DETECT, status="200") == before


def test_power_mode_changes_the_order(sighted: ServerProcess, cloud: ServerProcess) -> None:
    """balanced: CPU first; power_save and critical: the cloud before the CPU."""
    before = requests_served(cloud, DETECT, status="200")
    status, body = _detect(sighted)
    assert status == 200 and body["backend"] == "cpu", body
    assert requests_served(cloud, DETECT, status="200") == before
    for mode in ("power_save", "critical"):
        _set_power(sighted, mode)
        status, body = _detect(sighted)
        assert status == 200 and body["backend"] == "cloud:cloud", (mode, body)
    assert requests_served(cloud, DETECT, status="200") == before + 2


def test_critical_refuses_cpu_detection_unless_asked(sighted: ServerProcess) -> None:
    """Private in critical: the cloud is out, the CPU only with allow_cpu=true."""
    _set_power(sighted, "critical")
    status, body = _detect(sighted, headers=PRIVATE)
    assert status == 409, body
    assert_matches_contract("POST", DETECT, status, body)
    assert body["error"]["code"] == "power_critical"
    assert "allow_cpu=true" in body["error"]["message"]
    status, body = _detect(sighted, "?allow_cpu=true", headers=PRIVATE)
    assert status == 200 and body["backend"] == "cpu", body
    _set_power(sighted, "power_save")  # power_save still detects on the CPU when it must
    status, body = _detect(sighted, headers=PRIVATE)
    assert status == 200 and body["backend"] == "cpu", body


def test_allow_cpu_must_be_a_boolean(sighted: ServerProcess) -> None:
    status, body = _detect(sighted, "?allow_cpu=maybe")
    assert status == 400 and body["error"]["param"] == "allow_cpu", body


# ---------------------------------------------------------------------------------- models


def test_critical_serves_only_the_smallest_local_model(sighted: ServerProcess) -> None:
    """A private chat (the edge must answer) for another model is refused, naming the smallest."""
    _set_power(sighted, "critical")
    status, _, body = sighted.request(
        "POST", "/v1/chat/completions", CHAT, token=TOKENS["operator"], headers=PRIVATE
    )
    assert status == 409, body
    assert body["error"]["code"] == "power_critical"
    assert f"'{SMALLEST}'" in body["error"]["message"]
    _set_power(sighted, "balanced")
    status, _, body = sighted.request(
        "POST", "/v1/chat/completions", CHAT, token=TOKENS["operator"], headers=PRIVATE
    )
    assert status == 200, body
