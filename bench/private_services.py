"""A PostgreSQL and a Kafka broker of a bench's own, to stop and restart under load.

The shared services (scripts/services, ports 15432/19092) serve the test suite and benchmark
runs, so a fault bench must never touch them. ``scripts/services`` itself cannot start these:
the benches run inside the Python environment (scripts/shell), where the rootfs is ``/`` and
bubblewrap is absent. So the same binaries are started directly, on free ports, with data in a
directory the caller deletes afterwards. Settings are as scripts/services writes them, except
PostgreSQL keeps its durable defaults (``fsync``, ``synchronous_commit`` on): a fault bench
that kills the server must not lose commits to a setting chosen for test speed.

Each service is started in a session of its own, so :meth:`kill` can SIGKILL all of its
processes at once (the postmaster *and* its backends), as a crash would.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.server.server_process import free_port

PG_BIN = Path("/usr/lib/postgresql/18/bin")
KAFKA_LIBS = Path(os.environ.get("PRIME_SPARK_KAFKA_LIBS", "/opt/prime-spark/kafka-4.4.0/libs"))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class _Service:
    name = "service"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    def _spawn(self, command: list[str]) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _wait(self, ready: float) -> None:
        deadline = time.monotonic() + ready
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            if self.up():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within {ready:g} s")

    def up(self) -> bool:
        return _port_open(self.port)

    def kill(self) -> None:
        """SIGKILL every process of the service (its session): a crash, no clean shutdown."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # Children re-parented away from the leader may outlive it by a moment.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


class PrivatePostgres(_Service):
    """PostgreSQL 18 (+ TimescaleDB, as scripts/services has it) as the ``postgres`` user."""

    name = "postgres"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.data = directory / "data"
        self.sock = directory / "run"
        self.sock.mkdir(parents=True, exist_ok=True)
        for path in (directory, self.sock):
            os.chown(path, *_postgres_ids())
        self._as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C.UTF-8"]
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.sock}'\n"
                "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n"
                # /dev/shm in the sandbox is root's 0755: segments as files in the data dir.
                "dynamic_shared_memory_type = mmap\ntimezone = 'UTC'\n"
                "log_min_messages = warning\n"
            )

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, command: list[str]) -> None:
        uid, gid = _postgres_ids()
        with self.log.open("ab") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True,
                           user=uid, group=gid, extra_groups=[])  # fmt: skip

    def start(self) -> None:
        uid, gid = _postgres_ids()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(self.data)], stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, user=uid, group=gid,
                extra_groups=[],
            )  # fmt: skip
        self._wait(60)

    def up(self) -> bool:
        command = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run([*command, "-t", "1"], check=False).returncode == 0

    def stop(self) -> None:
        """A clean (fast) shutdown, for the end of the bench."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # "fast" shutdown
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process = proc
            self.kill()


def _postgres_ids() -> tuple[int, int]:
    import pwd  # noqa: PLC0415

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


class PrivateKafka(_Service):
    """A single-node KRaft broker (broker + controller) from the Kafka jars of the rootfs."""

    name = "kafka"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.controller_port = free_port()
        props = self.directory / "server.properties"
        props.write_text(
            "process.roles=broker,controller\nnode.id=1\n"
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}\n"
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}\n"
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}\n"
            "controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n"
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
            f"log.dirs={self.directory / 'data'}\nnum.partitions=1\n"
            "default.replication.factor=1\noffsets.topic.replication.factor=1\n"
            "offsets.topic.num.partitions=4\ntransaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n"
            "auto.create.topics.enable=true\n"
        )
        (self.directory / "log4j2.properties").write_text(
            "status = warn\nappender.out.type = Console\nappender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = warn\nrootLogger.appenderRef.out.ref = OUT\n"
        )
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        with self.log.open("ab") as log:
            subprocess.run(
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster}",
                           "-c", str(props)),
                stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120,
            )  # fmt: skip

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, *args: str) -> list[str]:
        return [
            "java", "--sun-misc-unsafe-memory-access=allow", "-Xms128m", "-Xmx512m",
            "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.directory / 'logs'}", "-cp", f"{KAFKA_LIBS}/*", *args,
        ]  # fmt: skip

    def start(self) -> None:
        self._spawn(self._java("kafka.Kafka", str(self.directory / "server.properties")))
        self._wait(120)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), for the end of the bench."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process = proc
            self.kill()
