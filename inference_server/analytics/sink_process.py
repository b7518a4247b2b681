"""The Kafka sink in a worker process of its own, supervised by the server.

Why a process: the sink decodes, checks and copies tens of thousands of events at a time. In
the server's process that work holds the event loop every request handler shares: while the
sink drained a backlog (Kafka back after an outage, several nodes' events at once) the loop
stalled for up to 300 ms at a time (bench/analytics.py, path (c)), and every request the node
served waited with it. In its own process the sink has a core of its own (a Pi 5 has four)
and the server's loop stays free; the whole pipeline on one node also gets past what one
Python thread can do (bench/RESULTS.md, analytics section).

The server holds a :class:`SinkProcess`. It starts the worker (:data:`WORKER_COMMAND`, the
same Python as the server's), writes the worker's settings (one JSON line) to
its stdin, reads its status (JSON lines) from its stdout, and starts it again whenever it
ends. Killing the worker at any point loses nothing and duplicates nothing: it commits
offsets only after the rows are durable, the next worker resumes from the last commit, and
the store keeps each event once. The worker stops when its stdin closes, so it never outlives
the server, not even one killed with SIGKILL. Its log lines go to the server's stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inference_server.analytics.kafka import KafkaSink
from inference_server.analytics.store import Store
from inference_server.analytics.store.postgres import PostgresStore
from inference_server.analytics.store.sqlite import SqliteStore

_LOGGER = logging.getLogger(__name__)

STATUS_SECONDS = 0.2
"""How often the worker reports its status while it changes."""
STOP_SECONDS = 10.0
"""How long a stopping worker has to cancel its writes and close its store before SIGKILL."""
RESTART_MAX_SECONDS = 15.0
STORE_RETRY_MAX_SECONDS = 2.0
TEXT_LIMIT = 2000
"""Characters of a reason or error in the status (a rejection's reason may quote the message)."""
STATUS_LINE_LIMIT = 1 << 20
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
WORKER_COMMAND = (
    sys.executable,
    "-c",
    f"import sys; sys.path.append({PACKAGE_ROOT!r}); from {__name__} import main; main()",
)
"""The same Python as the server's, and the package from where the server has it (appended:
a source tree; an installed package is found first). Not ``python -m``: the package imports
this module first, and runpy would run a second copy of it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreSpec:
    """Which store to open: what both processes need to open the same one."""

    postgres_dsn: str | None = None
    timescale: bool = True
    sqlite_path: str | None = None

    def new_store(self) -> Store:
        """The (unopened) store this names."""
        if self.postgres_dsn:
            return PostgresStore(self.postgres_dsn, timescale=self.timescale)
        if self.sqlite_path is None:
            raise ValueError("a store needs a PostgreSQL DSN or an SQLite path")
        return SqliteStore(Path(self.sqlite_path))


@dataclass(frozen=True, kw_only=True, slots=True)
class SinkConfig:
    """The worker's settings, sent on its stdin (not its command line: the DSN may hold a
    password, and a command line is visible to every user of the machine)."""

    bootstrap: str
    topics: list[str]
    group_id: str
    store: StoreSpec
    log_level: int = logging.INFO
    """The server's: the worker logs to the server's stderr, at the server's level."""

    def to_line(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> SinkConfig:
        fields: dict[str, Any] = json.loads(line)
        return cls(
            bootstrap=fields["bootstrap"],
            topics=list(fields["topics"]),
            group_id=fields["group_id"],
            store=StoreSpec(**fields["store"]),
            log_level=int(fields.get("log_level", logging.INFO)),
        )


@dataclass(kw_only=True, slots=True)
class SinkStatus:
    """What the worker reports: :class:`~.kafka.KafkaSink`'s numbers and its store's."""

    connected: bool = False
    partitions: int = 0
    consumed: int = 0
    stored: int = 0
    rejected: int = 0
    dead_letters_kept: int = 0
    last_rejection: str | None = None
    last_error: str | None = None


COUNTS = ("consumed", "stored", "rejected", "dead_letters_kept")
"""The status fields that count since the worker started (the supervisor adds them up)."""


class SinkProcess:
    """The server's side: starts the worker, keeps it running and shows its status.

    Reads like :class:`~.kafka.KafkaSink` (``connected``, ``partitions``, ``stored``,
    ``rejected``, ``last_rejection``, ``last_error``, ``run``), so health, metrics and the
    benches read either. The counts run over the worker's restarts.
    """

    def __init__(self, config: SinkConfig) -> None:
        self._config = config
        self._current = SinkStatus()
        self._ended = dict.fromkeys(COUNTS, 0)
        self.restarts = 0
        """Workers started again after one ended (a crash, a kill, an unexpected exit)."""
        self.pid: int | None = None
        self.exit_error: str | None = None
        """Why the last worker ended, while no new one has reported yet."""

    # ------------------------------------------------------------------ status
    @property
    def connected(self) -> bool:
        return self.pid is not None and self._current.connected

    @property
    def partitions(self) -> int:
        return self._current.partitions if self.connected else 0

    @property
    def consumed(self) -> int:
        return self._ended["consumed"] + self._current.consumed

    @property
    def stored(self) -> int:
        return self._ended["stored"] + self._current.stored

    @property
    def rejected(self) -> int:
        return self._ended["rejected"] + self._current.rejected

    @property
    def dead_letters_kept(self) -> int:
        return self._ended["dead_letters_kept"] + self._current.dead_letters_kept

    @property
    def last_rejection(self) -> str | None:
        return self._current.last_rejection

    @property
    def last_error(self) -> str | None:
        return self._current.last_error or self.exit_error

    # ------------------------------------------------------------------ supervision
    async def run(self) -> None:
        """Keep a worker running until cancelled; a worker that ends is started again."""
        backoff = 0.5
        while True:
            started = time.monotonic()
            try:
                code = await self._run_worker()
                self.exit_error = f"the sink worker ended with exit code {code}"
            except OSError as err:
                self.exit_error = f"cannot start the sink worker: {err}"
            except Exception as err:  # a bug here must not end the sink for good
                self.exit_error = f"the sink worker failed: {type(err).__name__}: {err}"
                _LOGGER.exception("Supervising the analytics sink worker failed")
            if time.monotonic() - started > 60:
                backoff = 0.5  # it ran a while: this is not a crash loop
            _LOGGER.warning("Analytics: %s; starting a new one in %.1f s", self.exit_error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_MAX_SECONDS)
            self.restarts += 1

    async def _run_worker(self) -> int:
        """One worker, from its start to its end (its exit code); cancelled, it is stopped."""
        proc = await asyncio.create_subprocess_exec(
            *WORKER_COMMAND,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=STATUS_LINE_LIMIT,
        )
        assert proc.stdin is not None  # nosec B101: PIPE above
        assert proc.stdout is not None  # nosec B101: PIPE above
        self.pid = proc.pid
        try:
            proc.stdin.write(self._config.to_line())
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
            async for line in proc.stdout:
                self._report(line)
            return await proc.wait()
        finally:
            await _stop(proc)
            self._fold()
            self.pid = None

    def _report(self, line: bytes) -> None:
        try:
            fields = json.loads(line)
            status = SinkStatus(**fields)
        except (ValueError, TypeError):
            _LOGGER.warning("Unreadable status from the sink worker: %r", line[:200])
            return
        self._current = status
        self.exit_error = None

    def _fold(self) -> None:
        """An ended worker's counts into the totals; the next one counts from zero."""
        for name in COUNTS:
            self._ended[name] += getattr(self._current, name)
        self._current = SinkStatus(last_rejection=self._current.last_rejection)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Close the worker's stdin (its signal to stop), then wait; kill it if it hangs."""
    if proc.returncode is not None:
        return
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        async with asyncio.timeout(STOP_SECONDS):
            await proc.wait()
    except TimeoutError:
        _LOGGER.warning("The sink worker did not stop within %.0f s: killed", STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise


# ---------------------------------------------------------------------- the worker
async def work(config: SinkConfig, commands: asyncio.StreamReader) -> None:
    """The worker's life: open the store, run the sink, report, stop at ``commands``' end."""
    store = config.store.new_store()
    sink = KafkaSink(config.bootstrap, topics=config.topics, group_id=config.group_id, store=store)
    tasks = [
        asyncio.create_task(_open_then_run(store, sink)),
        asyncio.create_task(_report_status(sink, store)),
    ]
    try:
        await commands.read()  # EOF: the server closed our stdin, or it is gone
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await store.close()
        _write_status(_status_of(sink, store))


async def _open_then_run(store: Store, sink: KafkaSink) -> None:
    """The store first: the sink would take events it cannot write yet. While it is down,
    the events wait in Kafka, and the sink's ``last_error`` (so the status) says why."""
    backoff = 0.25
    while True:
        try:
            await store.open()
            break
        except Exception as err:
            log = _LOGGER.debug if sink.last_error else _LOGGER.warning
            sink.last_error = f"store: {err}"
            log("Analytics sink worker cannot open the store (%s); retrying", err)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, STORE_RETRY_MAX_SECONDS)
    sink.last_error = None
    await sink.run()


def _status_of(sink: KafkaSink, store: Store) -> SinkStatus:
    return SinkStatus(
        connected=sink.connected,
        partitions=sink.partitions,
        consumed=sink.consumed,
        stored=sink.stored,
        rejected=sink.rejected,
        dead_letters_kept=store.dead_letters_kept,
        last_rejection=_cut(sink.last_rejection),
        last_error=_cut(sink.last_error),
    )


def _cut(text: str | None) -> str | None:
    return text if text is None or len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + "…"


async def _report_status(sink: KafkaSink, store: Store) -> None:
    last: SinkStatus | None = None
    while True:
        now = _status_of(sink, store)
        if now != last:
            _write_status(now)
            last = now
        await asyncio.sleep(STATUS_SECONDS)


def _write_status(status: SinkStatus) -> None:
    """One line on stdout (a pipe the server reads; small, so the write does not block)."""
    with contextlib.suppress(OSError):
        sys.stdout.buffer.write(json.dumps(asdict(status)).encode() + b"\n")
        sys.stdout.buffer.flush()


async def _main() -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    line = await commands.readline()
    if not line:
        return  # the server went away before it sent the settings
    config = SinkConfig.from_line(line)
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s (analytics sink worker) %(name)s: %(message)s",
    )
    await work(config, commands)


def main() -> None:
    """The worker's entry point (:data:`WORKER_COMMAND`). Ctrl-C in a terminal reaches the
    whole process group: the server stops the worker (by closing its stdin), in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_main())
