"""Fixtures shared by every test package: where the real backing services listen.

`scripts/services start` runs Redis, PostgreSQL 18 + TimescaleDB and Kafka on loopback and
`scripts/services env` prints the variables below; `scripts/test` exports them. A test that needs a
service and does not find its variable fails (it is never skipped silently).
"""

from __future__ import annotations

import os

import pytest

_HINT = 'run `scripts/services start && eval "$(scripts/services env)"`, or use scripts/test'


def _required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.fail(f"{name} is not set: this test needs the real service ({_HINT})", pytrace=False)
    return value


@pytest.fixture(scope="session")
def redis_url() -> str:
    """redis://127.0.0.1:PORT/0 of the test Redis."""
    return _required_env("PRIME_SPARK_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """postgresql://user:password@127.0.0.1:PORT/db of the test PostgreSQL (TimescaleDB loaded)."""
    return _required_env("PRIME_SPARK_TEST_POSTGRES_DSN")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """host:port of the test Kafka broker."""
    return _required_env("PRIME_SPARK_TEST_KAFKA_BOOTSTRAP")
