"""The PostgreSQL store (asyncpg), with TimescaleDB hypertables when the extension is there.

A batch is written by one ``COPY`` per raw table straight into the table, inside a savepoint:
COPY is the fastest way into PostgreSQL, and every raw table's primary key holds the event id,
so an event already stored makes the COPY fail instead of counting twice. Then (a replay: spool
resend, Kafka redelivery after a consumer crash) the savepoint is rolled back and the batch goes
the idempotent way: COPY into a per-connection temporary staging table, then
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, which stores exactly the events that are new.
The slow way costs PostgreSQL about four times the CPU (bench/pg_write.py) and is needed only
for batches that overlap what is stored. Everything happens in one transaction, so when
``insert`` returns the rows are durable and the caller may commit its Kafka offsets.

TimescaleDB: on first migration the extension is created if the server has it; the raw tables
become hypertables (their primary key is ``(event_id, occurred_at)``, as hypertables require;
``occurred_at`` is part of the event, so it is the same de-duplication). The licence decides
the rest: ``timescaledb.license = timescale`` adds native compression policies; the
Apache-licensed build (Debian's) has no policies or continuous aggregates, so the app-side
rollup tables and retention job (``drop_chunks`` is Apache-licensed) do that work — the same
tables and queries SQLite and plain PostgreSQL use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

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
    StoreRefused,
    WindowTotals,
    rows_by_table,
)
from inference_server.analytics.store.sqlite import POWER_SQL, RANK_SQL, TOTALS_SQL, _totals

_LOGGER = logging.getLogger(__name__)

MIGRATION_LOCK = 0x5052_494D_4531  # advisory lock key: one migrating process at a time
ROLLUP_LOCK = 0x5052_494D_4532

BASE_SCHEMA = """
CREATE TABLE analytics_events (
    event_id uuid NOT NULL, type text NOT NULL, version integer NOT NULL,
    occurred_at timestamptz NOT NULL, node_id text NOT NULL, data jsonb NOT NULL,
    PRIMARY KEY (event_id, occurred_at));
CREATE INDEX analytics_events_time ON analytics_events (occurred_at DESC);
CREATE TABLE analytics_inference (
    seq bigint GENERATED ALWAYS AS IDENTITY, event_id uuid NOT NULL,
    occurred_at timestamptz NOT NULL, node_id text NOT NULL, model text NOT NULL,
    side text NOT NULL, route text NOT NULL, status integer NOT NULL,
    prompt_tokens integer NOT NULL, completion_tokens integer NOT NULL,
    latency_ms double precision NOT NULL, generation_ms double precision NOT NULL,
    cache text NOT NULL, stream boolean NOT NULL, PRIMARY KEY (event_id, occurred_at));
CREATE INDEX analytics_inference_time ON analytics_inference (occurred_at DESC);
CREATE INDEX analytics_inference_seq ON analytics_inference (seq);
CREATE TABLE analytics_power (
    event_id uuid NOT NULL, occurred_at timestamptz NOT NULL, node_id text NOT NULL,
    kind text NOT NULL, mode text, watts double precision,
    PRIMARY KEY (event_id, occurred_at));
CREATE INDEX analytics_power_time ON analytics_power (occurred_at DESC);
CREATE TABLE analytics_inference_rollup (
    resolution text NOT NULL, bucket timestamptz NOT NULL, side text NOT NULL,
    model text NOT NULL, requests bigint NOT NULL, errors bigint NOT NULL,
    prompt_tokens bigint NOT NULL, completion_tokens bigint NOT NULL,
    generation_ms double precision NOT NULL, latency_ms_sum double precision NOT NULL,
    latency_ms_max double precision NOT NULL, cache_hits bigint NOT NULL,
    cache_misses bigint NOT NULL, PRIMARY KEY (resolution, bucket, side, model));
CREATE TABLE analytics_watermarks (name text PRIMARY KEY, value bigint NOT NULL);
"""

MIGRATION_5 = """
ALTER TABLE analytics_inference ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS peer text;
ALTER TABLE analytics_power ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS previous_mode text,
    ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT '';
