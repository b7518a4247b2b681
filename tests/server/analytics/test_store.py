"""Both stores against the same hand-computed fixture: idempotent inserts, rollups, summary,
retention, migrations. PostgreSQL is the real server (TimescaleDB when it has the extension);
SQLite is the embedded default."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from bench.analytics import drop_db, fresh_db
from inference_server.analytics.events import (
    InferenceEvent,
    LinkEvent,
    PowerEvent,
    RoutingEvent,
    envelope,
)
from inference_server.analytics.kafka import MAX_REFUSED, insert_isolating
from inference_server.analytics.schema import validate_event
from inference_server.analytics.store import RetentionPolicy, Store, StoreError, StoreRefused
from inference_server.analytics.store.base import (
    DEAD_LETTERS,
    EVENT_COLUMNS,
    TABLE_COLUMNS,
    DeadLetter,
    rows_by_table,
)
from inference_server.analytics.store.postgres import PG_EPOCH, PostgresStore, _ts
from inference_server.analytics.store.sqlite import SqliteStore
from inference_server.analytics.summary import energy_wh, summarize

NOW = 1_800_000_000.0  # a fixed "now", on a whole hour (1_800_000_000 % 3600 == 0)
T0 = NOW - 600  # ten minutes before now, on a whole minute


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "a.sqlite3")
    else:
        # One fresh schema-less database per session; tables are emptied between tests.
        dsn = request.getfixturevalue("pg_dsn")
        s = PostgresStore(dsn)
    await s.open()
    if isinstance(s, PostgresStore):
        pool = s._p()
        await pool.execute(
            "TRUNCATE analytics_events, analytics_inference, analytics_power, "
            "analytics_inference_rollup, analytics_watermarks, analytics_dead_letters"
        )
    yield s
    await s.close()


def inference(at: float, **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": "gemma",
        "route": "/v1/chat/completions",
        "status": 200,
        "latency_ms": 100.0,
    }
    fields.update(kw)
    return envelope(InferenceEvent(**fields), node_id="n1", occurred_at=at)


def power(at: float, watts: float) -> dict[str, Any]:
    return envelope(
        PowerEvent(kind="reading", watts=watts, source="test"), node_id="n1", occurred_at=at
    )


# The fixture, by hand:
#  minute T0:      3 edge requests, latencies 100, 200, 300 ms, 10+20+30 completion tokens
#                  over 100+200+300 ms of decoding; one exact cache hit, one miss
#  minute T0+60:   1 cloud request 400 ms (40 tokens over 400 ms), 1 edge error (status 500, 5 ms)
#  power:          10 W at T0, 20 W at T0+60, 20 W at T0+120 → 15 W·60 s + 20 W·60 s = 2100 J
FIXTURE = [
    inference(T0 + 1, latency_ms=100, completion_tokens=10, generation_ms=100, cache="exact"),
    inference(T0 + 2, latency_ms=200, completion_tokens=20, generation_ms=200, cache="miss"),
    inference(T0 + 3, latency_ms=300, completion_tokens=30, generation_ms=300),
    inference(T0 + 61, latency_ms=400, completion_tokens=40, generation_ms=400, side="cloud"),
    inference(T0 + 62, latency_ms=5, status=500),
    power(T0, 10),
    power(T0 + 60, 20),
    power(T0 + 120, 20),
]


async def test_insert_is_idempotent_by_event_id(store: Store) -> None:
    assert await store.insert(FIXTURE) == len(FIXTURE)
    # A replay (spool resend, Kafka redelivery) and duplicates inside one batch add nothing.
    assert await store.insert(FIXTURE + FIXTURE[:2]) == 0
    assert await store.count() == len(FIXTURE)
    assert await store.count("analytics_inference") == 5
    assert await store.count("analytics_power") == 3
    assert await store.count("analytics_events") == 0  # typed events live in their own tables
    assert await store.migrations() == sorted(await store.migrations())
    assert 1 in await store.migrations()


async def test_a_batch_that_overlaps_what_is_stored_adds_only_the_new_events(
    store: Store,
) -> None:
    """PostgreSQL's fast COPY fails on the first stored id; the batch then goes the
    idempotent way, in the same transaction, and stores exactly the rest."""
    assert await store.insert(FIXTURE[:3]) == 3
    assert await store.insert(FIXTURE) == len(FIXTURE) - 3
    assert await store.count() == len(FIXTURE)
    assert (await summarize(store, "1h", now=NOW))["requests"] == 5
    # The next batch takes the fast way again, and a replay is a no-op.
    assert await store.insert([inference(T0 + 5, latency_ms=70)]) == 1
    assert await store.insert(FIXTURE) == 0
    assert await store.count("analytics_inference") == 6
    if isinstance(store, PostgresStore):
        assert store.replayed_batches == 2


async def _all_events(store: Store) -> list[tuple[str, str, int, str, dict[str, Any]]]:
    sql = "SELECT event_id, type, version, node_id, data FROM analytics_all_events"
    if isinstance(store, PostgresStore):
        rows = [tuple(r) for r in await store._p().fetch(sql)]
    else:
        assert isinstance(store, SqliteStore)
        rows = await store._run(lambda db: db.execute(sql).fetchall())
    return [(str(i), t, v, n, orjson.loads(d)) for i, t, v, n, d in rows]


def _as_stored(event: dict[str, Any]) -> tuple[str, str, int, str, dict[str, Any]]:
    """What the view gives back: the envelope, ``served_for`` only where it is set."""
    data = dict(event["data"])
    if data.get("served_for", "") is None:
        del data["served_for"]
    return (event["event_id"], event["type"], event["version"], event["node_id"], data)


def _every_kind() -> list[dict[str, Any]]:
    v1 = inference(T0 + 2, latency_ms=80, peer=None)
    v1["version"] = 1
    del v1["data"]["served_for"]
    return [
        inference(T0 + 1, side="cloud", peer="cloud-1", stream=True, cache="semantic"),
        v1,
        *forwarded_pair(T0 + 3),
        power(T0, 10.5),
        envelope(
            PowerEvent(kind="mode_change", mode="power_save", previous_mode="balanced"),
            node_id="n1",
            occurred_at=T0 + 4,
        ),
        envelope(
            RoutingEvent(mode="balanced", decision="edge", reason="healthy", model="gemma"),
            node_id="n1",
            occurred_at=T0 + 5,
        ),
        envelope(LinkEvent(interface="wg0", status="up"), node_id="n1", occurred_at=T0 + 6),
    ]


async def test_every_event_reads_back_whole_from_the_view(store: Store) -> None:
    """A typed event is kept only as its table's row: every field of its ``data`` comes back."""
    events = _every_kind()
    for event in events:
        validate_event(event)
    assert await store.insert(events) == len(events)
    assert await store.count("analytics_events") == 2  # routing and link
    assert sorted(await _all_events(store)) == sorted(_as_stored(e) for e in events)


