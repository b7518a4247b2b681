"""Real services for the analytics tests: a fresh PostgreSQL database per session (TimescaleDB
enabled in it when the server has the extension), unique Kafka topic prefixes, and a Kafka
broker of the test's own that a test may kill and restart (the shared one is never touched).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

KAFKA_LIBS = Path(os.environ.get("PRIME_SPARK_KAFKA_LIBS", "/opt/prime-spark/kafka-4.4.0/libs"))


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KafkaBroker:
    """A single-node KRaft broker from the Kafka jars in the rootfs, on ports of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.controller_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "server.properties").write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={directory / 'data'}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                ]
            )
            + "\n"
        )
        (directory / "log4j2.properties").write_text(
            "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = warn\nrootLogger.appenderRef.out.ref = OUT\n"
        )
        self._java(
            "kafka.tools.StorageTool",
            "format",
            # One argument: a base64 id can begin with "-", which argparse
            # would read as an option and refuse (1 format in 64 failed).
            f"--cluster-id={_cluster_id()}",
            "-c",
            str(directory / "server.properties"),
            wait=True,
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, *args: str, wait: bool = False) -> subprocess.Popen[bytes]:
        java = shutil.which("java")
        if java is None or not KAFKA_LIBS.is_dir():
            pytest.fail(
                f"java or the Kafka jars ({KAFKA_LIBS}) are missing: scripts/services start"
            )
        command = [
            java,
            "--sun-misc-unsafe-memory-access=allow",
            "-Xms128m",
            "-Xmx512m",
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.directory / 'logs'}",
            "-cp",
            f"{KAFKA_LIBS}/*",
            *args,
        ]
        log = (self.directory / "kafka.log").open("ab")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        if wait and proc.wait(timeout=120) != 0:
            pytest.fail(
                f"kafka {args[0]} failed: {(self.directory / 'kafka.log').read_text()[-3000:]}"
            )
        return proc

    def start(self) -> KafkaBroker:
        self.process = self._java("kafka.Kafka", str(self.directory / "server.properties"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"kafka exited: {(self.directory / 'kafka.log').read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.3)
        pytest.fail("test Kafka broker did not open its port in 120 s")

    def kill(self) -> None:
        """SIGKILL: the broker dies mid-stream, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


def _cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    yield broker
    broker.kill()
