"""The node's windowed analytics summary (``GET /api/v1/analytics/summary``), typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .exceptions import PrimeSparkInvalidResponseError
from .models import _Fields

type AnalyticsWindow = Literal["5m", "1h", "24h"]


@dataclass(frozen=True, kw_only=True, slots=True)
class AnalyticsSummary:
    """Requests, latency, throughput, edge/cloud, cache and energy over one window, plus the
    analytics pipeline's health (store, Kafka, spool backlog)."""

    window: str
    requests: int
    requests_per_minute: float
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    tokens_per_second: float | None
    edge_share: float | None
    cloud_share: float | None
    cache_hit_rate: float | None
    energy_per_request_wh: float | None
    healthy: bool
    store: str
    kafka_configured: bool
    kafka_connected: bool | None
    spool_backlog: int
    spool_near_full: bool

    @classmethod
    def from_dict(cls, data: object) -> AnalyticsSummary:
        f = _Fields(data, "analytics summary")
        health = f.obj("health")
        kafka = f.raw("health").get("kafka_connected")  # null: no Kafka configured
        if kafka is not None and not isinstance(kafka, bool):
            raise PrimeSparkInvalidResponseError("analytics summary: kafka_connected is no bool")
        return cls(
            window=f.string("window"),
            requests=f.integer("requests"),
            requests_per_minute=f.number("requests_per_minute"),
            errors=f.integer("errors"),
            latency_p50_ms=f.opt_number("latency_p50_ms"),
            latency_p95_ms=f.opt_number("latency_p95_ms"),
            tokens_per_second=f.opt_number("tokens_per_second"),
            edge_share=f.opt_number("edge_share"),
            cloud_share=f.opt_number("cloud_share"),
            cache_hit_rate=f.opt_number("cache_hit_rate"),
            energy_per_request_wh=f.opt_number("energy_per_request_wh"),
            healthy=health.boolean("healthy"),
            store=health.string("store"),
            kafka_configured=health.boolean("kafka_configured"),
            kafka_connected=kafka,
            spool_backlog=health.integer("spool_backlog"),
            spool_near_full=health.boolean("spool_near_full"),
        )
