"""Prometheus metrics for the node, in a registry of its own.

A private ``CollectorRegistry`` per application keeps tests (several apps in one process) and the
exposition honest. Live values such as queue depth and busy slots are read at scrape time from
the engine rather than mirrored, so they can never drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inference_server.backends.base import FinishEvent, SlotStatus
from inference_server.stats import STATS_KEY

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
RATE_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500)


class _EngineCollector(Collector):
    """Reads queue depth, slot use and loaded models from the engine when scraped."""

    def __init__(
        self,
        slots: Callable[[], list[SlotStatus]],
        queue_depth: Callable[[], int],
        loaded_models: Callable[[], Iterable[str]],
        generated_tokens: Callable[[], int],
    ) -> None:
        self._slots = slots
        self._queue_depth = queue_depth
        self._loaded_models = loaded_models
        self._generated_tokens = generated_tokens

    def collect(self) -> Iterable[Metric]:
        slots = self._slots()
        busy = GaugeMetricFamily("prime_spark_slots_busy", "Generation slots in use")
        busy.add_metric([], sum(1 for s in slots if s.busy))
        total = GaugeMetricFamily("prime_spark_slots_total", "Generation slots configured")
        total.add_metric([], len(slots))
        queue = GaugeMetricFamily("prime_spark_queue_depth", "Requests waiting for a slot")
        queue.add_metric([], self._queue_depth())
        loaded = GaugeMetricFamily(
            "prime_spark_model_loaded", "1 for each model held in memory", labels=["model"]
        )
        for model in self._loaded_models():
            loaded.add_metric([model], 1)
        generated = CounterMetricFamily(
            "prime_spark_engine_generated_tokens",
            "Tokens sampled by the engine, counted as they are produced (cancelled ones too)",
        )
        generated.add_metric([], self._generated_tokens())
        return [busy, total, queue, loaded, generated]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.info = Info("prime_spark_build", "Version and node id", registry=r)
        self.requests = Counter(
            "prime_spark_http_requests",
            "HTTP requests served, by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "prime_spark_http_request_duration_seconds",
            "Time to the end of the response, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Label children by their label values: ``labels()`` checks and locks on every call,
        # which is a measurable part of a cache hit; the children themselves never change.
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        self.tokens = Counter(
            "prime_spark_tokens",
            "Tokens processed, by model and direction (prompt = in, completion = out)",
            ["model", "direction"],
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "prime_spark_generation_tokens_per_second",
            "Decode speed of each finished generation",
            ["model"],
            buckets=RATE_BUCKETS,
            registry=r,
        )
        self.last_tokens_per_second = Gauge(
            "prime_spark_last_tokens_per_second",
            "Decode speed of the most recent generation",
            ["model"],
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "prime_spark_time_to_first_token_seconds",
            "Queue wait plus prompt processing",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "prime_spark_queue_wait_seconds",
            "Time a request waited for a slot",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def attach_engine(
        self,
        slots: Callable[[], list[SlotStatus]],
        queue_depth: Callable[[], int],
        loaded_models: Callable[[], Iterable[str]],
        generated_tokens: Callable[[], int],
    ) -> None:
        self.registry.register(
            _EngineCollector(slots, queue_depth, loaded_models, generated_tokens)
        )

    def observe_generation(self, model: str, finish: FinishEvent) -> None:
        self.tokens.labels(model, "prompt").inc(finish.usage.prompt_tokens)
        self.tokens.labels(model, "completion").inc(finish.usage.completion_tokens)
        self.queue_wait.observe(finish.queue_seconds)
        self.time_to_first_token.labels(model).observe(finish.queue_seconds + finish.prompt_seconds)
        if finish.generation_seconds > 0 and finish.usage.completion_tokens > 1:
            rate = finish.usage.completion_tokens / finish.generation_seconds
            self.tokens_per_second.labels(model).observe(rate)
            self.last_tokens_per_second.labels(model).set(rate)

    def observe_request(self, route: str, method: str, status: int, elapsed: float) -> None:
        """One HTTP response: the request counter and the latency histogram of its route."""
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        histogram = self._latency_children.get(route)
        if histogram is None:
            histogram = self._latency_children[route] = self.latency.labels(route)
        histogram.observe(elapsed)

    def observe_embedding(self, model: str, prompt_tokens: int) -> None:
        self.tokens.labels(model, "prompt").inc(prompt_tokens)


METRICS_KEY: Final = web.AppKey("metrics", Metrics)


def observe_response(request: web.Request, status: int, elapsed: float) -> None:
    """Count one response under its route template (never the raw path: bounded labels).

    Inference routes (``/v1/...``) also feed the rolling window that HA's sensors show. Called
    by the application's one middleware (:func:`inference_server.middleware.request_middleware`)
    for every request, failed ones included.
    """
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    app = request.app
    app[METRICS_KEY].observe_request(route, request.method, status, elapsed)
    if route.startswith("/v1/") and request.method == "POST":
        app[STATS_KEY].record_request(elapsed, error=status >= 400)