async def test_integers_written_as_floats_by_another_producer_are_stored(store: Store) -> None:
    """JSON Schema's integer admits 200.0, which another producer may send. The release before
    cast it from jsonb text in PostgreSQL and failed (a batch that can never be written stalls
    the sink's offsets for good); both drivers store it as 200."""
    event = inference(T0 + 1, latency_ms=10, prompt_tokens=3)
    event["data"].update(status=200.0, prompt_tokens=3.0, completion_tokens=0.0, latency_ms=10)
    validate_event(event)
    assert await store.insert([event]) == 1
    assert (await summarize(store, "1h", now=NOW))["prompt_tokens"] == 3


async def _execute(store: Store, *statements: str) -> None:
    if isinstance(store, PostgresStore):
        for statement in statements:
            await store._p().execute(statement)
    else:
        assert isinstance(store, SqliteStore)

        def run(db: Any) -> None:
            for statement in statements:
                db.execute(statement)

        await store._run(run)


async def _insert(
    store: Store, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    names = ", ".join(columns)
    if isinstance(store, PostgresStore):
        marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        await store._p().executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
    else:
        assert isinstance(store, SqliteStore)
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks})"
        await store._run(lambda db: db.executemany(sql, rows))


async def test_typed_events_stored_in_the_previous_layout_move_to_their_tables(
    store: Store,
) -> None:
    """Until this release an inference or power event was also kept as JSON in
    ``analytics_events``, its table lacking the fields no query read (``peer``, ``version``,
    ``previous_mode``, ``source``). The migration fills those in from the JSON, then drops the
    copies: every event once, whole."""
    last = max(await store.migrations())
    typed = 5 if isinstance(store, PostgresStore) else 3  # the migration under test
    await _execute(
        store,
        "DROP VIEW analytics_all_events",
        "ALTER TABLE analytics_inference DROP COLUMN version",
        "ALTER TABLE analytics_inference DROP COLUMN peer",
        "ALTER TABLE analytics_power DROP COLUMN version",
        "ALTER TABLE analytics_power DROP COLUMN previous_mode",
        "ALTER TABLE analytics_power DROP COLUMN source",
        f"DELETE FROM analytics_migrations WHERE version = {typed}",
    )
    events = _every_kind()
    # The previous release's rows: every event as JSON, the typed ones also in their tables.
    when = _ts if isinstance(store, PostgresStore) else float
    await _insert(
        store,
        "analytics_events",
        EVENT_COLUMNS,
        [
            (e["event_id"], e["type"], e["version"], when(e["occurred_at"]), e["node_id"],
             orjson.dumps(e["data"]).decode())
            for e in events
        ],
    )  # fmt: skip
    rows = rows_by_table(events, when)
    new = {"version", "peer", "previous_mode", "source"}
    for table in ("analytics_inference", "analytics_power"):
        keep = [i for i, c in enumerate(TABLE_COLUMNS[table]) if c not in new]
        columns = tuple(TABLE_COLUMNS[table][i] for i in keep)
        await _insert(store, table, columns, [tuple(r[i] for i in keep) for r in rows[table]])
    await store.close()
    await store.open()
    assert max(await store.migrations()) == last
    assert await store.count("analytics_events") == 2
    assert await store.count() == len(events)
    assert sorted(await _all_events(store)) == sorted(_as_stored(e) for e in events)


