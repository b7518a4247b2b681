"""The whole pipeline with real parts: emit → spool → Kafka → sink → PostgreSQL (TimescaleDB).

Kafka outages are played on a broker this module starts for itself (killed with SIGKILL and
restarted on the same ports), or on an address where nothing listens; the shared broker is
only ever used with topic names unique to the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.private_services import PrivateKafka
from inference_server.analytics import Analytics, EventSchemaError, InferenceEvent
from inference_server.analytics.events import envelope, sink_topics, topic_name
from inference_server.analytics.kafka import KafkaSink
from inference_server.analytics.service import AnalyticsCollector
from inference_server.analytics.sink_process import WORKER_COMMAND, SinkConfig, StoreSpec
from inference_server.analytics.store.postgres import PostgresStore
from inference_server.config import AnalyticsSettings
from tests.server.server_process import free_port


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout: float = 120.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def event(i: int) -> InferenceEvent:
    return InferenceEvent(
        model="gemma",
        route="/v1/chat/completions",
        status=200,
        latency_ms=float(i % 500),
        completion_tokens=i % 50,
        generation_ms=float(i % 500),
    )


async def ids_in_db(dsn: str, prefix_ids: set[str]) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT event_id::text FROM analytics_all_events WHERE event_id = ANY($1::uuid[])",
            list(prefix_ids),
        )
    except asyncpg.UndefinedTableError:  # not migrated yet
        return []
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def dead_letters(dsn: str) -> dict[bytes, tuple[str, str]]:
    """Every dead letter in the database: its value → (topic, reason)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT value, topic, reason FROM analytics_dead_letters")
    finally:
        await conn.close()
    return {bytes(r[0]): (r[1], r[2]) for r in rows}


def letter_of(letters: dict[bytes, tuple[str, str]], event_id: str) -> tuple[str, str] | None:
    """The dead letter of the event with this id, if any."""
    for value, letter in letters.items():
        if value.startswith(b"{") and orjson.loads(value).get("event_id") == event_id:
            return letter
    return None


def kafka_node(
    tmp_path: Path, bootstrap: str, topic_prefix: str, pg_dsn: str, node_id: str
) -> Analytics:
    """A node's analytics with Kafka (producer and sink) and PostgreSQL."""
    return Analytics(
        settings(
            tmp_path, kafka_bootstrap=bootstrap, topic_prefix=topic_prefix, postgres_dsn=pg_dsn
        ),
        node_id=node_id,
        data_dir=tmp_path,
    )


def settings(tmp_path: Path, **kw: Any) -> AnalyticsSettings:
    base: dict[str, Any] = {
        "spool_dir": tmp_path / "spool",
        "consumer_group": f"g-{uuid.uuid4().hex[:8]}",
        "linger_ms": 5,
        "rollup_interval": 3600,
        "retention_interval": 3600,
    }
    base.update(kw)
    return AnalyticsSettings(**base)


async def test_kafka_killed_mid_stream_every_event_lands_exactly_once(
    tmp_path: Path, own_kafka: PrivateKafka, pg_dsn: str, topic_prefix: str
) -> None:
    analytics = kafka_node(tmp_path, own_kafka.bootstrap, topic_prefix, pg_dsn, "node-a")
    await analytics.start()
    emitted: set[str] = set()
    order: list[str] = []
    try:
        for i in range(1500):
            order.append(analytics.emit(event(i)))
            emitted.add(order[-1])
            if i % 100 == 0:
                await asyncio.sleep(0.05)
        await wait_for(
            lambda: _stored_some(pg_dsn, emitted), what="the first events to reach PostgreSQL"
        )
        own_kafka.kill()  # mid-stream: the producer and the sink both lose the broker
        for i in range(1500, 3000):
            order.append(analytics.emit(event(i)))
            emitted.add(order[-1])
            if i % 100 == 0:
                await asyncio.sleep(0.05)

        async def spooled() -> bool:
            return analytics.spool.backlog > 0 and not analytics.delivery.connected

        await wait_for(spooled, 60, "the spool to hold the outage's events")
        assert analytics.health()["healthy"] is False
        own_kafka.start()

        async def all_stored() -> bool:
            return len(await ids_in_db(pg_dsn, emitted)) == len(emitted)

        await wait_for(all_stored, 180, "every event to reach PostgreSQL after the restart")
        stored = await ids_in_db(pg_dsn, emitted)
        assert len(stored) == len(set(stored)) == 3000
        assert set(stored) == emitted
        assert analytics.spool.backlog == 0
        # Replayed in order: batches in flight at the kill are sent again, so the topic may
        # hold an event twice, but no event appears before the first copy of an earlier one.
        in_topic = await topic_event_ids(own_kafka.bootstrap, topic_prefix)
        assert list(dict.fromkeys(in_topic)) == order
        print(f"store path: {analytics.store.kind}; sent again: {len(in_topic) - len(order)}")
    finally:
        await analytics.stop()


