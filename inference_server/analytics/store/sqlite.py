"""The embedded default store: SQLite in the data directory, driven from one worker thread.

No PostgreSQL to run on a Pi that only wants a few dashboards: stdlib ``sqlite3`` with WAL and
``synchronous=FULL`` (a batch is on disk before the spool's cursor moves past it). All calls go
through a single-thread executor, so the connection is only ever used by one thread and the
event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from inference_server.analytics.store.base import (
    ALL_EVENTS_VIEW,
    COUNTABLE,
    DEAD_LETTERS,
    RAW_TABLES,
    ROLLUPS,
    TABLE_COLUMNS,
    DeadLetter,
    Envelope,
    RetentionPolicy,
    RollupRow,
    StoreError,
    WindowTotals,
    rows_by_table,
)

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE analytics_events (
            event_id TEXT PRIMARY KEY, type TEXT NOT NULL, version INTEGER NOT NULL,
            occurred_at REAL NOT NULL, node_id TEXT NOT NULL, data TEXT NOT NULL);
        CREATE INDEX analytics_events_time ON analytics_events (occurred_at);
        CREATE TABLE analytics_inference (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
            occurred_at REAL NOT NULL, node_id TEXT NOT NULL, model TEXT NOT NULL,
            side TEXT NOT NULL, route TEXT NOT NULL, status INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
            latency_ms REAL NOT NULL, generation_ms REAL NOT NULL, cache TEXT NOT NULL,
            stream INTEGER NOT NULL);
        CREATE INDEX analytics_inference_time ON analytics_inference (occurred_at);
        CREATE TABLE analytics_power (
            event_id TEXT PRIMARY KEY, occurred_at REAL NOT NULL, node_id TEXT NOT NULL,
            kind TEXT NOT NULL, mode TEXT, watts REAL);
        CREATE INDEX analytics_power_time ON analytics_power (occurred_at);
        CREATE TABLE analytics_inference_rollup (
            resolution TEXT NOT NULL, bucket REAL NOT NULL, side TEXT NOT NULL,
            model TEXT NOT NULL, requests INTEGER NOT NULL, errors INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
            generation_ms REAL NOT NULL, latency_ms_sum REAL NOT NULL,
            latency_ms_max REAL NOT NULL, cache_hits INTEGER NOT NULL,
            cache_misses INTEGER NOT NULL, PRIMARY KEY (resolution, bucket, side, model));
        CREATE TABLE analytics_watermarks (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        """,
    ),
    (
        2,
        """
        ALTER TABLE analytics_inference ADD COLUMN served_for TEXT;
        ALTER TABLE analytics_inference_rollup ADD COLUMN forwarded INTEGER NOT NULL DEFAULT 0;
        DELETE FROM analytics_watermarks WHERE name = 'inference_rollup';
        """,
    ),
    (
        3,
        # Typed events in their own tables only (store/base.py; PostgreSQL's migration 5).
        """
        ALTER TABLE analytics_inference ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE analytics_inference ADD COLUMN peer TEXT;
        ALTER TABLE analytics_power ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE analytics_power ADD COLUMN previous_mode TEXT;
        ALTER TABLE analytics_power ADD COLUMN source TEXT NOT NULL DEFAULT '';
        UPDATE analytics_inference SET version = e.version, peer = json_extract(e.data, '$.peer')
        FROM analytics_events e
        WHERE e.type = 'inference' AND e.event_id = analytics_inference.event_id;
        UPDATE analytics_power SET version = e.version,
            previous_mode = json_extract(e.data, '$.previous_mode'),
            source = coalesce(json_extract(e.data, '$.source'), '')
        FROM analytics_events e
        WHERE e.type = 'power' AND e.event_id = analytics_power.event_id;
        DELETE FROM analytics_events WHERE type IN ('inference', 'power');
        CREATE VIEW analytics_all_events AS
        SELECT event_id, type, version, occurred_at, node_id, data FROM analytics_events
        UNION ALL
        SELECT event_id, 'inference', version, occurred_at, node_id,
            json_patch(json_object('model', model, 'side', side, 'route', route,
                'status', status, 'prompt_tokens', prompt_tokens,
                'completion_tokens', completion_tokens, 'latency_ms', latency_ms,
                'generation_ms', generation_ms, 'cache', cache,
                'stream', json(CASE WHEN stream THEN 'true' ELSE 'false' END), 'peer', peer),
                json_object('served_for', served_for))
        FROM analytics_inference
        UNION ALL
        SELECT event_id, 'power', version, occurred_at, node_id,
            json_object('kind', kind, 'mode', mode, 'previous_mode', previous_mode,
                'watts', watts, 'source', source)
        FROM analytics_power;
        """,
    ),
    (
        4,
        # Messages that are not events, kept as they came (PostgreSQL's migration 7).
        """
        CREATE TABLE analytics_dead_letters (
            digest BLOB PRIMARY KEY, received_at REAL NOT NULL, topic TEXT NOT NULL,
            reason TEXT NOT NULL, value BLOB NOT NULL);
        CREATE INDEX analytics_dead_letters_time ON analytics_dead_letters (received_at);
        """,
    ),
)