async def test_summary_matches_the_hand_computed_fixture(store: Store) -> None:
    await store.insert(FIXTURE)
    s = await summarize(store, "1h", now=NOW)
    assert s["requests"] == 5
    assert s["errors"] == 1
    assert s["requests_per_minute"] == round(5 / 60, 3)
    # successful latencies 100, 200, 300, 400: p50 = 2nd, p95 = ceil(3.8) = 4th
    assert s["latency_p50_ms"] == 200
    assert s["latency_p95_ms"] == 400
    assert s["completion_tokens"] == 100
    assert s["tokens_per_second"] == 100.0  # 100 tokens over 1.0 s of decoding
    assert s["edge_share"] == 0.8
    assert s["cloud_share"] == 0.2
    assert s["cache_hit_rate"] == 0.5
    assert s["energy_wh"] == round(2100 / 3600, 4)
    assert s["energy_per_request_wh"] == round(2100 / 3600 / 5, 6)
    # 5 minutes back from NOW holds nothing of the fixture
    empty = await summarize(store, "5m", now=NOW)
    assert empty["requests"] == 0
    assert empty["latency_p95_ms"] is None
    assert empty["energy_per_request_wh"] is None


async def test_rollups_match_the_hand_computed_fixture(store: Store) -> None:
    await store.insert(FIXTURE)
    result = await store.rollup()
    assert result["new_rows"] == 5
    minutes = {(r.bucket, r.side): r for r in await store.rollups("1m", 0)}
    assert set(minutes) == {(T0, "edge"), (T0 + 60, "cloud"), (T0 + 60, "edge")}
    first = minutes[(T0, "edge")]
    assert (first.requests, first.errors, first.completion_tokens) == (3, 0, 60)
    assert (first.latency_ms_sum, first.latency_ms_max) == (600, 300)
    assert (first.cache_hits, first.cache_misses) == (1, 1)
    assert minutes[(T0 + 60, "edge")].errors == 1
    hours = await store.rollups("1h", 0)
    assert {(r.bucket, r.side, r.requests) for r in hours} == {
        (NOW - 3600, "edge", 4),
        (NOW - 3600, "cloud", 1),
    }
    # A late event (a spool replayed after an outage) lands in an old bucket: recomputed.
    await store.insert([inference(T0 + 4, latency_ms=50)])
    assert (await store.rollup())["new_rows"] == 1
    minutes = {(r.bucket, r.side): r for r in await store.rollups("1m", 0)}
    assert minutes[(T0, "edge")].requests == 4
    assert (await store.rollup())["new_rows"] == 0
    # A replayed event and a new one in one run: PostgreSQL recomputes every bucket from the
    # first to the last (SQLite the two they fell in); each bucket is what its rows say.
    await store.insert([inference(T0 + 5, latency_ms=60), inference(NOW - 1)])
    assert (await store.rollup())["new_rows"] == 2
    minutes = {(r.bucket, r.side): r for r in await store.rollups("1m", 0)}
    assert {k: r.requests for k, r in minutes.items()} == {
        (T0, "edge"): 5,
        (T0 + 60, "cloud"): 1,
        (T0 + 60, "edge"): 1,
        (NOW - 60, "edge"): 1,
    }
    assert minutes[(T0 + 60, "edge")].errors == 1
    hours = {(r.bucket, r.side): r.requests for r in await store.rollups("1h", 0)}
    assert hours == {(NOW - 3600, "edge"): 7, (NOW - 3600, "cloud"): 1}


