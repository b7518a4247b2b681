"""Analytics throughput: our producer against Kafka's own ProducerPerformance, and end to end
into PostgreSQL, on the same broker in the same run.

  (a) Kafka ``ProducerPerformance`` (the kafka-tools jar, JVM): N records of our average event
      size, with the producer settings ours uses (acks=all, idempotence, the same codec,
      linger, 512 KiB batches). Its rate includes the JVM's start and warm-up, so it grows with
      N (on the 2-CPU dev machine: ~75k/s for 100k records, ~140k/s for 500k, ~180k/s for
      1M); the default N, 500k, keeps that share small and fits the server's default spool;
  (b) ours, one Python process: what the server does per request (``emit_data`` of the
      request's ``inference_data``: the dict, the schema check, the queue), the spool (append +
      fsync per batch) and the aiokafka producer, timed from the first emit until Kafka
      acknowledged the last event; the emit-only rate is reported too;
  (c) the sink alone: a consumer group reading (b)'s N events into a fresh PostgreSQL database
      (COPY straight into each event type's table), timed from the moment its consumer holds
      every partition until all N rows are there;
  (d) end to end on one node: its server process (emit → spool → Kafka) and its sink worker
      process (Kafka → PostgreSQL), timed from the first emit (the topics made and the sink
      joined, as on a running node) until the N-th row is stored;
  (e) the embedded default: emit → spool → SQLite;
  (f) end to end as two nodes on this machine (as the add-on runs on an edge node with
      ``sink: false`` and a node with the database): one node's process emits, the other
      node's sink worker writes; timed as (d).

Every path checks that exactly N distinct events arrived (zero lost, zero duplicated). Each
path also reports the CPU per event of our processes (for (a): the JVM), of PostgreSQL and of
the Kafka broker, and the rate the machine's CPUs would bound it to if all of them did nothing
else: what no tuning of one process can beat. (c) and (d) also report the longest stalls of
the event loop that runs the sink (c) or the server's emitting (d): what a request the node
serves meanwhile may wait.
Usage (from the repo root, with ``scripts/services start`` done)::

    eval "$(scripts/services env)"
    scripts/shell python bench/analytics.py [--events N] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiokafka
import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import percentile, processes_cpu_seconds
from inference_server.analytics import Analytics, InferenceEvent
from inference_server.analytics.events import encode, envelope_data, sink_topics
from inference_server.analytics.kafka import KafkaSink
from inference_server.analytics.requests import InferenceRecord, inference_data
from inference_server.analytics.sink_process import SinkProcess
from inference_server.analytics.store.postgres import PostgresStore
from inference_server.config import COMPRESSIONS, AnalyticsSettings

KAFKA_LIBS = Path(os.environ.get("PRIME_SPARK_KAFKA_LIBS", "/opt/prime-spark/kafka-4.4.0/libs"))
SECTION = "## Analytics pipeline (bench/analytics.py)"


RECORDS = [
    InferenceRecord(
        model="gemma-3-270m",
        prompt_tokens=20 + i % 30,
        completion_tokens=i % 64,
        generation_seconds=(40 + i % 300) / 1000,
    )
    for i in range(1000)
]
"""The requests' own records (each request's handler fills one in while it runs), made before
the clock starts as ProducerPerformance makes its payloads: what is timed is analytics."""


def request_data(i: int) -> dict[str, Any]:
    """The ``data`` of the i-th request's inference event, built as the server builds it."""
    return inference_data(
        RECORDS[i % 1000],
        model="gemma-3-270m",
        route="/v1/chat/completions",
        status=200,
        stream=False,
        elapsed=(50 + i % 400) / 1000,
    )


def emit_request(analytics: Analytics, i: int) -> None:
    """What the server does for every request it answers (``requests._emit``): the event's data
    built from the request's record as a dict, then validated, encoded and queued (the typed
    ``InferenceEvent`` the server never builds on this path would add ~2.5 µs per event)."""
    analytics.emit_data(InferenceEvent, request_data(i))


def event_size() -> int:
    return len(encode(envelope_data(InferenceEvent, request_data(1), node_id="bench-node")))


