"""PostgreSQL's CPU per stored inference event: the store's write, its replay, and the last
release's write.

    eval "$(scripts/services env)"
    scripts/shell python -m bench.pg_write [--events 100000] [--batch 20000] [--rounds 2]

The end-to-end analytics goal (bench/analytics.py (d)) is bound by the CPU every process spends
per event, and PostgreSQL's share was the largest. This measures that share alone, in a fresh
database with the store's own schema (TimescaleDB hypertables when the extension is there), by
the CPU time of every PostgreSQL process (the backends, the WAL writer, the checkpointer...)
while the same inference events are written in batches:

- ``store``: ``PostgresStore.insert`` of new events: one COPY straight into
  ``analytics_inference``, in a savepoint;
- ``replay``: the same batches written a second time (a Kafka redelivery after a sink crash):
  the COPY fails on the first stored id, and the batch goes the idempotent way (COPY into a
  staging table, ``INSERT … SELECT … ON CONFLICT DO NOTHING``), storing nothing;
- ``before``: the write of the release before (kept here as the yardstick): COPY into a staging
  table with the data as jsonb, then ``INSERT … ON CONFLICT`` into ``analytics_events`` (every
  event's JSON) and into ``analytics_inference`` (columns extracted from the jsonb).

And the scheduled rollup's wall time (``--rollup-events N``, 0 to skip), in a table of N
events spread over 30 days written as the sink writes them (no ``VACUUM`` between):
``PostgresStore.rollup`` of all but the last 1,000 at once (a long outage's spool replayed:
~43,000 minute buckets), then of the last 1,000 (the job's minute: ~150 minute buckets); then
the summary's reads for the 5 min, 1 h and 24 h windows (``totals`` and ``latency_at_rank``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from bench.analytics import drop_db, fresh_db, request_data
from bench.common import processes_cpu_seconds
from inference_server.analytics.events import InferenceEvent, envelope_data
from inference_server.analytics.store import postgres

VARIANTS = ("store", "replay", "before")

BEFORE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS analytics_staging (
    event_id uuid, type text, version integer, occurred_at timestamptz, node_id text,
    data jsonb) ON COMMIT DELETE ROWS
"""
BEFORE_INSERTS = (
    "INSERT INTO analytics_events SELECT * FROM analytics_staging ON CONFLICT DO NOTHING",
    """INSERT INTO analytics_inference (event_id, occurred_at, node_id, model, side, route,
        status, prompt_tokens, completion_tokens, latency_ms, generation_ms, cache, stream,
        served_for)
    SELECT event_id, occurred_at, node_id, data->>'model', data->>'side', data->>'route',
        (data->>'status')::integer, (data->>'prompt_tokens')::integer,
        (data->>'completion_tokens')::integer, (data->>'latency_ms')::double precision,
        (data->>'generation_ms')::double precision, data->>'cache', (data->>'stream')::boolean,
        data->>'served_for'
    FROM analytics_staging WHERE type = 'inference' ON CONFLICT DO NOTHING""",
)


def _events(n: int) -> list[dict[str, Any]]:
    """N inference events as the server builds them for its requests (bench/analytics.py's)."""
    return [envelope_data(InferenceEvent, request_data(i), node_id="bench-node") for i in range(n)]


async def _before(conn: asyncpg.Connection, chunk: list[dict[str, Any]]) -> None:
    await conn.execute(BEFORE_STAGING)
    records = [
        (e["event_id"], e["type"], e["version"],
         datetime.fromtimestamp(e["occurred_at"], UTC), e["node_id"],
         orjson.dumps(e["data"]).decode())
        for e in chunk
    ]  # fmt: skip
    await conn.copy_records_to_table("analytics_staging", records=records)
    for statement in BEFORE_INSERTS:
        await conn.execute(statement)


def postgres_cpu_seconds() -> float:
    return processes_cpu_seconds(lambda comm, _argv: comm == "postgres")