async def topic_event_ids(bootstrap: str, prefix: str) -> list[str]:
    """Every event id in the inference topic, in the partition's order (one partition)."""
    topic = topic_name(prefix, InferenceEvent.TYPE, InferenceEvent.VERSION)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        ids: list[str] = []
        while batches := await consumer.getmany(timeout_ms=2000):
            for records in batches.values():
                ids += [orjson.loads(r.value)["event_id"] for r in records if r.value]
        return ids
    finally:
        await consumer.stop()


async def _stored_some(dsn: str, ids: set[str]) -> bool:
    return len(await ids_in_db(dsn, ids)) > 0


class CrashAfterInsert:
    """A store whose n-th insert commits and then 'crashes' before the offsets are committed."""

    def __init__(self, store: PostgresStore, crash_on: int) -> None:
        self.store = store
        self.crash_on = crash_on
        self.calls = 0
        self.crashed = asyncio.Event()

    async def insert(self, events: list[dict[str, Any]]) -> int:
        self.calls += 1
        call = self.calls  # writes overlap: the counter may move on while this one awaits
        added = await self.store.insert(events)
        if call == self.crash_on:
            self.crashed.set()
            await asyncio.Event().wait()  # hangs here until the task is cancelled ("killed")
        return added


async def test_sink_killed_resumes_from_committed_offsets_without_duplicates(
    tmp_path: Path, kafka_bootstrap: str, pg_dsn: str, topic_prefix: str
) -> None:
    producer_side = Analytics(
        settings(tmp_path, kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, sink=False),
        node_id="node-b",
        data_dir=tmp_path,
    )
    await producer_side.start()
    emitted = {producer_side.emit(event(i)) for i in range(2000)}
    await wait_for(lambda: _true(producer_side.delivered == 2000), 60, "the events to reach Kafka")
    await producer_side.stop()

    store = PostgresStore(pg_dsn)
    await store.open()
    topics = sink_topics(topic_prefix)
    group = f"g-{uuid.uuid4().hex[:8]}"
    try:
        crashing = CrashAfterInsert(store, crash_on=2)
        first = KafkaSink(
            kafka_bootstrap, topics=topics, group_id=group, store=crashing, max_records=300
        )  # type: ignore[arg-type]
        task = asyncio.create_task(first.run())
        await asyncio.wait_for(crashing.crashed.wait(), 30)
        # Two writes are in flight at once: batch 1's offsets are committed once its write is
        # done, in order, whatever batch 2 (hung) and batch 3 (written meanwhile) do.
        await wait_for(lambda: _true(first.consumed > 0), 30, "batch 1's offsets")
        task.cancel()  # killed between the durable write and the offset commit
        with pytest.raises(asyncio.CancelledError):
            await task
        partial = len(await ids_in_db(pg_dsn, emitted))
        assert 0 < partial < 2000

        second = KafkaSink(kafka_bootstrap, topics=topics, group_id=group, store=store)
        task = asyncio.create_task(second.run())
        try:

            async def finished() -> bool:  # rows durable, then the offsets committed
                done = second.consumed >= 2000 - first.consumed
                return done and await _count_is(pg_dsn, emitted, 2000)

            await wait_for(finished, 120, "the second sink to finish")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # Resumed from the committed offsets (batch 1 is not read again), and the batch whose
        # commit was lost was re-read but added nothing: exactly once.
        assert first.consumed > 0
        assert second.consumed == 2000 - first.consumed
        assert second.stored == 2000 - partial
        assert second.consumed > second.stored  # the uncommitted batch came back, added nothing
        stored = await ids_in_db(pg_dsn, emitted)
        assert len(stored) == 2000 and set(stored) == emitted
    finally:
        await store.close()