class SqliteStore:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dead_letters_kept = 0
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise StoreError("the SQLite store is closed")
            try:
                return fn(self._db)
            except sqlite3.Error as err:
                self._db.rollback()
                raise StoreError(f"SQLite: {err}") from err

        if self._executor is None:
            raise StoreError("the SQLite store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        """Connect (again, after :meth:`close`: the store is reopened like PostgreSQL's)."""

        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            self._db = db

        await self.close()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analytics-sqlite")
        await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        await self._run(_migrate)

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, close)
        executor.shutdown(wait=False)

    async def migrations(self) -> list[int]:
        return await self._run(
            lambda db: [r[0] for r in db.execute("SELECT version FROM analytics_migrations")]
        )

    async def insert(self, events: list[Envelope]) -> int:
        tables = rows_by_table(events, float)

        def insert(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            before = db.total_changes
            for table, rows in tables.items():
                db.executemany(_insert_sql(table, TABLE_COLUMNS[table]), rows)
            added = db.total_changes - before
            db.execute("COMMIT")
            return added

        return await self._run(insert)

    async def keep_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        now = time.time()
        rows = [(x.digest, now, x.topic, x.printable_reason, x.value) for x in letters]

        def insert(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            cur = db.executemany(
                "INSERT OR IGNORE INTO analytics_dead_letters VALUES (?, ?, ?, ?, ?)", rows
            )
            db.execute("COMMIT")
            return cur.rowcount

        added = await self._run(insert) if rows else 0
        self.dead_letters_kept += added
        return added

    async def rollup(self) -> dict[str, Any]:
        return await self._run(_rollup)

    async def retention(self, policy: RetentionPolicy, now: float) -> dict[str, Any]:
        def delete(db: sqlite3.Connection) -> dict[str, Any]:
            raw_cut = now - policy.raw_days * 86400
            deleted: dict[str, Any] = {}
            db.execute("BEGIN IMMEDIATE")
            for table in RAW_TABLES:
                cur = db.execute(f"DELETE FROM {table} WHERE occurred_at < ?", (raw_cut,))  # noqa: S608  # nosec B608
                deleted[table] = cur.rowcount
            cur = db.execute("DELETE FROM analytics_dead_letters WHERE received_at < ?", (raw_cut,))
            deleted[DEAD_LETTERS] = cur.rowcount
            for resolution, days in (
                ("1m", policy.minute_rollup_days),
                ("1h", policy.hour_rollup_days),
            ):
                cur = db.execute(
                    "DELETE FROM analytics_inference_rollup WHERE resolution = ? AND bucket < ?",
                    (resolution, now - days * 86400),
                )
                deleted[f"rollup_{resolution}"] = cur.rowcount
            db.execute("COMMIT")
            return {"deleted": deleted}

        return await self._run(delete)

    async def totals(self, since: float) -> WindowTotals:
        def query(db: sqlite3.Connection) -> WindowTotals:
            row = db.execute(TOTALS_SQL.format(since="?1"), (since,)).fetchone()
            return _totals(row)

        return await self._run(query)

    async def latency_at_rank(self, since: float, rank: int) -> float | None:
        def query(db: sqlite3.Connection) -> float | None:
            sql = RANK_SQL.format(since="?1", offset="?2")
            row = db.execute(sql, (since, rank - 1)).fetchone()
            return None if row is None else float(row[0])

        return await self._run(query)

    async def power_readings(self, since: float) -> list[tuple[float, float]]:
        def query(db: sqlite3.Connection) -> list[tuple[float, float]]:
            rows = db.execute(POWER_SQL.format(since="?"), (since,)).fetchall()
            return [(float(t), float(w)) for t, w in rows]

        return await self._run(query)

    async def rollups(self, resolution: str, since: float) -> list[RollupRow]:
        def query(db: sqlite3.Connection) -> list[RollupRow]:
            rows = db.execute(
                "SELECT * FROM analytics_inference_rollup WHERE resolution = ? AND bucket >= ? "
                "ORDER BY bucket, side, model",
                (resolution, since),
            ).fetchall()
            return [RollupRow(*r) for r in rows]

        return await self._run(query)

    async def count(self, table: str = ALL_EVENTS_VIEW) -> int:
        if table not in COUNTABLE:
            raise ValueError(table)
        return await self._run(
            lambda db: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608  # nosec B608
        )


# ---------------------------------------------------------------------- SQL shared in shape
# The PostgreSQL store formats the same statements with its own placeholders.
# A served_for event is a duplicate of a request when the node it names has events in the window.
_WINDOW = """
WITH w AS (
    SELECT *, (served_for IS NOT NULL AND served_for IN (
        SELECT DISTINCT node_id FROM analytics_inference WHERE occurred_at >= {since})) AS dup
    FROM analytics_inference WHERE occurred_at >= {since})
"""
TOTALS_SQL = (
    _WINDOW  # nosec B608: formatted with placeholders only (?1, ?2)
    + """
SELECT coalesce(sum(CASE WHEN dup THEN 0 ELSE 1 END), 0),
       coalesce(sum(CASE WHEN NOT dup AND status >= 400 THEN 1 ELSE 0 END), 0),
       coalesce(sum(CASE WHEN dup THEN 0 ELSE prompt_tokens END), 0),
       coalesce(sum(CASE WHEN dup THEN 0 ELSE completion_tokens END), 0),
       coalesce(sum(generation_ms), 0),
       coalesce(sum(CASE WHEN NOT dup AND side = 'edge' THEN 1 ELSE 0 END), 0),
       coalesce(sum(CASE WHEN NOT dup AND side = 'cloud' THEN 1 ELSE 0 END), 0),
       coalesce(sum(CASE WHEN NOT dup AND cache IN ('exact', 'semantic') THEN 1 ELSE 0 END), 0),
       coalesce(sum(CASE WHEN NOT dup AND cache = 'miss' THEN 1 ELSE 0 END), 0),
       coalesce(sum(CASE WHEN dup THEN 1 ELSE 0 END), 0),
       coalesce(sum(CASE WHEN generation_ms > 0 THEN completion_tokens ELSE 0 END), 0)
FROM w
"""
)
RANK_SQL = (
    _WINDOW  # nosec B608: formatted with placeholders only (?1, ?2)
    + """
SELECT latency_ms FROM w WHERE NOT dup AND status < 400
ORDER BY latency_ms LIMIT 1 OFFSET {offset}
"""
)
POWER_SQL = """
SELECT occurred_at, watts FROM analytics_power
WHERE occurred_at >= {since} AND kind = 'reading' AND watts IS NOT NULL
ORDER BY occurred_at
"""


def _totals(row: Any) -> WindowTotals:
    return WindowTotals(
        requests=int(row[0]),
        errors=int(row[1]),
        prompt_tokens=int(row[2]),
        completion_tokens=int(row[3]),
        generation_ms=float(row[4]),
        edge=int(row[5]),
        cloud=int(row[6]),
        cache_hits=int(row[7]),
        cache_misses=int(row[8]),
        forwarded=int(row[9]),
        decode_tokens=int(row[10]),
    )


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "CREATE TABLE IF NOT EXISTS analytics_migrations "
        "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    done = {r[0] for r in db.execute("SELECT version FROM analytics_migrations")}
    for version, script in MIGRATIONS:
        if version in done:
            continue
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO analytics_migrations VALUES (?, ?)", (version, time.time()))
    db.execute("COMMIT")


ROLLUP_SQL = """
INSERT INTO analytics_inference_rollup
SELECT ?, CAST(occurred_at / {width} AS INTEGER) * {width} AS b, side, model,
       sum(CASE WHEN served_for IS NULL THEN 1 ELSE 0 END),
       sum(CASE WHEN served_for IS NULL AND status >= 400 THEN 1 ELSE 0 END),
       sum(CASE WHEN served_for IS NULL THEN prompt_tokens ELSE 0 END),
       sum(CASE WHEN served_for IS NULL THEN completion_tokens ELSE 0 END),
       sum(CASE WHEN served_for IS NULL THEN generation_ms ELSE 0 END),
       sum(CASE WHEN served_for IS NULL THEN latency_ms ELSE 0 END),
       coalesce(max(CASE WHEN served_for IS NULL THEN latency_ms END), 0),
       sum(CASE WHEN served_for IS NULL AND cache IN ('exact', 'semantic') THEN 1 ELSE 0 END),
       sum(CASE WHEN served_for IS NULL AND cache = 'miss' THEN 1 ELSE 0 END),
       sum(CASE WHEN served_for IS NULL THEN 0 ELSE 1 END)
FROM analytics_inference
WHERE CAST(occurred_at / {width} AS INTEGER) * {width} IN (
    SELECT DISTINCT CAST(occurred_at / {width} AS INTEGER) * {width}
    FROM analytics_inference WHERE seq > ? AND seq <= ?)
GROUP BY b, side, model
ON CONFLICT (resolution, bucket, side, model) DO UPDATE SET
    requests = excluded.requests, errors = excluded.errors,
    prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
    generation_ms = excluded.generation_ms, latency_ms_sum = excluded.latency_ms_sum,
    latency_ms_max = excluded.latency_ms_max, cache_hits = excluded.cache_hits,
    cache_misses = excluded.cache_misses, forwarded = excluded.forwarded
"""


def _rollup(db: sqlite3.Connection) -> dict[str, Any]:
    db.execute("BEGIN IMMEDIATE")
    row = db.execute(
        "SELECT value FROM analytics_watermarks WHERE name = 'inference_rollup'"
    ).fetchone()
    low = int(row[0]) if row else 0
    high = int(db.execute("SELECT coalesce(max(seq), 0) FROM analytics_inference").fetchone()[0])
    buckets = {}
    new_rows = int(
        db.execute(
            "SELECT count(*) FROM analytics_inference WHERE seq > ? AND seq <= ?", (low, high)
        ).fetchone()[0]
    )
    if new_rows:
        for resolution, width in ROLLUPS:
            cur = db.execute(ROLLUP_SQL.format(width=width), (resolution, low, high))
            buckets[resolution] = cur.rowcount
        db.execute(
            "INSERT INTO analytics_watermarks VALUES ('inference_rollup', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (high,),
        )
    db.execute("COMMIT")
    return {"new_rows": new_rows, "buckets": buckets}
