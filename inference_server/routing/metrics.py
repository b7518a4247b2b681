"""Prometheus series for routing: every decision by target and reason, and each peer's health.

Reasons are a fixed set (:data:`~inference_server.routing.router.REASONS`), so the label stays
bounded; peer names come from the settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inference_server.routing.router import Router

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class _RouterCollector(Collector):
    def __init__(self, router: Router) -> None:
        self._router = router

    def collect(self) -> Iterable[Metric]:
        breaker = GaugeMetricFamily(
            "prime_spark_upstream_breaker_state",
            "Circuit breaker of each cloud peer: 0 closed, 1 half-open, 2 open",
            labels=["peer"],
        )
        latency = GaugeMetricFamily(
            "prime_spark_upstream_latency_seconds",
            "Moving average of request durations on each cloud peer",
            labels=["peer"],
        )
        inflight = GaugeMetricFamily(
            "prime_spark_upstream_inflight", "Requests running on each cloud peer", labels=["peer"]
        )
        for upstream in self._router.upstreams:
            breaker.add_metric([upstream.name], BREAKER_VALUES[upstream.breaker.state])
            if upstream.latency is not None:
                latency.add_metric([upstream.name], upstream.latency)
            inflight.add_metric([upstream.name], upstream.inflight)
        mode = GaugeMetricFamily(
            "prime_spark_routing_mode", "1 for the routing mode in effect", labels=["mode"]
        )
        mode.add_metric([self._router.mode], 1)
        return [breaker, latency, inflight, mode]


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry, router: Router) -> None:
        self.decisions = Counter(
            "prime_spark_route_decisions",
            "Requests routed, by where they were served and why",
            ["target", "peer", "reason"],
            registry=registry,
        )
        self.upstream_requests = Counter(
            "prime_spark_upstream_requests",
            "Calls to cloud peers by outcome (ok, failed, busy, rejected, cut)",
            ["peer", "outcome"],
            registry=registry,
        )
        self.upstream_tokens = Counter(
            "prime_spark_upstream_tokens",
            "Tokens reported by cloud peers' usage, by direction",
            ["peer", "direction"],
            registry=registry,
        )
        registry.register(_RouterCollector(router))

    def usage(self, peer: str, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for key, direction in (("prompt_tokens", "prompt"), ("completion_tokens", "completion")):
            value = usage.get(key)
            if isinstance(value, int) and value >= 0:
                self.upstream_tokens.labels(peer, direction).inc(value)