def producer_performance(
    bootstrap: str, topic: str, n: int, size: int, compression: str
) -> dict[str, Any]:
    command = [
        "java",
        "--sun-misc-unsafe-memory-access=allow",
        "-Xmx512m",
        "-cp",
        f"{KAFKA_LIBS}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(n),
        "--record-size",
        str(size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        f"compression.type={compression}",
        "linger.ms=20",
        "batch.size=524288",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    last = [line for line in out.splitlines() if "records sent" in line][-1]
    match = re.search(r"(\d+) records sent, ([\d.]+) records/sec", last)
    assert match, last
    return {"events": int(match.group(1)), "rate": float(match.group(2)), "line": last.strip()}


def services_cpu() -> tuple[float, float]:
    """CPU seconds so far of PostgreSQL (all its processes) and of the Kafka broker."""
    return (
        processes_cpu_seconds(lambda comm, _: comm == "postgres"),
        processes_cpu_seconds(lambda _, argv: "kafka.Kafka" in argv),
    )


class CpuMeter:
    """CPU per event of this process (or its children: ProducerPerformance's JVM), PostgreSQL
    and the broker over one path: what the machine's cores spent, not only ours."""

    def __init__(self, n: int, *, children: bool = False, both: bool = False) -> None:
        self._n = n
        self._who = (
            (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            if both
            else (resource.RUSAGE_CHILDREN,)
            if children
            else (resource.RUSAGE_SELF,)
        )

    def _own(self) -> float:
        usages = [resource.getrusage(who) for who in self._who]
        return sum(u.ru_utime + u.ru_stime for u in usages)

    def __enter__(self) -> dict[str, float]:
        self._start = (self._own(), *services_cpu())
        self.result: dict[str, float] = {}
        return self.result

    def __exit__(self, *exc: object) -> None:
        end = (self._own(), *services_cpu())
        own, pg, broker = (1e6 * (b - a) / self._n for a, b in zip(self._start, end, strict=True))
        self.result.update(cpu_us=own, pg_us=pg, kafka_us=broker)


async def wait(condition: Callable[[], Awaitable[bool]], limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.05)


async def _true(value: bool) -> bool:
    return value


def settings(tmp: Path, **kw: Any) -> AnalyticsSettings:
    return AnalyticsSettings(
        spool_dir=tmp / f"spool-{uuid.uuid4().hex[:6]}",
        queue_size=10_000_000,
        consumer_group=f"bench-{uuid.uuid4().hex[:8]}",
        rollup_interval=3600,
        retention_interval=3600,
        **kw,
    )


async def started_node(tmp: Path, **kw: Any) -> Analytics:
    """A node's analytics (:func:`settings` with ``kw``), started, its delivery connected first:
    connection setup is not throughput."""
    analytics = Analytics(settings(tmp, **kw), node_id="bench-node", data_dir=tmp)
    await analytics.start()
    await analytics.delivery.probe()
    return analytics


async def emit_requests(analytics: Analytics, n: int) -> None:
    for i in range(n):
        emit_request(analytics, i)
        if i % 2000 == 1999:
            await asyncio.sleep(0)  # let the writer and the producer run, as a server would


async def ours_produce(
    bootstrap: str, prefix: str, n: int, tmp: Path, compression: str
) -> dict[str, Any]:
    analytics = await started_node(
        tmp, kafka_bootstrap=bootstrap, topic_prefix=prefix, sink=False, compression=compression
    )
    try:
        start = time.perf_counter()
        await emit_requests(analytics, n)
        emitted = time.perf_counter()
        await wait(lambda: _true(analytics.delivered >= n))
        done = time.perf_counter()
        assert analytics.delivered == n
        assert analytics.dropped_queue_full == 0
    finally:
        await analytics.stop()
    return {"emit_rate": n / (emitted - start), "rate": n / (done - start), "seconds": done - start}


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(DISTINCT event_id) FROM analytics_all_events"))
    finally:
        await conn.close()


async def create_topics(bootstrap: str, prefix: str) -> list[str]:
    """The sink's topics, made before a run as a running node has them (the broker's defaults:
    one partition each); a topic that appears later reaches the sink only at its next metadata
    refresh (up to 5 s), a one-off that is not throughput."""
    topics = sink_topics(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        missing = set(topics) - set(await admin.list_topics())
        if missing:
            await admin.create_topics([NewTopic(t, 1, 1) for t in sorted(missing)])
    finally:
        await admin.close()
    return topics


async def joined(sink: KafkaSink | SinkProcess, topics: list[str]) -> None:
    """Until the sink's consumer has joined its group and holds every partition (one per topic,
    :func:`create_topics`): joining is not throughput either."""
    await wait(lambda: _true(sink.partitions >= len(topics)), limit=60)


class LoopStalls:
    """How late the running loop wakes a task that sleeps :attr:`STEP` seconds at a time: each
    lateness is a stall, time in which any other task on that loop (a request handler) waits."""

    STEP = 0.005

    async def __aenter__(self) -> LoopStalls:
        self.stalls: list[float] = []
        self._task = asyncio.create_task(self._probe())
        return self

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.STEP)
            self.stalls.append(loop.time() - start - self.STEP)

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def result(self) -> dict[str, float]:
        ordered = sorted(self.stalls) or [0.0]
        return {
            "stall_p99_ms": 1000 * percentile(ordered, 0.99),
            "stall_max_ms": 1000 * ordered[-1],
        }


async def sink_only(bootstrap: str, prefix: str, n: int, dsn: str) -> dict[str, Any]:
    store = PostgresStore(dsn)
    await store.open()
    topics = await create_topics(bootstrap, prefix)
    sink = KafkaSink(
        bootstrap,
        topics=topics,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        store=store,
    )
    task = asyncio.create_task(sink.run())
    try:
        await joined(sink, topics)
        async with LoopStalls() as stalls:
            start = time.perf_counter()
            await wait(lambda: _true(sink.stored >= n))
            seconds = time.perf_counter() - start
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        kind = store.kind
        await store.close()
    rows = await count_rows(dsn)
    return {"rate": n / seconds, "seconds": seconds, "rows": rows, "store": kind} | (
        stalls.result()
    )


async def end_to_end(
    bootstrap: str, prefix: str, n: int, dsn: str, tmp: Path, compression: str
) -> dict[str, Any]:
    topics = await create_topics(bootstrap, prefix)
    analytics = await started_node(
        tmp,
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        postgres_dsn=dsn,
        compression=compression,
    )
    try:
        sink = analytics.sink
        assert sink is not None
        await joined(sink, topics)
        async with LoopStalls() as stalls:
            start = time.perf_counter()
            await emit_requests(analytics, n)
            await wait(lambda: _true(sink.stored >= n))
            seconds = time.perf_counter() - start
    finally:
        await analytics.stop()
    rows = await count_rows(dsn)
    return {"rate": n / seconds, "seconds": seconds, "rows": rows} | stalls.result()


def _sink_node(
    bootstrap: str, prefix: str, n: int, dsn: str, tmp: Path, ready: Any, done: Any
) -> None:
    """(f)'s second node, in its own process: a server's analytics with the sink (in its
    worker, a child of this process) and PostgreSQL, emitting nothing. Puts the time its sink
    stored the N-th row on ``done`` (``perf_counter`` is the system's monotonic clock, the same
    in every process)."""

    async def run() -> None:
        analytics = await started_node(
            tmp, kafka_bootstrap=bootstrap, topic_prefix=prefix, postgres_dsn=dsn
        )
        try:
            sink = analytics.sink
            assert sink is not None
            await joined(sink, sink_topics(prefix))
            ready.set()
            await wait(lambda: _true(sink.stored >= n))
            done.put(time.perf_counter())
        finally:
            await analytics.stop()

    asyncio.run(run())


async def two_nodes(
    bootstrap: str, prefix: str, n: int, dsn: str, tmp: Path, compression: str
) -> dict[str, Any]:
    """(f): the same pipeline as two nodes on this machine, as the add-on is deployed with
    several nodes: one emits with ``sink: false``, the other runs the sink into PostgreSQL."""
    await create_topics(bootstrap, prefix)
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Queue()
    node = context.Process(
        target=_sink_node, args=(bootstrap, prefix, n, dsn, tmp, ready, done), daemon=True
    )
    node.start()
    analytics = await started_node(
        tmp, kafka_bootstrap=bootstrap, topic_prefix=prefix, sink=False, compression=compression
    )
    try:
        if not await asyncio.to_thread(ready.wait, 120):
            raise TimeoutError("the sink node did not join its group")
        start = time.perf_counter()
        await emit_requests(analytics, n)
        finished = await asyncio.to_thread(done.get, True, 600)
    finally:
        await analytics.stop()
        await asyncio.to_thread(node.join, 60)
        if node.is_alive():
            node.kill()
    seconds = finished - start
    return {"rate": n / seconds, "seconds": seconds, "rows": await count_rows(dsn)}


async def embedded(n: int, tmp: Path) -> dict[str, Any]:
    analytics = await started_node(tmp, sqlite_path=tmp / "bench.sqlite3")
    try:
        start = time.perf_counter()
        await emit_requests(analytics, n)
        await wait(lambda: _true(analytics.delivered >= n))
        seconds = time.perf_counter() - start
        rows = await analytics.store.count()
    finally:
        await analytics.stop()
    return {"rate": n / seconds, "seconds": seconds, "rows": rows}


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """The run's topics on the shared broker (ours, end to end, ProducerPerformance's)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def fresh_db(base: str) -> tuple[str, str]:
    name = f"ps_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(base)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    return base.rsplit("/", 1)[0] + "/" + name, name


async def drop_db(base: str, name: str) -> None:
    """Retried: TimescaleDB's background worker may hold a connection to the database for a
    moment, and ``WITH (FORCE)`` may not end a superuser's session."""
    conn = await asyncpg.connect(base)
    try:
        for attempt in range(10):
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                return
            except asyncpg.PostgresError:
                if attempt == 9:
                    raise
                await asyncio.sleep(1.0)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default=AnalyticsSettings().compression,
        help="codec of both producers (default: the server's default)",
    )
    parser.add_argument(
        "--prefix", help="topic name prefix on the shared broker (default: a random one)"
    )
    args = parser.parse_args()
    bootstrap = os.environ["PRIME_SPARK_TEST_KAFKA_BOOTSTRAP"]
    pg = os.environ["PRIME_SPARK_TEST_POSTGRES_DSN"]
    n = args.events
    size = event_size()
    prefix = args.prefix or f"bench{uuid.uuid4().hex[:8]}"
    codec = args.compression
    print(f"{n} events of {size} bytes; broker {bootstrap}; topics {prefix}.*", flush=True)

    load = os.getloadavg()[0]
    with CpuMeter(n, children=True) as cpu_a:
        kafka = producer_performance(bootstrap, f"{prefix}-perf", n, size, codec)
    kafka.update(cpu_a)
    print(f"(a) ProducerPerformance: {kafka['rate']:.0f} records/s  [{kafka['line']}]", flush=True)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with CpuMeter(n) as cpu_b:
            ours = asyncio.run(ours_produce(bootstrap, prefix, n, tmp, codec))
        ours.update(cpu_b)
        print(
            f"(b) ours: {ours['rate']:.0f} events/s acknowledged "
            f"(emit alone {ours['emit_rate']:.0f}/s; {ours['cpu_us']:.1f} µs CPU per event)",
            flush=True,
        )
        dsn, name = asyncio.run(fresh_db(pg))
        try:
            with CpuMeter(n) as cpu_c:
                sink = asyncio.run(sink_only(bootstrap, prefix, n, dsn))
            sink.update(cpu_c)
            print(
                f"(c) sink → {sink['store']}: {sink['rate']:.0f} events/s, {sink['rows']} rows; "
                f"the loop's stalls {stalls_text(sink)}",
                flush=True,
            )
        finally:
            asyncio.run(drop_db(pg, name))
        dsn, name = asyncio.run(fresh_db(pg))
        try:
            with CpuMeter(n, both=True) as cpu_d:  # the sink worker is a child
                e2e = asyncio.run(end_to_end(bootstrap, prefix + "e2e", n, dsn, tmp, codec))
            e2e.update(cpu_d)
            print(
                f"(d) end to end: {e2e['rate']:.0f} events/s, {e2e['rows']} rows; "
                f"the loop's stalls {stalls_text(e2e)}",
                flush=True,
            )
        finally:
            asyncio.run(drop_db(pg, name))
        dsn, name = asyncio.run(fresh_db(pg))
        try:
            with CpuMeter(n, both=True) as cpu_f:
                split = asyncio.run(two_nodes(bootstrap, prefix + "two", n, dsn, tmp, codec))
            split.update(cpu_f)
            print(f"(f) two nodes: {split['rate']:.0f} events/s, {split['rows']} rows", flush=True)
        finally:
            asyncio.run(drop_db(pg, name))
        with CpuMeter(n) as cpu_e:
            local = asyncio.run(embedded(n, tmp))
        local.update(cpu_e)
        print(
            f"(e) embedded SQLite: {local['rate']:.0f} events/s, {local['rows']} rows", flush=True
        )
    paths = (("a", kafka), ("b", ours), ("c", sink), ("d", e2e), ("e", local), ("f", split))
    for label, result in paths:
        print(
            f"({label}) CPU µs/event: producer/sink process {result['cpu_us']:.1f}, PostgreSQL "
            f"{result['pg_us']:.1f}, Kafka broker {result['kafka_us']:.1f}"
        )

    asyncio.run(delete_topics(bootstrap, prefix))
    ratio = ours["rate"] / kafka["rate"]
    print(f"ratio ours / ProducerPerformance: {ratio:.3f}")
    lost = {
        "c": n - sink["rows"],
        "d": n - e2e["rows"],
        "e": n - local["rows"],
        "f": n - split["rows"],
    }
    print(f"lost (expected events - distinct rows): {lost}")
    if args.out:
        write_results(
            args.out, n, size, codec, load, kafka, ours, sink, e2e, local, split, ratio, lost
        )


def stalls_text(result: dict[str, Any]) -> str:
    return f"p99 {result['stall_p99_ms']:.1f} ms, longest {result['stall_max_ms']:.1f} ms"


def write_results(
    out: Path,
    n: int,
    size: int,
    codec: str,
    load: float,
    kafka: dict[str, Any],
    ours: dict[str, Any],
    sink: dict[str, Any],
    e2e: dict[str, Any],
    local: dict[str, Any],
    split: dict[str, Any],
    ratio: float,
    lost: dict[str, int],
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = f"aiokafka {aiokafka.__version__}, asyncpg {asyncpg.__version__}"
    command = 'eval "$(scripts/services env)"; scripts/shell python bench/analytics.py'
    rows = [
        ("(a) Kafka ProducerPerformance (JVM, kafka-tools)", kafka, n / kafka["rate"], "-", "-"),
        (
            "(b) ours: request emit → validate → spool (fsync) → aiokafka, until acked",
            ours,
            ours["seconds"],
            "-",
            "-",
        ),
        ("(b') ours: emit alone (validate + enqueue: what a request pays)", None, None, "-", "-"),
        (
            f"(c) sink alone: consumer group → {sink['store']} (COPY)",
            sink,
            sink["seconds"],
            sink["rows"],
            lost["c"],
        ),
        (
            "(d) end to end, one node: emit → Kafka → its sink worker → PostgreSQL",
            e2e,
            e2e["seconds"],
            e2e["rows"],
            lost["d"],
        ),
        (
            "(e) embedded default: emit → spool → SQLite",
            local,
            local["seconds"],
            local["rows"],
            lost["e"],
        ),
        (
            "(f) end to end, two nodes (processes): emit → Kafka → the other's sink → PostgreSQL",
            split,
            split["seconds"],
            split["rows"],
            lost["f"],
        ),
    ]
    lines = [
        SECTION,
        "",
        f"- date: {now}",
        f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, {versions}; Kafka 4.4.0 (the shared KRaft broker)",
        f"- load average (1 min) at the start: {load:.1f}, at the end: {os.getloadavg()[0]:.1f}"
        " (the machine is shared: rates move with the load; CPU µs per event of our"
        " processes moves much less)",
        f"- {n} events of {size} bytes (an inference event as encoded); both producers: acks=all,"
        f" idempotence, {codec}, linger 20 ms, 512 KiB batches",
        f"- command: `{command} --events {n} --compression {codec} --out bench/RESULTS.md`",
        "",
        "| path | events/s | seconds | rows in store (distinct) | lost | CPU µs/event: our"
        " processes (a: the JVM) | PostgreSQL | Kafka broker | all | bound: CPUs / all, events/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    cores = os.cpu_count() or 1
    for label, result, seconds, stored, missing in rows:
        secs = "-" if seconds is None else f"{seconds:.2f}"
        if result is None:  # (b'): the emit-only rate of (b)'s run
            lines.append(f"| {label} | {ours['emit_rate']:.0f} | - | - | - | - | - | - | - | - |")
            continue
        cpu = (result["cpu_us"], result["pg_us"], result["kafka_us"])
        total = sum(cpu)
        cells = " | ".join(f"{c:.1f}" for c in (*cpu, total))
        bound = f"{cores * 1e6 / total:.0f}" if total else "-"
        rate = f"{result['rate']:.0f}"
        lines.append(f"| {label} | {rate} | {secs} | {stored} | {missing} | {cells} | {bound} |")
    lines += [
        "",
        f"Ratio (b)/(a), ours vs ProducerPerformance: **{ratio:.3f}**. Issue goals: ≥ 100k "
        "events/s produced, ≥ 50k/s end to end, zero lost.",
        "",
        f"Stalls of the event loop (a task's lateness waking from 5 ms sleeps): (c), the sink on "
        f"the loop: {stalls_text(sink)}; (d), the server's loop, the sink in its worker: "
        f"{stalls_text(e2e)}.",
        "",
    ]
    text = out.read_text(encoding="utf-8") if out.exists() else "# Prime Spark benchmark results\n"
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        text = head + "\n".join(lines) + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines)
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