async def test_retention_deletes_only_what_is_older_than_the_policy(store: Store) -> None:
    old = inference(NOW - 10 * 86400)
    await store.insert([*FIXTURE, old])
    await store.rollup()
    detail = await store.retention(RetentionPolicy(raw_days=7), NOW)
    assert "deleted" in detail
    assert await store.count("analytics_inference") == 5
    assert await store.count() == len(FIXTURE)


async def test_dead_letters_are_kept_once_and_go_with_the_raw_retention(store: Store) -> None:
    """A message that is not an event, kept as it came (a NUL and all), once however often it
    is redelivered; the reason, which may quote it, is kept as text a column can hold."""
    letter = DeadLetter("link.v1", "bad \x00 quoted", b'{"x": "\x00"}\xff')
    other = DeadLetter("link.v1", "not JSON", b"[")
    assert await store.keep_dead_letters([letter, other, letter]) == 2
    assert await store.keep_dead_letters([letter]) == 0
    assert await store.keep_dead_letters([]) == 0
    assert await store.count(DEAD_LETTERS) == 2
    assert store.dead_letters_kept == 2
    if isinstance(store, PostgresStore):
        row = await store._p().fetchrow(
            "SELECT reason, value FROM analytics_dead_letters WHERE topic = 'link.v1' "
            "AND reason LIKE 'bad%'"
        )
        assert (row["reason"], bytes(row["value"])) == ("bad \\u0000 quoted", letter.value)
    now = time.time()
    await store.retention(RetentionPolicy(raw_days=7), now)
    assert await store.count(DEAD_LETTERS) == 2
    detail = await store.retention(RetentionPolicy(raw_days=7), now + 8 * 86400)
    assert detail["deleted"][DEAD_LETTERS] == 2
    assert await store.count(DEAD_LETTERS) == 0


async def test_postgres_path_reports_timescale(pg_dsn: str) -> None:
    """Says which path ran: here TimescaleDB (Apache licence) with hypertables, app rollups."""
    s = PostgresStore(pg_dsn)
    await s.open()
    try:
        print(f"PostgreSQL analytics path: {s.kind}")
        assert s.kind in {"postgresql", "timescaledb", "timescaledb-apache"}
        if s.timescale:
            assert 2 in await s.migrations()
            tables = {
                r[0]
                for r in await s._p().fetch(
                    "SELECT hypertable_name FROM timescaledb_information.hypertables"
                )
            }
            assert {"analytics_events", "analytics_inference", "analytics_power"} <= tables
        # And a second open (another node, a restart) migrates nothing twice.
        before = await s.migrations()
        await s.close()
        await s.open()
        assert await s.migrations() == before
    finally:
        await s.close()


@asynccontextmanager
async def fresh_database(pg_dsn: str, *settings: str) -> AsyncIterator[str]:
    """A database of the test's own (the benches' :func:`fresh_db` and :func:`drop_db`;
    ``settings``: ``ALTER DATABASE … SET`` clauses, which its sessions then start with)."""
    dsn, name = await fresh_db(pg_dsn)
    try:
        admin = await asyncpg.connect(pg_dsn)
        try:
            for setting in settings:
                await admin.execute(f"ALTER DATABASE {name} SET {setting}")
        finally:
            await admin.close()
        yield dsn
    finally:
        await drop_db(pg_dsn, name)