UPDATE analytics_inference i SET version = e.version, peer = e.data->>'peer'
FROM analytics_events e
WHERE e.type = 'inference' AND e.event_id = i.event_id AND e.occurred_at = i.occurred_at;
UPDATE analytics_power p SET version = e.version, previous_mode = e.data->>'previous_mode',
    source = coalesce(e.data->>'source', '')
FROM analytics_events e
WHERE e.type = 'power' AND e.event_id = p.event_id AND e.occurred_at = p.occurred_at;
DELETE FROM analytics_events WHERE type IN ('inference', 'power');
CREATE VIEW analytics_all_events AS
SELECT event_id, type, version, occurred_at, node_id, data FROM analytics_events
UNION ALL
SELECT event_id, 'inference', version, occurred_at, node_id,
    jsonb_build_object('model', model, 'side', side, 'route', route, 'status', status,
        'prompt_tokens', prompt_tokens, 'completion_tokens', completion_tokens,
        'latency_ms', latency_ms, 'generation_ms', generation_ms, 'cache', cache,
        'stream', stream, 'peer', peer)
    || CASE WHEN served_for IS NULL THEN '{}'::jsonb
       ELSE jsonb_build_object('served_for', served_for) END
FROM analytics_inference
UNION ALL
SELECT event_id, 'power', version, occurred_at, node_id,
    jsonb_build_object('kind', kind, 'mode', mode, 'previous_mode', previous_mode,
        'watts', watts, 'source', source)
FROM analytics_power;
"""
"""Each typed event in its own table only (see store/base.py): the columns its JSON had kept,
filled from it; then its copy in ``analytics_events`` goes, and the view gives every event."""

MIGRATION_6 = """
DROP INDEX analytics_inference_time;
DROP INDEX analytics_inference_seq;
CREATE INDEX analytics_inference_time ON analytics_inference
    USING brin (occurred_at timestamptz_minmax_multi_ops)
    WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX analytics_inference_seq ON analytics_inference
    USING brin (seq int8_minmax_multi_ops) WITH (pages_per_range = 32, autosummarize = on);
