"""Builds the vision service from settings: Hailo first, the CPU detector as the fallback."""

from __future__ import annotations

from inference_server.backends.cpu_vision import CpuVisionBackend
from inference_server.backends.hailo import HailoBackend
from inference_server.backends.vision import VisionBackend, VisionService
from inference_server.config import VisionSettings


def build_vision_service(settings: VisionSettings) -> VisionService:
    backends: list[VisionBackend] = [
        HailoBackend(device=settings.hailo_device, hef=settings.hailo_hef),
        CpuVisionBackend(),
    ]
    return VisionService(
        backends=backends,
        preferred=settings.backend,
        min_score=settings.min_score,
        max_detections=settings.max_detections,
    )