async def test_plain_postgres_path_without_timescale(pg_dsn: str) -> None:
    """timescale: false exercises the plain-PostgreSQL path on the same server."""
    async with fresh_database(pg_dsn) as dsn:
        s = PostgresStore(dsn, timescale=False)
        await s.open()
        try:
            assert s.kind == "postgresql"
            await s.insert(FIXTURE)
            assert (await summarize(s, "1h", now=NOW))["latency_p95_ms"] == 400
            assert (await s.retention(RetentionPolicy(), NOW))["method"] == "delete"
        finally:
            await s.close()


async def _inference_indexes(s: PostgresStore) -> dict[str, str]:
    rows = await s._p().fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'analytics_inference'"
    )
    return {r[0]: r[1] for r in rows}


@pytest.mark.parametrize("timescale", [True, False])
async def test_an_upgraded_request_table_gets_brin_indexes_and_keeps_its_rows(
    pg_dsn: str, timescale: bool
) -> None:
    """Migration 6 on a database of the release before (B-tree time and seq indexes, rows in
    it): the indexes become BRIN, the rows stay, and the rollup still counts them all."""
    async with fresh_database(pg_dsn) as dsn:
        s = PostgresStore(dsn, timescale=timescale)
        await s.open()
        try:
            await s.insert(FIXTURE)
            await s._p().execute(
                "DROP INDEX analytics_inference_time; DROP INDEX analytics_inference_seq;"
                "CREATE INDEX analytics_inference_time ON analytics_inference "
                "(occurred_at DESC);"
                "CREATE INDEX analytics_inference_seq ON analytics_inference (seq);"
                "DELETE FROM analytics_migrations WHERE version = 6"
            )
            await s.close()
            await s.open()
            assert 6 in await s.migrations()
            indexes = await _inference_indexes(s)
            for name in ("analytics_inference_time", "analytics_inference_seq"):
                assert "USING brin" in indexes[name], indexes[name]
            assert "USING btree" in indexes["analytics_inference_pkey"]
            assert await s.count("analytics_inference") == 5
            assert (await s.rollup())["new_rows"] == 5
            hours = await s.rollups("1h", 0)
            assert sum(r.requests for r in hours) == 5
        finally:
            await s.close()


async def test_rollup_buckets_are_utc_whatever_the_database_time_zone(pg_dsn: str) -> None:
    """India is 5:30 off UTC: ``date_trunc('hour')`` in the session's zone had put the hour
    buckets at half past. Buckets are UTC hours and minutes, as the SQLite store's are. The
    watermark (the seq identity's last value) takes each new row once."""
    async with fresh_database(pg_dsn, "timezone TO 'Asia/Kolkata'") as dsn:
        s = PostgresStore(dsn)
        await s.open()
        try:
            assert await s._p().fetchval("SHOW timezone") == "Asia/Kolkata"
            await s.insert(FIXTURE)
            assert (await s.rollup())["new_rows"] == 5
            hours = await s.rollups("1h", 0)
            assert {(r.bucket, r.side, r.requests) for r in hours} == {
                (NOW - 3600, "edge", 4),
                (NOW - 3600, "cloud", 1),
            }
            minutes = {(r.bucket, r.side): r.requests for r in await s.rollups("1m", 0)}
            assert minutes == {(T0, "edge"): 3, (T0 + 60, "cloud"): 1, (T0 + 60, "edge"): 1}
            # Rows after the watermark only: a second rollup finds none, a new row one.
            assert (await s.rollup())["new_rows"] == 0
            await s.insert([inference(NOW - 1)])
            assert (await s.rollup())["new_rows"] == 1
            hours = await s.rollups("1h", 0)
            assert sum(r.requests for r in hours) == 6
        finally:
            await s.close()


def forwarded_pair(at: float) -> list[dict[str, Any]]:
    """One client request the edge forwarded to the cloud: the edge's event (side cloud, the
    latency its client saw) and the cloud's (the work, ``served_for`` the edge)."""
    fields: dict[str, Any] = {"model": "gemma", "route": "/v1/chat/completions", "status": 200}
    edge = InferenceEvent(
        **fields, side="cloud", peer="cloud", prompt_tokens=5, completion_tokens=10, latency_ms=500
    )
    cloud = InferenceEvent(
        **fields,
        prompt_tokens=5,
        completion_tokens=10,
        latency_ms=400,
        generation_ms=100,
        served_for="edge-1",
    )
    return [
        envelope(edge, node_id="edge-1", occurred_at=at),
        envelope(cloud, node_id="cloud-1", occurred_at=at + 0.1),
    ]