"""
"""The request table's time and sequence indexes as BRIN: a B-tree entry per row was over a
third of PostgreSQL's CPU per stored event (bench/pg_write.py), and both columns follow the
heap's order, which is what BRIN summarises. ``minmax_multi`` keeps a page range exact when
its rows are not in order (a replayed spool, or pages reused after the plain-PostgreSQL
retention's ``DELETE``); ``autosummarize`` has autovacuum summarise each range once it is full,
so a window's query reads the unsummarised tail plus the ranges that match."""

MIGRATION_7 = """
CREATE TABLE analytics_dead_letters (
    digest bytea PRIMARY KEY, received_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL, reason text NOT NULL, value bytea NOT NULL);
CREATE INDEX analytics_dead_letters_time ON analytics_dead_letters (received_at);
"""
"""Messages that are not events, kept as they came (see ``store.base.DeadLetter``)."""

SUMMARIZE_SQL = """
SELECT coalesce(sum(brin_summarize_new_values(i.indexrelid)), 0)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
WHERE am.amname = 'brin' AND (i.indrelid = 'analytics_inference'::regclass OR i.indrelid IN (
    SELECT inhrelid FROM pg_inherits WHERE inhparent = 'analytics_inference'::regclass))
"""
"""Summarise the page ranges written since the last run, in every BRIN index of the request
table and its hypertable chunks. ``autosummarize`` asks autovacuum to, but its queue holds 256
requests (at 50k rows/s some 20 ranges fill each second, and the rest are dropped) and it runs
when autovacuum next wakes; an unsummarised range matches every query, so the rollup's range
read would read all of them. bench/pg_write.py's rollup of the last 1,000 of 1M rows: 20-26 ms
with this, 42-145 ms without (in pairs); it costs the 999k-row replay's run ~0.6 s."""

ROLLUP_SQL = """
INSERT INTO analytics_inference_rollup
SELECT $1, date_bin(interval '1 {unit}', occurred_at, timestamptz '2000-01-01 UTC') AS b,
       side, model,
       count(*) FILTER (WHERE served_for IS NULL),
       count(*) FILTER (WHERE served_for IS NULL AND status >= 400),
       coalesce(sum(prompt_tokens) FILTER (WHERE served_for IS NULL), 0),
       coalesce(sum(completion_tokens) FILTER (WHERE served_for IS NULL), 0),
       coalesce(sum(generation_ms) FILTER (WHERE served_for IS NULL), 0),
       coalesce(sum(latency_ms) FILTER (WHERE served_for IS NULL), 0),
       coalesce(max(latency_ms) FILTER (WHERE served_for IS NULL), 0),
       count(*) FILTER (WHERE served_for IS NULL AND cache IN ('exact', 'semantic')),
       count(*) FILTER (WHERE served_for IS NULL AND cache = 'miss'),
       count(*) FILTER (WHERE served_for IS NOT NULL)
FROM analytics_inference
WHERE occurred_at >= date_bin(interval '1 {unit}', $2::timestamptz, timestamptz '2000-01-01 UTC')
  AND occurred_at < date_bin(interval '1 {unit}', $3::timestamptz, timestamptz '2000-01-01 UTC')
                    + interval '1 {unit}'
GROUP BY b, side, model
ON CONFLICT (resolution, bucket, side, model) DO UPDATE SET
    requests = excluded.requests, errors = excluded.errors,
    prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
    generation_ms = excluded.generation_ms, latency_ms_sum = excluded.latency_ms_sum,
    latency_ms_max = excluded.latency_ms_max, cache_hits = excluded.cache_hits,
    cache_misses = excluded.cache_misses, forwarded = excluded.forwarded
"""
"""Recomputes the buckets from the one of the first new row's time (``$2``) to the one of the
last's (``$3``): one range read, where the query before this read the whole table every minute.
Usually that is the minute's buckets; after a spool replay, every bucket of the span, which is
harmless (a bucket is recomputed whole from its rows). The buckets the new rows fell into only,
by a join, is what the planner would misjudge on a chunk not yet analysed (a nested loop over
the range's rows for each new row: 90 ms for 1,000 rows). Buckets are UTC minutes and hours
(``date_bin`` from 2000-01-01 UTC) whatever the session's time zone, as the SQLite store's are.
"""

_UNITS = {"1m": "minute", "1h": "hour"}


PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""PostgreSQL's own epoch: a ``timestamptz`` is a count of microseconds since it."""
_PG_EPOCH_SECONDS = int(PG_EPOCH.timestamp())
_MICROSECOND = timedelta(microseconds=1)


def _ts(epoch: float) -> int:
    """A Unix time as PostgreSQL's microseconds, rounded as ``datetime.fromtimestamp`` rounds
    (the fraction of the second, half to even), so a stored time reads back as the
    ``datetime`` it always has.

    The pool's connections take ``timestamptz`` in this form (:func:`_timestamp_codec`): the
    row of an event is one ``int`` where it was a ``datetime``, which asyncpg then took apart
    again for every row of a COPY (bench: 2.4 against 1.2 µs of client CPU per inference row).
    """
    whole = int(epoch)
    return (whole - _PG_EPOCH_SECONDS) * 1_000_000 + round((epoch - whole) * 1_000_000)


_INFINITY = {
    2**63 - 1: datetime.max.replace(tzinfo=UTC),
    -(2**63): datetime.min.replace(tzinfo=UTC),
}
"""PostgreSQL's ``'infinity'`` and ``'-infinity'``, read as asyncpg's own codec reads them."""


def _encode_timestamp(value: int | datetime) -> tuple[int]:
    if type(value) is int:
        return (value,)
    assert isinstance(value, datetime)  # nosec B101: the only other type a caller passes
    return ((value - PG_EPOCH) // _MICROSECOND,)


def _decode_timestamp(value: tuple[int]) -> datetime:
    microseconds = value[0]
    if microseconds in _INFINITY:
        return _INFINITY[microseconds]
    return PG_EPOCH + timedelta(microseconds=microseconds)


async def _timestamp_codec(conn: asyncpg.Connection) -> None:
    """``timestamptz`` in asyncpg's binary tuple form (microseconds since :data:`PG_EPOCH`):
    written from :func:`_ts`'s ``int`` (or a ``datetime``), read as an aware ``datetime``."""
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_encode_timestamp,
        decoder=_decode_timestamp,
        format="tuple",
    )


async def _insert_new(conn: asyncpg.Connection, tables: dict[str, list[tuple[Any, ...]]]) -> int:
    """Store the rows whose event id is not stored yet; returns how many that was."""
    added = 0
    for table, rows in tables.items():
        columns = ", ".join(TABLE_COLUMNS[table])
        staging = table.replace("analytics_", "analytics_staging_", 1)
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "  # noqa: S608  # nosec B608: names from TABLE_COLUMNS
            f"SELECT {columns} FROM {table} WITH NO DATA"
        )
        await conn.copy_records_to_table(staging, records=rows, columns=TABLE_COLUMNS[table])
        status = await conn.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} "  # noqa: S608  # nosec B608: names from TABLE_COLUMNS
            "ON CONFLICT DO NOTHING"
        )
        added += int(status.rsplit(" ", 1)[-1])
    return added


