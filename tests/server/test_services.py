"""Smoke tests against the real backing services started by `scripts/services start`.

They prove the services answer the way the server's memory (Redis), analytics sink
(PostgreSQL/TimescaleDB) and event bus (Kafka) will use them.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

# Real sockets to 127.0.0.1; needed when the Home Assistant test plugin (pytest-socket) is active.
pytestmark = pytest.mark.usefixtures("socket_enabled")


def test_redis_set_get(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    key = f"prime-spark-test:{uuid.uuid4().hex}"
    try:
        assert client.ping()
        assert client.set(key, "hello", ex=60)
        assert client.get(key) == b"hello"
    finally:
        client.delete(key)
        client.close()


async def test_postgres_timescaledb_hypertable(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn, timeout=10)
    schema = f"smoke_{uuid.uuid4().hex[:12]}"
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        version = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        )
        assert version, "timescaledb extension is not installed in the test database"

        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(
            f"CREATE TABLE {schema}.metrics"
            " (ts timestamptz NOT NULL, node text, value double precision)"
        )
        await conn.execute(
            f"SELECT create_hypertable('{schema}.metrics', by_range('ts', INTERVAL '1 day'))"
        )
        await conn.executemany(
            f"INSERT INTO {schema}.metrics VALUES (now() - $1 * INTERVAL '1 day', 'edge', $2)",
            [(i, float(i)) for i in range(3)],
        )
        hypertables = await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = $1 AND hypertable_name = 'metrics'",
            schema,
        )
        assert hypertables == 1
        rows = await conn.fetch(
            f"SELECT time_bucket(INTERVAL '1 day', ts) AS day, sum(value) FROM {schema}.metrics"
            " GROUP BY day ORDER BY day"
        )
        assert sum(r["sum"] for r in rows) == 3.0
        chunks = await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_schema = $1",
            schema,
        )
        assert chunks >= 2
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def test_kafka_produce_consume(kafka_bootstrap: str) -> None:
    topic = f"prime-spark-smoke-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"hello", key=b"k1")
        assert meta.topic == topic
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout=30)
        assert (msg.key, msg.value) == (b"k1", b"hello")
    finally:
        await consumer.stop()

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
