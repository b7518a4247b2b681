"""Kafka on both sides: the producer that drains the spool, and the sink consumer group.

Producer: idempotent (``enable_idempotence``: acks from all replicas, no duplicates from the
client's own retries), batched (``linger_ms`` plus explicit record batches built per topic
partition) and compressed (zstd by default: gzip, the one codec aiokafka has without cramjam,
costs ~10x the CPU, which capped one process near 20k events/s). Records are
keyed by node id and all of a node's events of one topic go to one partition, so they stay in
emission order. A failed delivery throws the producer away (its idempotence sequence numbers
are no longer trustworthy) and the spool keeps the batch for the next attempt.

Sink: a consumer group that never auto-commits. It validates each message against its topic's
schema, writes the batch to the store (which is durable when ``insert`` returns) and only then
commits the offsets. A crash between the two re-delivers the batch, and the store's
``ON CONFLICT (event_id)`` makes that harmless: exactly once in the database.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from inference_server.analytics.decoding import decode_checked, decoders
from inference_server.analytics.events import decode
from inference_server.analytics.schema import EventSchemaError, validate_event
from inference_server.analytics.spool import Record
from inference_server.analytics.store import Store, StoreError, StoreRefused
from inference_server.analytics.store.base import DeadLetter, Envelope, dead_letter

_LOGGER = logging.getLogger(__name__)


STORE_RETRY_MAX_SECONDS = 2.0
"""The longest wait between two attempts to write to the store while it is down.

An attempt costs one failed connection, so it can be frequent; with a backoff that grew to
15 s the wait was most of the recovery: PostgreSQL answered again 10.5 s into a 10 s outage
and the next row arrived 5.5 s later (bench/faults.py). Kafka keeps the longer backoff: each
attempt there builds a producer and waits up to its timeout.
"""


class DeliveryError(RuntimeError):
    """The destination did not acknowledge a batch; the spool keeps it."""


class KafkaDelivery:
    """Sends spool records to ``<prefix>.<type>.v<version>`` topics."""

    destination = "kafka"
    retry_max = 15.0
    """The longest wait between two delivery attempts while Kafka is down."""
    window = 4
    """Spool batches sent before the oldest is acknowledged (see :meth:`send`)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        prefix: str,
        node_id: str,
        compression: str = "zstd",
        linger_ms: int = 20,
        timeout: float = 15.0,
    ) -> None:
        self._bootstrap = bootstrap
        self._prefix = prefix
        self._key = node_id.encode()
        self._compression = None if compression == "none" else compression
        self._linger_ms = linger_ms
        self._timeout = timeout
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}
        self._unacked = 0
        self._broken = False
        self.connected = False
        self.last_error: str | None = None

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id="prime-spark-analytics",
                enable_idempotence=True,
                compression_type=self._compression,
                linger_ms=self._linger_ms,
                max_batch_size=512 * 1024,
                request_timeout_ms=int(self._timeout * 1000),
                retry_backoff_ms=200,
            )
            try:
                async with asyncio.timeout(self._timeout):
                    await producer.start()
            except BaseException:
                await _quietly(producer.stop())
                raise
            self._producer = producer
        return self._producer

    async def _partition(self, producer: AIOKafkaProducer, topic: str) -> int:
        if topic not in self._partitions:
            partitions = sorted(await producer.partitions_for(topic))
            self._partitions[topic] = partitions[zlib.crc32(self._key) % len(partitions)]
        return self._partitions[topic]

    async def send(self, records: list[Record]) -> asyncio.Future[None]:
        """Hand the records to the producer; the returned future ends when Kafka acked them all.

        The delivery loop sends up to :attr:`window` spool batches before it waits for the
        first one's acknowledgement, so the next batch is read and built while the broker
        writes the last. Order is kept: aiokafka queues a partition's batches in the order they
        are given and, with idempotence, has one request per partition in flight and retries
        it with its sequence number. Each batch is closed before it is queued (it is complete:
        an open one would wait out ``linger_ms`` in the accumulator first).

        Once a batch has failed, nothing more is sent until every batch sent before the failure
        has been settled: a new producer must not carry later events ahead of the ones the
        caller will send again.
        """
        if self._broken and self._unacked:
            raise DeliveryError(self.last_error or "an earlier batch was not acknowledged")
        self._broken = False
        try:
            async with asyncio.timeout(self._timeout):
                producer = await self._ensure()
                futures = await self._queue(producer, records)
        except (KafkaError, TimeoutError, OSError) as err:
            raise await self._failed(err) from err
        self._unacked += 1
        return asyncio.ensure_future(self._acked(futures))

    async def _queue(
        self, producer: AIOKafkaProducer, records: list[Record]
    ) -> list[asyncio.Future[Any]]:
        by_topic: dict[str, list[bytes]] = defaultdict(list)
        for topic, value in records:
            by_topic[topic].append(value)
        futures = []
        for name, values in by_topic.items():
            topic = f"{self._prefix}.{name}"
            partition = await self._partition(producer, topic)
            batch = producer.create_batch()
            for value in values:
                if batch.append(key=self._key, value=value, timestamp=None) is None:
                    batch.close()
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=self._key, value=value, timestamp=None)
            if batch.record_count():
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def _acked(self, futures: list[asyncio.Future[Any]]) -> None:
        try:
            async with asyncio.timeout(self._timeout * 2):
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError, OSError) as err:
            raise await self._failed(err) from err
        except BaseException:
            self._broken = True  # cancelled (the caller gives up on it) or a bug: send it again
            raise
        finally:
            self._unacked -= 1
        self.connected = True
        self.last_error = None

    async def _failed(self, err: BaseException) -> DeliveryError:
        self._broken = True  # before the first await: no send may start a new producer now
        self.connected = False
        self.last_error = f"{type(err).__name__}: {err}"
        await self.reset()
        return DeliveryError(self.last_error)

    async def deliver(self, records: list[Record]) -> None:
        """Send one batch and wait for its acknowledgement."""
        await (await self.send(records))

    async def probe(self) -> bool:
        """While idle, check the cluster answers (so health is not stale between batches)."""
        try:
            async with asyncio.timeout(self._timeout):
                producer = await self._ensure()
                self.connected = bool(await producer.client.force_metadata_update())
        except (KafkaError, TimeoutError, OSError) as err:
            self.connected = False
            self.last_error = f"{type(err).__name__}: {err}"
            await self.reset()
        return self.connected

    async def reset(self) -> None:
        producer, self._producer = self._producer, None
        self._partitions.clear()
        if producer is not None:
            await _quietly(producer.stop())

    async def close(self) -> None:
        await self.reset()


