"""The analytics subsystem of one node: ``emit`` → queue → spool → Kafka or store, plus the
sink, the scheduled jobs and the numbers the status API and ``/metrics`` show.

``emit`` is the one entry point for every emitter (inference, routing, power, memory, agents,
link): it validates the event against its schema (a bad event raises
:class:`EventSchemaError` at the call site) and puts the encoded line on a bounded in-memory
queue. It never awaits, never touches the disk and never waits for Kafka, so request handling
cannot be slowed by analytics; a full queue drops the event and counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inference_server.analytics.events import (
    EVENT_TYPES,
    NODE_ID_MAX_LENGTH,
    NodeHealthEvent,
    Payload,
    encode,
    envelope,
    envelope_data,
    sink_topics,
)
from inference_server.analytics.jobs import Scheduler
from inference_server.analytics.kafka import DeliveryError, KafkaDelivery, StoreDelivery
from inference_server.analytics.queue import EmitQueue
from inference_server.analytics.schema import validate_event, validate_own_event
from inference_server.analytics.sink_process import SinkConfig, SinkProcess, StoreSpec
from inference_server.analytics.spool import Batch, Spool, line_head
from inference_server.analytics.store import RetentionPolicy
from inference_server.analytics.summary import summarize
from inference_server.config import AnalyticsSettings

_LOGGER = logging.getLogger(__name__)

BATCH_EVENTS = 5000
PROBE_SECONDS = 5.0
GROUP_COMMIT_SECONDS = 0.05
"""How long the spool writer lets events gather after the first one of a batch.

Without it, every event that arrives while the loop is idle is a batch of its own: a thread
hop, a write and an fsync, then a read, a store insert and a cursor rename to deliver it. At a
few thousand requests per second (cache hits) that cost more server CPU than the requests
themselves; 50 ms turns it into at most twenty batches a second whatever the rate. Emitters
never wait for it (``emit`` only queues), and ``stop`` still flushes whatever is queued.
"""
DELIVERY_PAUSE_SECONDS = 0.2
"""When less than a full batch (:data:`BATCH_EVENTS`) is left in the spool after a delivery,
the delivery loop waits this long before reading it again, for the same reason: each delivery
is a read, a store transaction (or a Kafka send) and a cursor rename, which must not happen per
event under load. A backlog is drained back to back: the test is the spool's backlog, not the
size of the batch just sent, which a read's byte limit also cuts (pausing after those cut the
producer to a third of its rate, bench/RESULTS.md)."""

HealthSampler = Callable[[], NodeHealthEvent]


def store_spec(settings: AnalyticsSettings, data_dir: Path) -> StoreSpec:
    """The node's store: PostgreSQL when configured, else the embedded SQLite file."""
    if settings.postgres_dsn:
        return StoreSpec(postgres_dsn=settings.postgres_dsn, timescale=settings.timescale)
    path = settings.sqlite_path or data_dir / "analytics" / "analytics.sqlite3"
    return StoreSpec(sqlite_path=str(path))