async def test_a_forwarded_request_counts_once_and_its_work_where_it_was_done(
    store: Store,
) -> None:
    await store.insert(forwarded_pair(T0 + 1))
    s = await summarize(store, "1h", now=NOW)
    assert s["requests"] == 1
    assert s["forwarded_requests"] == 1
    assert (s["prompt_tokens"], s["completion_tokens"]) == (5, 10)
    assert s["cloud_share"] == 1.0 and s["edge_share"] == 0.0
    assert s["latency_p50_ms"] == s["latency_p95_ms"] == 500  # what the client waited
    assert s["tokens_per_second"] == 100.0  # the cloud's 10 tokens over its 100 ms
    await store.rollup()
    minutes = {(r.bucket, r.side): r for r in await store.rollups("1m", 0)}
    assert minutes[(T0, "cloud")].requests == 1
    assert (minutes[(T0, "edge")].requests, minutes[(T0, "edge")].forwarded) == (0, 1)
    # An event of the old version (no served_for) from a node not yet upgraded still counts.
    old = inference(T0 + 5, latency_ms=100)
    old["version"] = 1
    del old["data"]["served_for"]
    await store.insert([old])
    assert (await summarize(store, "1h", now=NOW))["requests"] == 2


async def test_work_served_for_a_node_without_events_here_counts_as_a_request(
    store: Store,
) -> None:
    """The cloud's own database (or an edge with analytics off): nobody else counts it."""
    await store.insert(forwarded_pair(T0 + 1)[1:])
    s = await summarize(store, "1h", now=NOW)
    assert (s["requests"], s["forwarded_requests"], s["completion_tokens"]) == (1, 0, 10)
    assert s["edge_share"] == 1.0


