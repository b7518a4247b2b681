"""Rolling request statistics for dashboards: requests per minute, latency p95, tokens/s.

Prometheus histograms answer these for an operator with a Prometheus server; a Home Assistant
user has none, so the node keeps a one-minute window of its own and serves the numbers directly
(status API and event stream). Bounded memory: one small record per request in the window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from aiohttp import web

WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class _Sample:
    """Either a finished HTTP request (latency set) or a finished generation (tokens set)."""

    at: float
    latency: float | None
    completion_tokens: int
    generation_seconds: float
    error: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class StatsSnapshot:
    requests_per_minute: int
    errors_per_minute: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    tokens_per_second: float | None
    """Decode speed over the window: completion tokens / time spent decoding them."""
    generated_tokens_total: int
    requests_total: int


class RequestStats:
    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self._window = window
        self._samples: deque[_Sample] = deque()
        self._generated_total = 0
        self._requests_total = 0

    def record_request(self, latency: float, *, error: bool) -> None:
        now = time.monotonic()
        self._samples.append(_Sample(now, latency, 0, 0.0, error))
        self._requests_total += 1
        self._trim(now)

    def record_generation(self, completion_tokens: int, generation_seconds: float) -> None:
        now = time.monotonic()
        self._samples.append(_Sample(now, None, completion_tokens, generation_seconds, False))
        self._generated_total += completion_tokens
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self._window
        while self._samples and self._samples[0].at < horizon:
            self._samples.popleft()

    def snapshot(self) -> StatsSnapshot:
        self._trim(time.monotonic())
        samples = list(self._samples)
        requests = [s for s in samples if s.latency is not None]
        latencies = sorted(s.latency for s in requests if s.latency is not None and not s.error)
        tokens = sum(s.completion_tokens for s in samples)
        decoding = sum(s.generation_seconds for s in samples)
        return StatsSnapshot(
            requests_per_minute=round(len(requests) * 60.0 / self._window),
            errors_per_minute=round(sum(s.error for s in requests) * 60.0 / self._window),
            latency_p50_ms=_percentile_ms(latencies, 0.50),
            latency_p95_ms=_percentile_ms(latencies, 0.95),
            tokens_per_second=round(tokens / decoding, 2) if decoding > 0 else None,
            generated_tokens_total=self._generated_total,
            requests_total=self._requests_total,
        )


def _percentile_ms(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile: always a latency that was actually observed."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return round(ordered[rank - 1] * 1000, 2)


STATS_KEY: Final = web.AppKey("request_stats", RequestStats)