class Analytics:
    def __init__(
        self,
        settings: AnalyticsSettings,
        *,
        node_id: str,
        data_dir: Path,
        health_sampler: HealthSampler | None = None,
        default_model: str = "unknown",
    ) -> None:
        self.settings = settings
        self.default_model = default_model
        """Named in inference events of requests that failed before a model was chosen."""
        if not 1 <= len(node_id) <= NODE_ID_MAX_LENGTH:  # what every schema's envelope requires
            raise ValueError(f"node id must be 1 to {NODE_ID_MAX_LENGTH} characters: {node_id!r}")
        self.node_id = node_id
        """Checked once here: events built on this node are not checked for it again."""
        self._heads: dict[tuple[str, int], bytes] = {}
        spec = store_spec(settings, data_dir)
        self.store = spec.new_store()
        self.spool = Spool(
            settings.spool_dir or data_dir / "analytics" / "spool",
            max_bytes=settings.spool_max_mb * 1024 * 1024,
        )
        self.delivery: KafkaDelivery | StoreDelivery
        if settings.kafka_bootstrap:
            self.delivery = KafkaDelivery(
                settings.kafka_bootstrap,
                prefix=settings.topic_prefix,
                node_id=node_id,
                compression=settings.compression,
                linger_ms=settings.linger_ms,
            )
        else:
            self.delivery = StoreDelivery(self.store, self._count_skipped, self._store_refused)
        self.sink: SinkProcess | None = None
        """The Kafka sink, in a worker process of its own (sink_process.py says why)."""
        if settings.kafka_bootstrap and settings.sink:
            self.sink = SinkProcess(
                SinkConfig(
                    bootstrap=settings.kafka_bootstrap,
                    topics=sink_topics(settings.topic_prefix),
                    group_id=settings.consumer_group,
                    store=spec,
                    log_level=logging.getLogger().getEffectiveLevel(),
                )
            )
        self.scheduler = Scheduler()
        self._health_sampler = health_sampler
        self._queue = EmitQueue(settings.queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        # Zeros up front: every series exists from the first scrape (rate() and alerts need it).
        self.emitted: Counter[str] = Counter(dict.fromkeys(EVENT_TYPES, 0))
        self.rejected: Counter[str] = Counter({"emit": 0, "ingest": 0, "store": 0})
        """By stage: the schema check of ``emit`` and of the ingest route, and ``store``: events
        the local store refused on the way from the spool (the sink keeps its own count)."""
        self.dropped_queue_full = 0
        self.dropped_spool_error = 0
        self.delivered = 0
        self.skipped = 0
        self.store_error: str | None = None
        self.started = False

    # ------------------------------------------------------------------ emitting
    def emit(self, payload: Payload, *, occurred_at: float | None = None) -> str:
        """Validate and enqueue one event; returns its ``event_id``. Never blocks."""
        event = envelope(payload, node_id=self.node_id, occurred_at=occurred_at)
        if occurred_at is None:
            self._emit_own(event)
        else:  # a time from the caller: the whole envelope is checked
            self.emit_envelope(event)
        return str(event["event_id"])

    def emit_data(self, payload_type: type[Payload], data: dict[str, Any]) -> str:
        """:meth:`emit` of a payload given as its ``data`` dict (see :func:`envelope_data`)."""
        event = envelope_data(payload_type, data, node_id=self.node_id)
        self._emit_own(event)
        return str(event["event_id"])

    def emit_envelope(self, event: dict[str, Any], *, stage: str = "emit") -> None:
        """Enqueue an envelope built elsewhere (the ingest route); validated here too."""
        try:
            validate_event(event)
        except ValueError:
            self.rejected[stage] += 1
            raise
        self._enqueue(event)

    def _emit_own(self, event: dict[str, Any]) -> None:
        """An envelope built here around ``data``: only the data is checked (schema.py says why)."""
        try:
            validate_own_event(event)
        except ValueError:
            self.rejected["emit"] += 1
            raise
        self._enqueue(event)

    def _enqueue(self, event: dict[str, Any]) -> None:
        """The spool line of a checked event; its head (``<type>.v<version>\\t``) is made once
        per topic version, not formatted per event (a checked event is of a known one)."""
        topic = (event["type"], event["version"])
        head = self._heads.get(topic)
        if head is None:
            head = self._heads[topic] = line_head(f"{topic[0]}.v{topic[1]}")
        if not self._queue.put(head + encode(event) + b"\n"):
            self.dropped_queue_full += 1
            return
        self.emitted[event["type"]] += 1

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await asyncio.to_thread(self.spool.open)
        try:
            await self.store.open()
        except Exception as err:
            # Events still spool; the delivery loop retries the store on every batch.
            self.store_error = str(err)
            _LOGGER.error("Analytics store unavailable at start: %s", err)
        policy = RetentionPolicy(
            raw_days=self.settings.raw_retention_days,
            minute_rollup_days=self.settings.minute_rollup_days,
            hour_rollup_days=self.settings.hour_rollup_days,
        )
        self.scheduler.add(
            "rollup", self.settings.rollup_interval, self.store.rollup, first_delay=5
        )
        self.scheduler.add(
            "retention",
            self.settings.retention_interval,
            lambda: self.store.retention(policy, time.time()),
            first_delay=30,
        )
        if self._health_sampler is not None:
            self.scheduler.add(
                "node_health", self.settings.node_health_interval, self._sample_health
            )
        self._spawn(self._write_loop(), "writer")
        self._spawn(self._deliver_loop(), "delivery")
        self._spawn(self.scheduler.run(), "jobs")
        if self.sink is not None:
            self._spawn(self.sink.run(), "sink")
        self.started = True

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        self._tasks.append(asyncio.ensure_future(coro))
        self._tasks[-1].set_name(f"prime-spark-analytics-{name}")

    async def stop(self) -> None:
        """Flush the queue to the spool (nothing emitted is lost), then close everything."""
        # Everything but the writer first (it must stop taking lines last), then the writer.
        for task in reversed(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush_queue()
        await self.delivery.close()
        await self.store.close()
        self.spool.close()
        self._tasks.clear()
        self.started = False

    async def _flush_queue(self) -> None:
        await self.spool.append(self._queue.take(len(self._queue)))

    async def _write_loop(self) -> None:
        """Group commit: the events of :data:`GROUP_COMMIT_SECONDS` (and whatever queued up
        while the last fsync ran) go in one batch."""
        while True:
            await self._queue.wait()
            if len(self._queue) < BATCH_EVENTS:
                await asyncio.sleep(GROUP_COMMIT_SECONDS)
            lines = self._queue.take(BATCH_EVENTS)
            try:
                await self.spool.append(lines)
            except asyncio.CancelledError:
                self._queue.put_back(lines)  # stop() flushes what is still queued, in order
                raise
            except OSError as err:  # disk full, read-only: counted and said, never silent
                self.dropped_spool_error += len(lines)
                _LOGGER.error("Analytics spool write failed, %d events lost: %s", len(lines), err)
                await asyncio.sleep(1.0)

    async def _deliver_loop(self) -> None:
        """Keep delivering; a bug in one pass is logged and retried, never ends delivery."""
        while True:
            try:
                await self._deliver()
            except Exception:
                _LOGGER.exception("Analytics delivery failed unexpectedly; retrying")
                await asyncio.sleep(5.0)

    async def _deliver(self) -> None:
        """Read, send and commit spool batches, up to the destination's ``window`` in flight.

        The cursor moves strictly in order, each batch's only once the destination has
        acknowledged it and every batch before it. A failure drops what is in flight and reads
        again from the cursor: those events are sent again (the sink keeps one row per id).
        """
        backoff = 0.2
        last_probe = 0.0
        in_flight: deque[tuple[Batch, asyncio.Future[None]]] = deque()
        try:
            while True:
                while in_flight and in_flight[0][1].done() and not in_flight[0][1].exception():
                    self._committed(in_flight.popleft()[0])
                if not in_flight:
                    await self.spool.wait(PROBE_SECONDS)
                    if self.store_error is not None:  # down at start: the sink needs it too
                        await self._reopen_store()
                        if isinstance(self.delivery, StoreDelivery) and (
                            self.store_error is not None
                        ):
                            continue
                batch = None
                if len(in_flight) < self.delivery.window:
                    after = in_flight[-1][0].end if in_flight else None
                    batch = await self.spool.read(BATCH_EVENTS, after)
                if batch is None and not in_flight:
                    if time.monotonic() - last_probe >= PROBE_SECONDS:
                        last_probe = time.monotonic()
                        await self.delivery.probe()
                    continue
                try:
                    if batch is not None:
                        in_flight.append((batch, await self.delivery.send(batch.records)))
                        if len(in_flight) < self.delivery.window:
                            continue  # read the next batch while these are acknowledged
                    await in_flight[0][1]
                except DeliveryError as err:
                    _LOGGER.warning(
                        "Analytics delivery to %s failed (%s); %d events wait in the spool",
                        self.delivery.destination,
                        err,
                        self.spool.backlog,
                    )
                    await _settle(in_flight)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.delivery.retry_max)
                    continue
                backoff = 0.2
                self._committed(in_flight.popleft()[0])
                if not in_flight and self.spool.backlog < BATCH_EVENTS:
                    await asyncio.sleep(DELIVERY_PAUSE_SECONDS)
        finally:
            await _settle(in_flight)

    def _committed(self, batch: Batch) -> None:
        self.delivered += len(batch.records)
        self.skipped += batch.skipped
        self.spool.commit(batch)

    async def _reopen_store(self) -> None:
        try:
            await self.store.open()
        except Exception as err:
            self.store_error = str(err)
            await asyncio.sleep(2.0)
        else:
            self.store_error = None

    def _count_skipped(self, count: int) -> None:
        self.skipped += count

    def _store_refused(self) -> None:
        self.rejected["store"] += 1

    async def _sample_health(self) -> dict[str, Any]:
        assert self._health_sampler is not None  # nosec B101: only scheduled with a sampler
        sample = self._health_sampler()
        event_id = self.emit(sample)
        return {"event_id": event_id}

    # ------------------------------------------------------------------ reading
    async def summary(self, window: str) -> dict[str, Any]:
        return await summarize(self.store, window)

    @property
    def dead_letters_kept(self) -> int:
        """Kept by this process's store (the spool's way) and by the sink worker's."""
        return self.store.dead_letters_kept + (self.sink.dead_letters_kept if self.sink else 0)

    @property
    def kafka_connected(self) -> bool | None:
        if not self.settings.kafka_bootstrap:
            return None
        sink_ok = self.sink is None or self.sink.connected
        return bool(self.delivery.connected and sink_ok)

    @property
    def healthy(self) -> bool:
        """What HA's analytics-health binary sensor shows: events flow and nothing is lost."""
        kafka = self.kafka_connected
        return (
            self.started
            and self.store_error is None
            and kafka is not False
            and not self.spool.near_full
        )

    def health(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "healthy": self.healthy,
            "store": self.store.kind,
            "store_error": self.store_error,
            "kafka": {
                "configured": bool(self.settings.kafka_bootstrap),
                "connected": self.kafka_connected,
                "producer_connected": (
                    self.delivery.connected if self.settings.kafka_bootstrap else None
                ),
                "sink_connected": None if self.sink is None else self.sink.connected,
                "last_error": self.delivery.last_error
                or (self.sink.last_error if self.sink else None),
                "topic_prefix": self.settings.topic_prefix,
            },
            "spool": {
                "backlog_events": self.spool.backlog,
                "bytes": self.spool.size_bytes,
                "capacity_bytes": self.spool.max_bytes,
                "near_full": self.spool.near_full,
                "dropped_events": self.spool.dropped_events,
            },
            "queue": {"depth": len(self._queue), "capacity": self._queue.maxsize},
            "events": {
                "emitted": sum(self.emitted.values()),
                "delivered": self.delivered,
                "rejected": sum(self.rejected.values()),
                "dropped_queue_full": self.dropped_queue_full,
                "dropped_spool_error": self.dropped_spool_error,
                "sink_stored": self.sink.stored if self.sink else None,
                "sink_rejected": self.sink.rejected if self.sink else None,
                "sink_last_rejection": self.sink.last_rejection if self.sink else None,
                "dead_letters_kept": self.dead_letters_kept,
                "sink_restarts": self.sink.restarts if self.sink else None,
            },
            "jobs": self.scheduler.status(),
        }


class AnalyticsCollector(Collector):
    """Reads the analytics state when scraped, so the exposition never drifts from it."""

    def __init__(self, analytics: Analytics) -> None:
        self._a = analytics

    def collect(self) -> Iterable[Metric]:
        a = self._a
        p = "prime_spark_analytics_"
        emitted = CounterMetricFamily(
            p + "events_emitted", "Events accepted by emit", labels=["type"]
        )
        for type_, n in sorted(a.emitted.items()):
            emitted.add_metric([type_], n)
        rejected = CounterMetricFamily(
            p + "events_rejected",
            "Events refused by schema validation, or by the store (stages sink and store)",
            labels=["stage"],
        )
        for stage, n in sorted(a.rejected.items()):
            rejected.add_metric([stage], n)
        if a.sink is not None:
            rejected.add_metric(["sink"], a.sink.rejected)
        dropped = CounterMetricFamily(
            p + "events_dropped", "Events lost to a bound, by which bound", labels=["reason"]
        )
        dropped.add_metric(["queue_full"], a.dropped_queue_full)
        dropped.add_metric(["spool_full"], a.spool.dropped_events)
        dropped.add_metric(["spool_error"], a.dropped_spool_error)
        delivered = CounterMetricFamily(
            p + "events_delivered", "Events delivered from the spool", labels=["destination"]
        )
        delivered.add_metric([a.delivery.destination], a.delivered)
        yield from (emitted, rejected, dropped, delivered)
        kept = CounterMetricFamily(
            p + "dead_letters_kept",
            "Rejected or refused messages this node kept in analytics_dead_letters",
        )
        kept.add_metric([], a.dead_letters_kept)
        yield kept
        if a.sink is not None:
            stored = CounterMetricFamily(p + "sink_rows_stored", "Rows the Kafka sink added")
            stored.add_metric([], a.sink.stored)
            restarts = CounterMetricFamily(
                p + "sink_restarts", "Sink worker processes started again after one ended"
            )
            restarts.add_metric([], a.sink.restarts)
            yield from (stored, restarts)
        for name, doc, value in (
            ("spool_backlog_events", "Events in the spool not yet delivered", a.spool.backlog),
            ("spool_bytes", "Bytes the spool holds on disk", a.spool.size_bytes),
            ("spool_capacity_bytes", "The spool's bound", a.spool.max_bytes),
            ("spool_near_full", "1 when the spool is 80 % full or more", int(a.spool.near_full)),
            ("queue_depth", "Events waiting in memory for the spool writer", len(a._queue)),
            ("healthy", "1 when analytics flows without loss", int(a.healthy)),
            ("store_up", "1 when the analytics store is reachable", int(a.store_error is None)),
        ):
            gauge = GaugeMetricFamily(p + name, doc)
            gauge.add_metric([], value)
            yield gauge
        if a.kafka_connected is not None:
            kafka = GaugeMetricFamily(p + "kafka_connected", "1 when Kafka accepts events")
            kafka.add_metric([], int(a.kafka_connected))
            yield kafka
        yield from _job_metrics(a.scheduler)


def _job_metrics(scheduler: Scheduler) -> Iterable[Metric]:
    """Labelled ``job_name``: ``job`` is the label Prometheus gives every scraped target."""
    p = "prime_spark_job_"
    last = GaugeMetricFamily(
        p + "last_run_timestamp_seconds", "When each job last ran", labels=["job_name"]
    )
    duration = GaugeMetricFamily(
        p + "last_duration_seconds", "How long each job's last run took", labels=["job_name"]
    )
    success = GaugeMetricFamily(
        p + "last_success", "1 when the job's last run succeeded", labels=["job_name"]
    )
    runs = CounterMetricFamily(p + "runs", "Job runs by result", labels=["job_name", "result"])
    for job in scheduler.jobs.values():
        if job.last_run is not None:
            last.add_metric([job.name], job.last_run)
            duration.add_metric([job.name], job.last_duration or 0.0)
            success.add_metric([job.name], int(job.last_result == "ok"))
        runs.add_metric([job.name, "ok"], job.runs - job.failures)
        runs.add_metric([job.name, "error"], job.failures)
    return [last, duration, success, runs]


async def _settle(in_flight: deque[tuple[Batch, asyncio.Future[None]]]) -> None:
    """Drop the batches in flight (not committed: they are read and sent again)."""
    for _, acked in in_flight:
        acked.cancel()
    await asyncio.gather(*(acked for _, acked in in_flight), return_exceptions=True)
    in_flight.clear()


def load_average() -> float | None:
    with contextlib.suppress(OSError):
        return os.getloadavg()[0]
    return None


ANALYTICS_KEY: Final = web.AppKey("analytics", Analytics)