class PostgresStore:
    def __init__(self, dsn: str, *, timescale: bool = True) -> None:
        self._dsn = dsn
        self._want_timescale = timescale
        self._pool: asyncpg.Pool | None = None
        self.timescale = False
        self.license: str | None = None
        self.replayed_batches = 0
        """Batches that overlapped stored events and went the idempotent way."""
        self.dead_letters_kept = 0

    @property
    def kind(self) -> str:
        if not self.timescale:
            return "postgresql"
        return "timescaledb" if self.license == "timescale" else f"timescaledb-{self.license}"

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the PostgreSQL store is closed")
        return self._pool

    async def open(self) -> None:
        await self.close()
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=4, init=_timestamp_codec
            )
            async with self._p().acquire() as conn:
                await self._migrate(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            await self.close()
            raise StoreError(f"PostgreSQL: {err}") from err

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS analytics_migrations "
                "(version integer PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in await conn.fetch("SELECT version FROM analytics_migrations")}
            if 1 not in done:
                await conn.execute(BASE_SCHEMA)
                await self._record(conn, 1, "base tables")
            if self._want_timescale and 2 not in done:
                await self._try_timescale(conn)
                if await self._has_timescale(conn):
                    for table in RAW_TABLES:
                        await conn.execute(
                            "SELECT create_hypertable($1::regclass, by_range('occurred_at'), "
                            "migrate_data => true, if_not_exists => true)",
                            table,
                        )
                    await self._record(conn, 2, "timescaledb hypertables")
            if 4 not in done:
                # inference v2: requests served for another node (see store/base.py)
                await conn.execute(
                    "ALTER TABLE analytics_inference ADD COLUMN IF NOT EXISTS served_for text;"
                    "ALTER TABLE analytics_inference_rollup ADD COLUMN IF NOT EXISTS "
                    "forwarded bigint NOT NULL DEFAULT 0;"
                    "DELETE FROM analytics_watermarks WHERE name = 'inference_rollup'"
                )
                await self._record(conn, 4, "served_for: forwarded requests counted once")
            if 5 not in done:
                await conn.execute(MIGRATION_5)
                await self._record(conn, 5, "typed events in their own tables only")
            if 6 not in done:
                await conn.execute(MIGRATION_6)
                await self._record(conn, 6, "BRIN indexes on the request table's time and seq")
            if 7 not in done:
                await conn.execute(MIGRATION_7)
                await self._record(conn, 7, "dead letters: messages kept that are not events")
        self.timescale = await self._has_timescale(conn)
        if self.timescale:
            self.license = await conn.fetchval("SHOW timescaledb.license")
            if self.license == "timescale" and 3 not in done:
                async with conn.transaction():
                    for table in RAW_TABLES:
                        await conn.execute(f"ALTER TABLE {table} SET (timescaledb.compress)")
                        await conn.execute(
                            "SELECT add_compression_policy($1::regclass, interval '1 day', "
                            "if_not_exists => true)",
                            table,
                        )
                    await self._record(conn, 3, "timescaledb compression policies")
        _LOGGER.info("Analytics store: %s", self.kind)

    @staticmethod
    async def _record(conn: asyncpg.Connection, version: int, name: str) -> None:
        await conn.execute(
            "INSERT INTO analytics_migrations (version, name) VALUES ($1, $2)", version, name
        )

    @staticmethod
    async def _try_timescale(conn: asyncpg.Connection) -> None:
        """Create the extension when the server offers it; plain PostgreSQL is fine too."""
        available = await conn.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        )
        if not available:
            return
        try:
            async with conn.transaction():
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except asyncpg.PostgresError as err:
            _LOGGER.warning("TimescaleDB is available but cannot be enabled here: %s", err)

    @staticmethod
    async def _has_timescale(conn: asyncpg.Connection) -> bool:
        return bool(
            await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
        )

    async def migrations(self) -> list[int]:
        rows = await self._p().fetch("SELECT version FROM analytics_migrations ORDER BY version")
        return [r[0] for r in rows]

    async def insert(self, events: list[Envelope]) -> int:
        tables = {t: rows for t, rows in rows_by_table(events, _ts).items() if rows}
        try:
            async with self._p().acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", ROLLUP_LOCK)
                try:
                    async with conn.transaction():  # a savepoint
                        for table, rows in tables.items():
                            await conn.copy_records_to_table(
                                table, records=rows, columns=TABLE_COLUMNS[table]
                            )
                    return sum(len(rows) for rows in tables.values())
                except asyncpg.UniqueViolationError:
                    self.replayed_batches += 1
                    return await _insert_new(conn, tables)
        except asyncpg.DataError as err:  # SQLSTATE class 22, or a value asyncpg cannot send
            raise StoreRefused(f"PostgreSQL refused a value: {err}") from err
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise StoreError(f"PostgreSQL: {err}") from err

    async def keep_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        if not letters:
            return 0
        try:
            status = await self._p().execute(
                "INSERT INTO analytics_dead_letters (digest, topic, reason, value) "
                "SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bytea[]) "
                "ON CONFLICT (digest) DO NOTHING",
                [letter.digest for letter in letters],
                [letter.topic for letter in letters],
                [letter.printable_reason for letter in letters],
                [letter.value for letter in letters],
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            raise StoreError(f"PostgreSQL: {err}") from err
        added = int(status.rsplit(" ", 1)[-1])
        self.dead_letters_kept += added
        return added

    async def rollup(self) -> dict[str, Any]:
        async with self._p().acquire() as conn:
            # Before the lock, which holds inserts off: it may read a minute's new pages.
            summarized = int(await conn.fetchval(SUMMARIZE_SQL))
            async with conn.transaction():
                return {**await self._rollup(conn), "summarized_ranges": summarized}

    @staticmethod
    async def _rollup(conn: asyncpg.Connection) -> dict[str, Any]:
        """The rollup proper, in the caller's transaction."""
        # Waits for in-flight inserts: no row with a lower seq can commit after this.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ROLLUP_LOCK)
        low = await conn.fetchval(
            "SELECT value FROM analytics_watermarks WHERE name = 'inference_rollup'"
        )
        low = int(low or 0)
        # The identity's last value, not max(seq), which BRIN cannot answer without a scan:
        # under the lock, every value it has given is in a finished transaction.
        high = int(
            await conn.fetchval(
                "SELECT coalesce(pg_sequence_last_value("
                "pg_get_serial_sequence('analytics_inference', 'seq')), 0)"
            )
        )
        buckets: dict[str, int] = {}
        # By the seq index of each chunk: a chunk not yet analysed looks empty to the planner,
        # which then reads all of it (0.15-0.7 s a minute at 1M rows); the index, a few pages.
        await conn.execute("SET LOCAL enable_seqscan = off")
        new_rows, first, last = await conn.fetchrow(
            "SELECT count(*), min(occurred_at), max(occurred_at) FROM analytics_inference "
            "WHERE seq > $1 AND seq <= $2",
            low,
            high,
        )
        await conn.execute("RESET enable_seqscan")
        if new_rows:
            for resolution, _width in ROLLUPS:
                status = await conn.execute(
                    ROLLUP_SQL.format(unit=_UNITS[resolution]), resolution, first, last
                )
                buckets[resolution] = int(status.rsplit(" ", 1)[-1])
            await conn.execute(
                "INSERT INTO analytics_watermarks VALUES ('inference_rollup', $1) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                high,
            )
        return {"new_rows": new_rows, "buckets": buckets}

    async def retention(self, policy: RetentionPolicy, now: float) -> dict[str, Any]:
        raw_cut = _ts(now - policy.raw_days * 86400)
        deleted: dict[str, Any] = {}
        async with self._p().acquire() as conn, conn.transaction():
            for table in RAW_TABLES:
                if self.timescale:
                    chunks = await conn.fetch(
                        "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz)",
                        table,
                        raw_cut,
                    )
                    deleted[table] = f"{len(chunks)} chunks"
                else:
                    status = await conn.execute(
                        f"DELETE FROM {table} WHERE occurred_at < $1",  # noqa: S608  # nosec B608: table from a fixed set
                        raw_cut,
                    )
                    deleted[table] = int(status.rsplit(" ", 1)[-1])
            status = await conn.execute(
                "DELETE FROM analytics_dead_letters WHERE received_at < $1", raw_cut
            )
            deleted[DEAD_LETTERS] = int(status.rsplit(" ", 1)[-1])
            for resolution, days in (
                ("1m", policy.minute_rollup_days),
                ("1h", policy.hour_rollup_days),
            ):
                status = await conn.execute(
                    "DELETE FROM analytics_inference_rollup WHERE resolution = $1 AND bucket < $2",
                    resolution,
                    _ts(now - days * 86400),
                )
                deleted[f"rollup_{resolution}"] = int(status.rsplit(" ", 1)[-1])
        return {"deleted": deleted, "method": "drop_chunks" if self.timescale else "delete"}

    async def totals(self, since: float) -> WindowTotals:
        row = await self._p().fetchrow(TOTALS_SQL.format(since="$1"), _ts(since))
        return _totals(row)

    async def latency_at_rank(self, since: float, rank: int) -> float | None:
        value = await self._p().fetchval(
            RANK_SQL.format(since="$1", offset="$2"), _ts(since), rank - 1
        )
        return None if value is None else float(value)

    async def power_readings(self, since: float) -> list[tuple[float, float]]:
        rows = await self._p().fetch(POWER_SQL.format(since="$1"), _ts(since))
        return [(r[0].timestamp(), float(r[1])) for r in rows]

    async def rollups(self, resolution: str, since: float) -> list[RollupRow]:
        rows = await self._p().fetch(
            "SELECT * FROM analytics_inference_rollup WHERE resolution = $1 AND bucket >= $2 "
            "ORDER BY bucket, side, model",
            resolution,
            _ts(since),
        )
        return [RollupRow(r[0], r[1].timestamp(), *r[2:]) for r in rows]

    async def count(self, table: str = ALL_EVENTS_VIEW) -> int:
        if table not in COUNTABLE:
            raise ValueError(table)
        return int(await self._p().fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608  # nosec B608: checked above
