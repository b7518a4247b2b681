"""PostgreSQL's CPU per stored inference event: the sink's write against two cheaper designs.

    eval "$(scripts/services env)"
    scripts/shell python -m bench.pg_write [--events 100000] [--batch 20000] [--rounds 2]

The end-to-end analytics goal (bench/analytics.py (d)) is bound by the CPU every process spends
per event, and PostgreSQL's share is the largest. This measures that share alone, in a fresh
database with the store's own schema (TimescaleDB hypertables when the extension is there), by
the CPU time of the one backend that writes, for the same inference events in batches:

- ``current``: what ``PostgresStore.insert`` does: COPY into the staging table (the data as
  jsonb), ``INSERT … SELECT … ON CONFLICT DO NOTHING`` into ``analytics_events`` and into
  ``analytics_inference`` (columns extracted from the jsonb);
- ``direct``: COPY straight into both tables (no staging, no conflict clause: a replayed batch
  would fail and need the current path);
- ``typed-only``: COPY into ``analytics_inference`` only (the raw jsonb row not kept for
  inference events).

Neither alternative is what the store does; they bound what a redesign could save.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import uuid_utils

from bench.analytics import drop_db
from bench.common import proc_cpu_seconds
from inference_server.analytics.store import postgres

VARIANTS = ("current", "direct", "typed-only")
INFERENCE_COLUMNS = [
    "event_id", "occurred_at", "node_id", "model", "side", "route", "status", "prompt_tokens",
    "completion_tokens", "latency_ms", "generation_ms", "cache", "stream", "served_for",
]  # fmt: skip


def _data(i: int) -> dict[str, Any]:
    return {
        "model": "gemma-3-270m",
        "side": "edge",
        "route": "/v1/chat/completions",
        "status": 200,
        "prompt_tokens": 20 + i % 30,
        "completion_tokens": i % 64,
        "latency_ms": 50.0 + i % 400,
        "generation_ms": 40.0 + i % 300,
        "cache": "none",
        "stream": False,
        "peer": None,
        "served_for": None,
    }


def _events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": str(uuid_utils.uuid7()),
            "type": "inference",
            "version": 2,
            "occurred_at": time.time(),
            "node_id": "bench-node",
            "data": _data(i),
        }
        for i in range(n)
    ]


async def _write(conn: asyncpg.Connection, variant: str, chunk: list[dict[str, Any]]) -> None:
    def when(e: dict[str, Any]) -> datetime:
        return datetime.fromtimestamp(e["occurred_at"], UTC)

    if variant == "current":
        await conn.execute(postgres.STAGING)
        records = [
            (e["event_id"], e["type"], e["version"], when(e), e["node_id"],
             orjson.dumps(e["data"]).decode())
            for e in chunk
        ]  # fmt: skip
        await conn.copy_records_to_table("analytics_staging", records=records)
        for statement in postgres.INSERTS:
            await conn.execute(statement)
        return
    if variant == "direct":
        raw = [
            (uuid.UUID(e["event_id"]), e["type"], e["version"], when(e), e["node_id"],
             orjson.dumps(e["data"]).decode())
            for e in chunk
        ]  # fmt: skip
        await conn.copy_records_to_table("analytics_events", records=raw)
    typed = [
        (uuid.UUID(e["event_id"]), when(e), e["node_id"],
         *(e["data"][c] for c in INFERENCE_COLUMNS[3:]))
        for e in chunk
    ]  # fmt: skip
    await conn.copy_records_to_table(
        "analytics_inference", records=typed, columns=INFERENCE_COLUMNS
    )


async def run(base: str, variant: str, n: int, batch: int) -> dict[str, Any]:
    name = f"ps_pgwrite_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = base.rsplit("/", 1)[0] + "/" + name
    try:
        store = postgres.PostgresStore(dsn)
        await store.open()  # the store's migrations: its tables, hypertables when available
        kind = store.kind
        await store.close()
        conn = await asyncpg.connect(dsn)
        try:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            events = _events(n)
            started, cpu0 = time.perf_counter(), proc_cpu_seconds(pid)
            for start in range(0, n, batch):
                async with conn.transaction():
                    await _write(conn, variant, events[start : start + batch])
            wall, cpu = time.perf_counter() - started, proc_cpu_seconds(pid) - cpu0
            rows = await conn.fetchval("SELECT count(*) FROM analytics_inference")
        finally:
            await conn.close()
        assert rows == n, (variant, rows)
        return {"pg_us": cpu / n * 1e6, "wall_us": wall / n * 1e6, "store": kind}
    finally:
        await admin.close()
        await drop_db(base, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=20_000, help="the sink's batch size")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, in turns")
    args = parser.parse_args()
    base = os.environ["PRIME_SPARK_TEST_POSTGRES_DSN"]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            results[variant].append(asyncio.run(run(base, variant, args.events, args.batch)))
    store = results["current"][0]["store"]
    print(f"{args.events} inference events, batches of {args.batch}, store: {store}")
    print("| write | PostgreSQL CPU µs per event (each run) | wall µs per event |")
    print("| --- | --- | --- |")
    for variant, runs in results.items():
        cpu = " / ".join(f"{r['pg_us']:.1f}" for r in runs)
        wall = " / ".join(f"{r['wall_us']:.1f}" for r in runs)
        print(f"| {variant} | {cpu} | {wall} |")


if __name__ == "__main__":
    main()