async def _true(value: bool) -> bool:
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_sink_worker_killed_is_started_again_and_nothing_is_lost(
    tmp_path: Path, kafka_bootstrap: str, pg_dsn: str, topic_prefix: str
) -> None:
    """The sink runs in a worker process of its own (sink_process.py). SIGKILLed mid-stream,
    it is started again, resumes from the committed offsets, and every event is stored once;
    the restart shows in health and metrics, and no worker outlives the node's analytics."""
    analytics = kafka_node(tmp_path, kafka_bootstrap, topic_prefix, pg_dsn, "node-w")
    await analytics.start()
    try:
        sink = analytics.sink
        assert sink is not None
        emitted = {analytics.emit(event(i)) for i in range(1000)}
        await wait_for(lambda: _stored_some(pg_dsn, emitted), 60, "the first events")
        killed = sink.pid
        assert killed is not None and killed != os.getpid()
        os.kill(killed, signal.SIGKILL)
        emitted |= {analytics.emit(event(i)) for i in range(1000, 3000)}
        await wait_for(
            lambda: _true(sink.restarts == 1 and sink.pid not in (None, killed)),
            60,
            "a new sink worker",
        )
        await wait_for(lambda: _count_is(pg_dsn, emitted, 3000), 120, "every event, once")
        await wait_for(
            lambda: _true(sink.connected and sink.stored > 0), 60, "the new worker to report"
        )
        health = analytics.health()
        assert health["events"]["sink_restarts"] == 1
        assert health["kafka"]["sink_connected"] is True
        assert sink.stored <= 3000  # the killed worker's last writes may go unreported
        metrics = {m.name: m for m in AnalyticsCollector(analytics).collect()}
        assert metrics["prime_spark_analytics_sink_restarts"].samples[0].value == 1
        worker = sink.pid
        assert worker is not None
    finally:
        await analytics.stop()
    assert not _alive(worker)
    assert sink.pid is None


