"""Real services for the analytics tests: a fresh PostgreSQL database per session (TimescaleDB
enabled in it when the server has the extension), unique Kafka topic prefixes, and a Kafka
broker of the test's own that a test may kill and restart (the shared one is never touched).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from bench.private_services import PrivateKafka


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f'{name} is not set: run `eval "$(scripts/services env)"` first')
    return value


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A database of this session's own, dropped afterwards."""
    base = _env("PRIME_SPARK_TEST_POSTGRES_DSN")
    name = f"ps_analytics_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run_outside_loop(admin(f"CREATE DATABASE {name}"))
    yield base.rsplit("/", 1)[0] + "/" + name
    _run_outside_loop(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _run_outside_loop(coro: Any) -> None:
    """Session fixtures may first be requested from inside a test's running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _env("PRIME_SPARK_TEST_KAFKA_BOOTSTRAP")


@pytest.fixture
def topic_prefix(kafka_bootstrap: str) -> Iterator[str]:
    """Unique topic names for one test; its topics on the shared broker are deleted after."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield prefix
    _run_outside_loop(delete_topics(kafka_bootstrap, prefix))


async def delete_topics(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix + ".")]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    """The fault bench's private broker (bench/private_services.py): killed and restarted by
    a test on the same ports and data."""
    broker = PrivateKafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker
    broker.kill()