class StoreDelivery:
    """No Kafka configured: the spool drains straight into the local store."""

    destination = "store"
    retry_max = STORE_RETRY_MAX_SECONDS
    window = 1
    """One batch at a time: :meth:`send` returns only once the store has the rows."""
    connected = False
    last_error: str | None = None

    def __init__(
        self,
        store: Store,
        on_skipped: Callable[[int], None],
        on_refused: Callable[[], None],
    ) -> None:
        self._store = store
        self._on_skipped = on_skipped
        self._on_refused = on_refused
        self.stored = 0

    async def send(self, records: list[Record]) -> asyncio.Future[None]:
        """Write the records; the returned future is already done (see :attr:`window`)."""
        await self.deliver(records)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def deliver(self, records: list[Record]) -> None:
        runs = groupby(records, key=itemgetter(0))  # consecutive events of one topic
        groups = ((topic, [r.value for r in run]) for topic, run in runs)
        events, bad = parse(groups, validate=False)  # checked when emitted: bad is a broken line
        try:
            self.stored += await insert_isolating(self._store, events, self._refused, bad)
        except StoreError as err:
            self.last_error = str(err)
            raise DeliveryError(str(err)) from err
        if bad:
            self._on_skipped(len(bad))
        self.last_error = None

    def _refused(self, event: Envelope, err: StoreRefused) -> None:
        self._on_refused()
        _LOGGER.error("Analytics store refused event %s, rejected: %s", event_id(event), err)

    async def probe(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def parse(
    groups: Iterable[tuple[str, list[bytes]]], *, validate: bool
) -> tuple[list[Envelope], list[DeadLetter]]:
    """Decode (and optionally validate) message values; returns events and the rejected
    messages, each with its reason.

    ``groups`` are values by topic suffix (``inference.v2``). Where the topic has a typed
    decoder (:mod:`~inference_server.analytics.decoding`), a value it accepts is decoded and
    checked in one pass; any other value takes the reference way (orjson, then the schema),
    which gives the reason of a rejection.
    """
    events: list[Envelope] = []
    rejected: list[DeadLetter] = []
    typed = _DECODERS
    for topic, values in groups:
        decoder = typed.get(topic)
        for value in values:
            if decoder is not None:
                checked = decode_checked(decoder, value)
                if checked is not None:
                    events.append(checked)
                    continue
            try:
                event = decode(value)
                if validate:
                    validate_event(event)
            except orjson.JSONDecodeError as err:
                rejected.append(DeadLetter(topic, f"{topic}: not JSON: {err}", value))
                continue
            except (ValueError, EventSchemaError) as err:
                rejected.append(DeadLetter(topic, str(err), value))
                continue
            events.append(event)
    return events, rejected


_DECODERS = decoders()


def topic_suffix(topic: str) -> str:
    """``<type>.v<version>`` of a Kafka topic ``<prefix>.<type>.v<version>``."""
    return ".".join(topic.rsplit(".", 2)[-2:])


MAX_REFUSED = 10
"""Events of one batch the store may refuse one by one before the refusal counts as systemic."""


async def insert_isolating(
    store: Store,
    events: list[Envelope],
    refused: Callable[[Envelope, StoreRefused], None],
    letters: Sequence[DeadLetter] = (),
) -> int:
    """``store.insert``, then the batch's dead letters: ``letters`` (its messages that were not
    events) and the events the store refuses for their contents (:class:`StoreRefused`). Both
    are durable when this returns, so the caller may move past the batch.

    A batch the store refuses is split in halves until each refused event stands alone; those
    go to ``refused`` and are kept as dead letters. One such message (a NUL character in a
    string: valid JSON, which PostgreSQL's text cannot hold) used to make the store refuse its
    whole batch on every retry: the sink stopped at that batch's offsets and the spool at its
    cursor, for good. A store that refuses more than :data:`MAX_REFUSED` events (or 1 %) of one
    batch is refusing something else (a column type every row has, after a bad migration):
    that raises :class:`StoreError` and nothing goes to ``refused``; the caller keeps retrying
    the whole batch, as before, rather than drop it. Halves already stored, and dead letters
    already kept, are harmless when the batch comes again: the store keeps each once.
    """
    found: list[tuple[Envelope, StoreRefused]] = []
    stored = 0
    if events:
        stored = await _split_insert(store, events, found, max(MAX_REFUSED, len(events) // 100))
    kept = [*letters, *(dead_letter(event, str(err)) for event, err in found)]
    if kept:
        await store.keep_dead_letters(kept)
    for event, err in found:
        refused(event, err)
    return stored


async def _split_insert(
    store: Store, events: list[Envelope], found: list[tuple[Envelope, StoreRefused]], most: int
) -> int:
    """The whole of ``events`` first; each half only when the store refused the whole."""
    try:
        return await store.insert(events)
    except StoreRefused as err:
        if len(events) == 1:
            if len(found) == most:
                message = f"the store refuses much of one batch, kept to retry: {err}"
                raise StoreError(message) from err
            found.append((events[0], err))
            return 0
    half = len(events) // 2
    first = await _split_insert(store, events[:half], found, most)
    return first + await _split_insert(store, events[half:], found, most)


def event_id(event: Envelope) -> str:
    """The id of a checked event, a dict or a typed one."""
    return str(event["event_id"] if isinstance(event, dict) else getattr(event, "event_id", "?"))


FETCH_MIN_BYTES = 256 * 1024
"""What the broker gathers (compressed: ~10,000 inference events) before it answers a fetch,
unless :data:`FETCH_MAX_WAIT_MS` passes first. With Kafka's default, one byte, a sink that
kept up took whatever had arrived, a few hundred to 2,000 events, and wrote each such batch in
a transaction of its own: 81-101 batches for 300k events, against 24-32 with this.
bench/analytics.py (d), six pairs of runs in turns: 41.3-53.7k events/s (median 49.8k) with
it, 40.2-51.1k (46.3k) without. An event waits at most 200 ms more at the broker: nothing, for
rollups that run every minute."""
FETCH_MAX_WAIT_MS = 200


class KafkaSink:
    """Consumer group → store, committing offsets only after the rows are durable.

    Three writes in flight by default: with each batch one COPY per table, a write is short, and
    a third keeps PostgreSQL busy while the loop checks the next batch (bench/analytics.py (d),
    two pairs of runs in turns: 46.1k / 47.2k events/s with two, 48.6k / 50.3k with three).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        topics: list[str],
        group_id: str,
        store: Store,
        max_records: int = 20_000,
        in_flight: int = 3,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._group_id = group_id
        self._store = store
        self._max_records = max_records
        self._in_flight = max(1, in_flight)
        self.connected = False
        self.last_error: str | None = None
        self.consumed = 0
        self.stored = 0
        self.rejected = 0
        self.last_rejection: str | None = None
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def partitions(self) -> int:
        """Partitions assigned to this member of the group now (0 while joining or down)."""
        consumer = self._consumer
        return len(consumer.assignment()) if consumer is not None and self.connected else 0

    async def run(self) -> None:
        backoff = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                *self._topics,
                bootstrap_servers=self._bootstrap,
                group_id=self._group_id,
                client_id="prime-spark-analytics-sink",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                metadata_max_age_ms=5000,
                fetch_min_bytes=FETCH_MIN_BYTES,
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            )
            self._consumer = consumer
            try:
                await consumer.start()
                self.connected = True
                backoff = 0.5
                await self._consume(consumer)
            except (KafkaError, OSError, StoreError) as err:
                self.connected = False
                self.last_error = f"{type(err).__name__}: {err}"
                _LOGGER.warning("Analytics sink interrupted (%s); retrying", self.last_error)
            except Exception as err:  # a bug must not end the sink for good: log, retry
                self.last_error = f"{type(err).__name__}: {err}"
                _LOGGER.exception("Analytics sink failed unexpectedly; retrying")
            finally:
                self.connected = False
                await _quietly(consumer.stop())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 15.0)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        """Fetch, check and write batches, up to ``in_flight`` writes at once.

        The database is the slow step (one transaction per batch), so the next batch is read
        and checked, and with ``in_flight`` > 1 written, while the last one commits. Offsets are
        committed strictly in order, each batch's only after its rows are durable: a crash
        re-delivers from the oldest batch not yet written, never skips one.
        """
        pending: deque[tuple[asyncio.Task[int], dict[TopicPartition, int], int]] = deque()
        try:
            while True:
                batches = await consumer.getmany(
                    timeout_ms=100 if pending else 1000, max_records=self._max_records
                )
                if batches:
                    pending.append(self._write(batches))
                while pending and (
                    pending[0][0].done() or len(pending) >= self._in_flight or not batches
                ):
                    task, offsets, count = pending.popleft()
                    self.stored += await task
                    await consumer.commit(offsets)
                    self.consumed += count
        finally:
            for task, _, _ in pending:
                task.cancel()
            await asyncio.gather(*(task for task, _, _ in pending), return_exceptions=True)

    def _write(
        self, batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> tuple[asyncio.Task[int], dict[TopicPartition, int], int]:
        """Check one fetched batch and start writing it; returns the write and its offsets."""
        groups = [
            (topic_suffix(tp.topic), [m.value for m in msgs if m.value is not None])
            for tp, msgs in batches.items()
        ]
        offsets = {tp: msgs[-1].offset + 1 for tp, msgs in batches.items() if msgs}
        events, rejected = parse(groups, validate=True)
        if rejected:
            self.rejected += len(rejected)
            self.last_rejection = rejected[-1].reason
            _LOGGER.warning(
                "Analytics sink rejected %d messages (kept as dead letters), e.g.: %s",
                len(rejected),
                rejected[-1].reason,
            )
        task = asyncio.ensure_future(self._insert(events, rejected))
        return task, offsets, sum(len(values) for _, values in groups)

    def _refused(self, event: Envelope, err: StoreRefused) -> None:
        """An event the store cannot hold: rejected like a schema violation, and kept as a
        dead letter as those are."""
        self.rejected += 1
        self.last_rejection = f"the store refused event {event_id(event)}: {err}"
        _LOGGER.error("Analytics sink rejected an event: %s", self.last_rejection)

    async def _insert(self, events: list[Envelope], letters: list[DeadLetter]) -> int:
        """Retry the store until it takes the batch and its dead letters: the offsets wait."""
        backoff = 0.25
        failures = 0
        while True:
            try:
                stored = await insert_isolating(self._store, events, self._refused, letters)
            except StoreError as err:
                self.last_error = str(err)
                failures += 1
                log = _LOGGER.warning if failures == 1 else _LOGGER.debug
                log("Analytics store write failed (%s); retrying", err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, STORE_RETRY_MAX_SECONDS)
                continue
            if failures:
                _LOGGER.info("Analytics store write succeeded after %d failed attempts", failures)
            return stored


async def _quietly(awaitable: Any) -> None:
    try:
        async with asyncio.timeout(10):
            await awaitable
    except Exception:  # closing a broken client must not mask the error being handled
        _LOGGER.debug("Closing a Kafka client failed", exc_info=True)
