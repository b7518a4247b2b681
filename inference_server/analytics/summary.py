"""The windowed summary Home Assistant's sensors and the query API show, for any store.

Written once over the store's primitive reads (totals, a latency at a rank, power readings), so
SQLite and PostgreSQL give the same numbers. Percentiles are nearest-rank (always a latency that
was observed), over successful requests only: a fast 4xx must not make the node look quick.
A request one node forwarded to another in the same store counts once (store/base.py says how);
``forwarded_requests`` says how many such duplicates were left out, and the decode speed is the
completion tokens of every event that spent decode time over that time (the work, wherever done).
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

from inference_server.analytics.store import Store

WINDOWS: dict[str, float] = {"5m": 300.0, "1h": 3600.0, "24h": 86400.0}


def energy_wh(readings: list[tuple[float, float]]) -> float | None:
    """Energy in watt-hours under the readings (trapezoids); ``None`` with fewer than two."""
    if len(readings) < 2:
        return None
    joules = sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in itertools.pairwise(readings))
    # Readings stored before power.v1 bounded watts can still overflow: unknown, not NaN/inf.
    return joules / 3600.0 if math.isfinite(joules) else None


async def summarize(store: Store, window: str, *, now: float | None = None) -> dict[str, Any]:
    seconds = WINDOWS[window]
    now = time.time() if now is None else now
    since = now - seconds
    totals = await store.totals(since)
    ok = totals.requests - totals.errors
    p50 = p95 = None
    if ok:
        p50 = await store.latency_at_rank(since, max(1, math.ceil(0.50 * ok)))
        p95 = await store.latency_at_rank(since, max(1, math.ceil(0.95 * ok)))
    readings = await store.power_readings(since)
    energy = energy_wh(readings)
    lookups = totals.cache_hits + totals.cache_misses
    requests = totals.requests
    return {
        "window": window,
        "window_seconds": seconds,
        "since": since,
        "until": now,
        "requests": requests,
        "requests_per_minute": round(requests * 60.0 / seconds, 3),
        "errors": totals.errors,
        "error_rate": round(totals.errors / requests, 4) if requests else None,
        "latency_p50_ms": None if p50 is None else round(p50, 2),
        "latency_p95_ms": None if p95 is None else round(p95, 2),
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "tokens_per_second": (
            round(totals.decode_tokens * 1000.0 / totals.generation_ms, 2)
            if totals.generation_ms > 0
            else None
        ),
        "forwarded_requests": totals.forwarded,
        "edge_share": round(totals.edge / requests, 4) if requests else None,
        "cloud_share": round(totals.cloud / requests, 4) if requests else None,
        "cache_hit_rate": round(totals.cache_hits / lookups, 4) if lookups else None,
        "energy_wh": None if energy is None else round(energy, 4),
        "energy_per_request_wh": (
            round(energy / requests, 6) if energy is not None and requests else None
        ),
    }