async def test_sink_worker_says_why_it_cannot_store_and_ends_with_its_server(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The worker started by hand as the server starts it: with PostgreSQL unreachable it
    reports why in its status (the events wait in Kafka), and when its stdin closes, as the
    kernel closes it when the server dies, it ends on its own."""
    config = SinkConfig(
        bootstrap=kafka_bootstrap,
        topics=sink_topics(topic_prefix),
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        store=StoreSpec(postgres_dsn=f"postgresql://u:secret@127.0.0.1:{free_port()}/db"),
    )
    proc = await asyncio.create_subprocess_exec(
        *WORKER_COMMAND,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        proc.stdin.write(config.to_line())
        await proc.stdin.drain()
        status: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while not (status.get("last_error") or "").startswith("store:"):
                status = json.loads(await proc.stdout.readline())
        assert status["connected"] is False and status["stored"] == 0
        proc.stdin.close()
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _count_is(dsn: str, ids: set[str], n: int) -> bool:
    return len(await ids_in_db(dsn, ids)) == n


async def test_restart_with_a_full_spool_replays_everything(
    tmp_path: Path, kafka_bootstrap: str, pg_dsn: str, topic_prefix: str
) -> None:
    """Kafka unreachable (nothing listens there), the server stops with a full spool, and the
    next start (now pointed at the real broker) replays it all."""
    dead = f"127.0.0.1:{free_port()}"
    first = Analytics(
        settings(tmp_path, kafka_bootstrap=dead, topic_prefix=topic_prefix, postgres_dsn=pg_dsn),
        node_id="node-c",
        data_dir=tmp_path,
    )
    await first.start()
    emitted = {first.emit(event(i)) for i in range(2500)}
    await wait_for(lambda: _true(first.spool.backlog == 2500), 30, "the spool to take the events")
    await first.stop()
    assert len(await ids_in_db(pg_dsn, emitted)) == 0
    assert sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.log")) > 0

    second = Analytics(
        settings(
            tmp_path,
            kafka_bootstrap=kafka_bootstrap,
            topic_prefix=topic_prefix,
            postgres_dsn=pg_dsn,
        ),
        node_id="node-c",
        data_dir=tmp_path,
    )
    await second.start()
    try:
        assert second.spool.backlog == 2500
        await wait_for(lambda: _count_is(pg_dsn, emitted, 2500), 120, "the replay")
        assert second.spool.backlog == 0
        assert second.kafka_connected
    finally:
        await second.stop()


async def test_schema_violations_are_rejected_with_a_clear_error(
    tmp_path: Path, kafka_bootstrap: str, pg_dsn: str, topic_prefix: str
) -> None:
    analytics = kafka_node(tmp_path, kafka_bootstrap, topic_prefix, pg_dsn, "node-d")
    await analytics.start()
    try:
        bad = InferenceEvent(model="m", route="/v1/x", status=200, latency_ms=-5)
        with pytest.raises(EventSchemaError, match=r"inference\.v2: data/latency_ms: -5 is less"):
            analytics.emit(bad)
        assert analytics.rejected["emit"] == 1
        # A time the caller gives is checked with the rest of the envelope.
        good = InferenceEvent(model="m", route="/v1/x", status=200, latency_ms=5)
        with pytest.raises(EventSchemaError, match=r"inference\.v2: occurred_at: -1 is less"):
            analytics.emit(good, occurred_at=-1)
        assert analytics.rejected["emit"] == 2
        with pytest.raises(ValueError, match="node id must be 1 to 64 characters"):
            Analytics(settings(tmp_path), node_id="n" * 65, data_dir=tmp_path)
        # Someone else writes garbage and a schema-breaking event to our topic: the sink
        # rejects them, keeps the valid ones, and is not stuck on them (offsets move on).
        topic = topic_name(topic_prefix, "inference")
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"not json")
            await producer.send_and_wait(topic, b'{"event_id":"x","type":"inference","version":1}')
        finally:
            await producer.stop()
        good = analytics.emit(event(1))

        async def done() -> bool:
            sink = analytics.sink
            return (
                sink is not None
                and sink.rejected == 2
                and len(await ids_in_db(pg_dsn, {good})) == 1
            )

        await wait_for(done, 120, "the sink to reject two and store one")
        assert analytics.sink is not None
        assert "inference.v1" in (analytics.sink.last_rejection or "")
        # Both are kept as they came, with their reasons, before the offsets moved past them.
        letters = await dead_letters(pg_dsn)
        topic, reason = letters[b"not json"]
        assert topic == "inference.v1"
        assert reason.startswith("inference.v1: not JSON: invalid literal")
        topic, reason = letters[b'{"event_id":"x","type":"inference","version":1}']
        assert "inference.v1" in reason
        await wait_for(  # the sink worker reports its numbers every 0.2 s
            lambda: _true(analytics.health()["events"]["dead_letters_kept"] == 2),
            10,
            "the sink worker to report its dead letters",
        )
    finally:
        await analytics.stop()


async def test_an_event_the_store_cannot_hold_is_rejected_and_the_sink_goes_on(
    tmp_path: Path, kafka_bootstrap: str, pg_dsn: str, topic_prefix: str
) -> None:
    """A NUL character is valid in a JSON string and refused by PostgreSQL's text: such an
    event used to make every retry of its batch fail, and the sink stopped there for good. It
    is rejected alone now, with its id; the events around it and after it are stored."""
    analytics = kafka_node(tmp_path, kafka_bootstrap, topic_prefix, pg_dsn, "node-n")
    await analytics.start()
    try:
        before = [analytics.emit(event(i)) for i in range(20)]
        poisoned = envelope(
            InferenceEvent(model="gem\x00ma", route="/v1/x", status=200, latency_ms=1.0),
            node_id="node-other",
        )
        analytics.emit_envelope(poisoned)  # valid: the schema has no word against NUL
        after = [analytics.emit(event(i)) for i in range(20)]

        async def done() -> bool:
            sink = analytics.sink
            return (
                sink is not None
                and sink.rejected == 1
                and len(await ids_in_db(pg_dsn, {*before, *after})) == 40
            )

        await wait_for(done, 120, "the sink to store 40 events and reject one")
        assert analytics.sink is not None
        rejection = analytics.sink.last_rejection or ""
        assert f"the store refused event {poisoned['event_id']}" in rejection
        assert "0x00" in rejection
        assert await ids_in_db(pg_dsn, {poisoned["event_id"]}) == []
        letter = letter_of(await dead_letters(pg_dsn), poisoned["event_id"])
        assert letter is not None and letter[0] == "inference.v2" and "0x00" in letter[1]
        await wait_for(  # the sink worker reports its numbers every 0.2 s
            lambda: _true(analytics.health()["events"]["dead_letters_kept"] == 1),
            10,
            "the sink worker to report its dead letters",
        )
        later = analytics.emit(event(99))
        await wait_for(
            lambda: _has(pg_dsn, later), 60, "an event after the rejected one to be stored"
        )
    finally:
        await analytics.stop()


async def test_without_kafka_such_an_event_is_skipped_and_the_spool_moves_on(
    tmp_path: Path, pg_dsn: str
) -> None:
    """The same event on the spool's way straight into PostgreSQL (no Kafka): the cursor used to
    stop before its batch, and the spool to grow until its bound dropped events."""
    analytics = Analytics(
        settings(tmp_path, postgres_dsn=pg_dsn), node_id="node-s", data_dir=tmp_path
    )
    await analytics.start()
    try:
        ids = [analytics.emit(event(i)) for i in range(20)]
        poisoned = analytics.emit(
            InferenceEvent(model="gem\x00ma", route="/v1/x", status=200, latency_ms=1.0)
        )
        ids += [analytics.emit(event(i)) for i in range(20)]

        async def done() -> bool:
            return analytics.delivered == 41 and len(await ids_in_db(pg_dsn, set(ids))) == 40

        await wait_for(done, 60, "40 events stored and the spool past the 41st")
        assert analytics.rejected["store"] == 1 and analytics.skipped == 0
        assert analytics.spool.backlog == 0
        samples = {
            (sample.name, sample.labels.get("stage")): sample.value
            for family in AnalyticsCollector(analytics).collect()
            for sample in family.samples
        }
        assert samples["prime_spark_analytics_events_rejected_total", "store"] == 1
        assert samples["prime_spark_analytics_dead_letters_kept_total", None] == 1
        letter = letter_of(await dead_letters(pg_dsn), poisoned)
        assert letter is not None and "0x00" in letter[1]
    finally:
        await analytics.stop()


async def _has(dsn: str, event_id: str) -> bool:
    return len(await ids_in_db(dsn, {event_id})) == 1


async def test_embedded_default_spools_straight_into_sqlite(tmp_path: Path) -> None:
    """No Kafka, no PostgreSQL: spool → SQLite, and a restart with a backlog replays it."""
    first = Analytics(settings(tmp_path), node_id="node-e", data_dir=tmp_path)
    await first.start()
    ids = {first.emit(event(i)) for i in range(500)}
    await wait_for(lambda: _sqlite_count(first, 500), 30, "SQLite to take the events")
    assert first.health()["store"] == "sqlite"
    assert first.kafka_connected is None
    summary = await first.summary("5m")
    assert summary["requests"] == 500
    job = await first.scheduler.run_job("rollup")
    assert job.last_result == "ok" and job.last_detail == {
        "new_rows": 500,
        "buckets": job.last_detail["buckets"],  # type: ignore[index]
    }
    await first.stop()
    assert len(ids) == 500

    second = Analytics(settings(tmp_path), node_id="node-e", data_dir=tmp_path)
    await second.start()
    try:
        assert await second.store.count("analytics_inference") == 500
    finally:
        await second.stop()


async def _sqlite_count(analytics: Analytics, n: int) -> bool:
    return await analytics.store.count("analytics_inference") == n


class TcpProxy:
    """A loopback TCP forwarder to the real PostgreSQL that a test can take down and bring
    back: the database 'goes away' for this test alone, never for the other engineers."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()  # returns once the cut connections are gone

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def test_postgres_down_at_start_and_mid_stream_loses_nothing(
    tmp_path: Path, pg_dsn: str
) -> None:
    """No Kafka, PostgreSQL configured: the store is unreachable at start, comes back, goes
    away mid-stream and comes back again; the spool holds everything meanwhile."""
    from urllib.parse import urlsplit

    url = urlsplit(pg_dsn)
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    dsn = pg_dsn.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}")
    analytics = Analytics(settings(tmp_path, postgres_dsn=dsn), node_id="node-f", data_dir=tmp_path)
    await analytics.start()  # nothing listens yet
    emitted: set[str] = set()
    try:
        assert analytics.store_error is not None
        assert analytics.health()["healthy"] is False
        emitted |= {analytics.emit(event(i)) for i in range(400)}
        await wait_for(lambda: _true(analytics.spool.backlog == 400), 30, "the spool")
        await proxy.start()
        await wait_for(lambda: _count_is(pg_dsn, emitted, 400), 60, "the store to come back")
        assert analytics.store_error is None
        await proxy.stop()  # mid-stream
        emitted |= {analytics.emit(event(i)) for i in range(400, 800)}
        await wait_for(lambda: _true(analytics.spool.backlog >= 400), 30, "the second outage")
        await proxy.start()
        await wait_for(lambda: _count_is(pg_dsn, emitted, 800), 90, "every event once")
        assert analytics.spool.backlog == 0
    finally:
        await analytics.stop()
        await proxy.stop()
