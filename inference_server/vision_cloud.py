"""Object detection on a routing peer: the vision service's cloud fallback.

No second HTTP stack and no second notion of peer health: the routing peers
(``routing.peers``), their shared aiohttp session (:class:`RemoteBackend`) and their circuit
breakers are the router's. A peer is asked in priority order when its breaker lets a request
through; the image goes as-is to the peer's ``POST /api/v1/vision/detect`` with the
``X-Prime-Spark-Forwarded`` header, so the peer answers from its own backends and never forwards
it on. Only transport failures and 5xx other than 503 count against the breaker: a peer that
answers "no vision backend here" (503/409) is alive, it just cannot see.
"""

from __future__ import annotations

import time
from typing import Any

from inference_server.backends.remote import UpstreamError, UpstreamRejected
from inference_server.backends.vision import VisionService, VisionUnavailableError
from inference_server.node import Node
from inference_server.routing.router import Router

DETECT_PATH = "/api/v1/vision/detect"


class CloudVision:
    def __init__(self, router: Router) -> None:
        self._router = router

    def available(self) -> bool:
        return any(u.selectable() for u in self._router.upstreams)

    async def detect(self, data: bytes, params: dict[str, str]) -> tuple[str, dict[str, Any]]:
        failures: list[str] = []
        for upstream in [u for u in self._router.upstreams if u.selectable()]:
            if not upstream.admit():
                continue
            upstream.inflight += 1
            upstream.requests += 1
            started = time.monotonic()
            try:
                body = await upstream.backend.post_bytes(DETECT_PATH, data, params=params)
            except UpstreamRejected as err:
                upstream.breaker.record_success()  # it answered: alive, but refused the image
                failures.append(f"{upstream.name} refused it ({_message(err.body)})")
                continue
            except UpstreamError as err:
                upstream.failures += 1
                if err.status == 503:
                    upstream.breaker.record_success()  # alive; no vision backend there
                else:
                    upstream.breaker.record_failure(str(err))
                failures.append(str(err))
                continue
            finally:
                upstream.inflight -= 1
            upstream.breaker.record_success()
            # Not fed to the router's latency averages: those size chat requests.
            _ = time.monotonic() - started
            return upstream.name, body
        raise VisionUnavailableError(
            "no cloud peer detected it: " + ("; ".join(failures) or "every peer is cooling down")
        )


def _message(body: dict[str, Any]) -> str:
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return "no reason given"


def attach_cloud_vision(service: VisionService, node: Node) -> None:
    """Let the vision service follow the power mode and reach the routing peers."""

    def mode() -> str:
        return node.power.mode if node.power is not None else "balanced"

    service.power_mode = mode
    if node.router is not None:
        service.cloud = CloudVision(node.router)