async def test_a_database_of_the_previous_release_is_upgraded_in_place(tmp_path: Path) -> None:
    """A SQLite store made before served_for (migration 1 only, rolled up): the new migration
    adds the columns, keeps the rows, and the next rollup recomputes every bucket."""
    import sqlite3

    from inference_server.analytics.store.sqlite import MIGRATIONS

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0][1])
    db.execute("CREATE TABLE analytics_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    db.execute("INSERT INTO analytics_migrations VALUES (1, 0)")
    db.execute(
        "INSERT INTO analytics_inference (event_id, occurred_at, node_id, model, side, route, "
        "status, prompt_tokens, completion_tokens, latency_ms, generation_ms, cache, stream) "
        "VALUES ('e1', ?, 'n1', 'gemma', 'edge', '/v1/chat/completions', 200, 1, 2, 50, 20, "
        "'none', 0)",
        (T0 + 1,),
    )
    db.execute("INSERT INTO analytics_watermarks VALUES ('inference_rollup', 1)")
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.migrations() == [1, 2, 3, 4]
        await store.insert(forwarded_pair(T0 + 2))
        assert (await summarize(store, "1h", now=NOW))["requests"] == 2
        assert (await store.rollup())["new_rows"] == 3
        rows = {(r.side, r.requests, r.forwarded) for r in await store.rollups("1m", 0)}
        assert rows == {("edge", 1, 1), ("cloud", 1, 0)}
    finally:
        await store.close()


def test_energy_that_overflows_is_unknown_not_nan() -> None:
    """Readings stored before power.v1 bounded watts summed to inf - inf: NaN in the JSON."""
    assert energy_wh([(0.0, 3600.0), (1.0, 3600.0)]) == 1.0
    assert energy_wh([(0.0, 1e308), (1.0, 1e308), (2.0, -1e308)]) is None


def test_a_time_is_written_as_the_microseconds_its_datetime_has() -> None:
    """PostgreSQL's connections take a time as microseconds since 2000 (no ``datetime`` per
    row): the count is the one ``datetime.fromtimestamp`` rounds to, fractions half to even."""
    rng = random.Random(7)
    times = [0.0, 946684800.0, 1795772228.1147091, 253402300799.0, 1.0000005, 1.0000015]
    times += [rng.uniform(0, 253402300799) for _ in range(20_000)]
    times += [rng.randrange(10**9, 2 * 10**9) + rng.randrange(10**6) / 10**6 for _ in range(5000)]
    for epoch in times:
        expected = datetime.fromtimestamp(epoch, UTC) - PG_EPOCH
        assert _ts(epoch) == expected // timedelta(microseconds=1), epoch


async def test_times_read_back_as_they_were_written(store: Store) -> None:
    late = 253402300798.5  # 9999-12-31T23:59:58.5Z: within the schema's bound, with a fraction
    await store.insert(
        [
            envelope(PowerEvent(kind="reading", watts=w), node_id="n", occurred_at=at)
            for at, w in ((NOW, 2.0), (NOW + 0.000001, 2.5), (late, 3.0))
        ]
    )
    assert await store.power_readings(NOW - 1) == [(NOW, 2.0), (NOW + 0.000001, 2.5), (late, 3.0)]
    if isinstance(store, PostgresStore):  # the codec reads what asyncpg's own reads
        read = await store._p().fetchval(
            "SELECT array['infinity', '-infinity', '2000-01-01 00:00:00.000001+00']::timestamptz[]"
        )
        assert read == [
            datetime.max.replace(tzinfo=UTC),
            datetime.min.replace(tzinfo=UTC),
            PG_EPOCH + timedelta(microseconds=1),
        ]
        assert await store._p().fetchval("SELECT $1::timestamptz", PG_EPOCH) == PG_EPOCH
    # a cut-off time as a parameter (past the end of a TimescaleDB chunk: whole chunks go)
    await store.retention(RetentionPolicy(raw_days=0), NOW + 30 * 86400)
    assert await store.power_readings(0) == [(late, 3.0)]


def _with_nul(i: int) -> dict[str, Any]:
    """A valid event PostgreSQL cannot hold: JSON strings may carry NUL, its text cannot."""
    if i % 2:
        return envelope(
            RoutingEvent(mode="edge_first", decision="edge", reason="a\x00b"), node_id="n"
        )
    return inference(NOW, model="gem\x00ma")


async def test_a_value_the_store_cannot_hold_is_refused_as_such(store: Store) -> None:
    for i in range(2):
        validate_event(_with_nul(i))
        if isinstance(store, PostgresStore):
            with pytest.raises(StoreRefused, match="PostgreSQL refused a value"):
                await store.insert([inference(NOW), _with_nul(i)])
        else:  # SQLite's text holds NUL
            assert await store.insert([_with_nul(i)]) == 1
    if isinstance(store, PostgresStore):
        assert await store.count() == 0


async def test_refused_events_are_isolated_and_the_rest_stored(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        await store._p().execute(
            "TRUNCATE analytics_events, analytics_inference, analytics_dead_letters"
        )
        good = [inference(NOW + i) for i in range(37)]
        bad = [_with_nul(i) for i in range(3)]
        batch = good[:10] + bad[:1] + good[10:30] + bad[1:] + good[30:]
        refused: list[tuple[Any, Any]] = []
        garbage = DeadLetter("inference.v2", "not JSON", b"\x00not json")
        stored = await insert_isolating(
            store, batch, lambda e, err: refused.append((e, err)), [garbage]
        )
        assert stored == 37 and await store.count() == 37
        assert [e for e, _ in refused] == bad
        assert all(isinstance(err, StoreRefused) for _, err in refused)
        # Kept whole: the refused events as their JSON, the message that was none as it came.
        rows = await store._p().fetch("SELECT topic, reason, value FROM analytics_dead_letters")
        kept = {bytes(r["value"]): (r["topic"], r["reason"]) for r in rows}
        assert set(kept) == {garbage.value, *(orjson.dumps(e) for e in bad)}
        reasons = [reason for value, (_, reason) in kept.items() if value != garbage.value]
        assert all(r.startswith("PostgreSQL refused a value: ") for r in reasons), reasons
        # The batch again (a redelivery after a crash): nothing stored or kept twice.
        assert await insert_isolating(store, batch, lambda e, err: None, [garbage]) == 0
        assert await store.count(DEAD_LETTERS) == 4
        # More refusals in one batch than MAX_REFUSED: not a poisoned message but something
        # systemic; the batch is kept for retries (StoreError), nothing is handed over as refused.
        many = [_with_nul(i) for i in range(MAX_REFUSED + 1)] + [inference(NOW + 100)]
        refused.clear()
        with pytest.raises(StoreError, match="refuses much of one batch") as raised:
            await insert_isolating(store, many, lambda e, err: refused.append((e, err)))
        assert not isinstance(raised.value, StoreRefused)
        assert refused == []
        assert await store.count(DEAD_LETTERS) == 4
    finally:
        await store.close()