async def run(base: str, variant: str, n: int, batch: int) -> dict[str, Any]:
    dsn, name = await fresh_db(base)
    store = postgres.PostgresStore(dsn)
    try:
        await store.open()  # the store's migrations: its tables, hypertables when available
        events = _events(n)
        chunks = [events[start : start + batch] for start in range(0, n, batch)]
        if variant == "replay":
            for chunk in chunks:
                await store.insert(chunk)
        conn = await asyncpg.connect(dsn)
        try:
            started, cpu0 = time.perf_counter(), postgres_cpu_seconds()
            for chunk in chunks:
                if variant == "before":
                    async with conn.transaction():
                        await _before(conn, chunk)
                else:
                    await store.insert(chunk)
            wall, cpu = time.perf_counter() - started, postgres_cpu_seconds() - cpu0
        finally:
            await conn.close()
        rows = await store.count("analytics_inference")
        assert rows == n, (variant, rows)
        if variant == "replay":
            assert store.replayed_batches == len(chunks), store.replayed_batches
        return {"pg_us": cpu / n * 1e6, "wall_us": wall / n * 1e6, "store": store.kind}
    finally:
        await store.close()
        await drop_db(base, name)


WINDOWS = (("5m", 300), ("1h", 3600), ("24h", 86400))


async def rollup(base: str, n: int) -> dict[str, float]:
    """Milliseconds of the rollup of all but the last 1,000 of ``n`` events over 30 days, then
    of those 1,000; then of the summary's two reads (totals, and the p95 latency by rank) for
    each window, from the first minute on."""
    dsn, name = await fresh_db(base)
    store = postgres.PostgresStore(dsn)
    try:
        await store.open()
        events, now = _events(n), time.time()
        for i, event in enumerate(events):
            event["occurred_at"] = now - 30 * 86400 + (i + 1) * 30 * 86400 / n
        times: dict[str, float] = {}
        for label, first, last in (("replay", 0, n - 1000), ("minute", n - 1000, n)):
            for batch in range(first, last, 20_000):
                await store.insert(events[batch : min(batch + 20_000, last)])
            started = time.perf_counter()
            assert (await store.rollup())["new_rows"] == last - first
            times[label] = (time.perf_counter() - started) * 1000
        for window, seconds in WINDOWS:
            started = time.perf_counter()
            totals = await store.totals(now - seconds)
            await store.latency_at_rank(now - seconds, max(1, totals.requests * 95 // 100))
            times[window] = (time.perf_counter() - started) * 1000
        return times
    finally:
        await store.close()
        await drop_db(base, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000, help="the sink's batch size")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, in turns")
    parser.add_argument("--rollup-events", type=int, default=1_000_000)
    args = parser.parse_args()
    base = os.environ["PRIME_SPARK_TEST_POSTGRES_DSN"]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            results[variant].append(asyncio.run(run(base, variant, args.events, args.batch)))
    store = results["store"][0]["store"]
    print(f"{args.events} inference events, batches of {args.batch}, store: {store}")
    print("| write | PostgreSQL CPU µs per event (each run) | wall µs per event |")
    print("| --- | --- | --- |")
    for variant, runs in results.items():
        cpu = " / ".join(f"{r['pg_us']:.1f}" for r in runs)
        wall = " / ".join(f"{r['wall_us']:.1f}" for r in runs)
        print(f"| {variant} | {cpu} | {wall} |")
    if args.rollup_events:
        runs = [asyncio.run(rollup(base, args.rollup_events)) for _ in range(args.rounds)]
        print(f"{args.rollup_events} events over 30 days, ms (each run):")
        print(f"- rollup of all but the last 1,000 at once: {_each(runs, 'replay', 0)}")
        print(f"- rollup of the last 1,000: {_each(runs, 'minute', 1)}")
        for window, _seconds in WINDOWS:
            print(f"- summary reads, {window} window: {_each(runs, window, 1)}")


def _each(runs: list[dict[str, float]], key: str, digits: int) -> str:
    return " / ".join(f"{run[key]:.{digits}f}" for run in runs)


if __name__ == "__main__":
    main()
