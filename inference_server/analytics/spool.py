"""The disk spool: an append-only, fsync'd log of encoded events, read back in order.

Every event passes through it (it is the producer's write-ahead log): the writer appends a
batch and fsyncs it once, the delivery loop reads from a persisted cursor and moves the cursor
only after the destination (Kafka, or the local store when no Kafka is configured) has
acknowledged the batch. So Kafka going down only makes the backlog grow, the order is the
order of emission, and a restart resumes from the cursor: nothing acknowledged to an emitter
is lost, and a batch in flight at a crash is sent again (the sink drops duplicates by id).

Layout: ``<dir>/<12-digit id>.log`` segments of lines ``<type>.v<version>\\t<json>\\n`` and a
``cursor.json`` (segment, offset) written atomically. A process always starts a new segment, so
a line torn by a crash is never appended to; a torn tail is skipped when read.

Bound (the documented policy): at most ``max_bytes`` on disk. When an append would pass it, the
oldest segments are deleted first, their undelivered events counted as dropped — the newest
events are the ones a person looks at after an outage, and a bounded spool must never fill the
disk HA itself runs on. ``near_full`` (at 80 %) is exported as a metric so an alert fires well
before anything is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

_LOGGER = logging.getLogger(__name__)

CURSOR_FILE = "cursor.json"
SUFFIX = ".log"
NEAR_FULL_RATIO = 0.8
READ_CHUNK = 1 << 20


class Record(NamedTuple):
    """One spooled event (a tuple: one is made per event read, a frozen dataclass costs 2x)."""

    topic: str
    """``<type>.v<version>``: the topic without its prefix."""
    value: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    records: list[Record]
    end: tuple[int, int]
    """Cursor after this batch: (segment id, byte offset)."""
    skipped: int = 0
    """Unparseable lines (a torn tail) passed over while reading."""


def line_head(topic: str) -> bytes:
    """What precedes an event's JSON on its spool line (which a newline ends)."""
    return topic.encode() + b"\t"


def encode_line(topic: str, value: bytes) -> bytes:
    return line_head(topic) + value + b"\n"


class Spool:
    def __init__(
        self, directory: Path, *, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, min(segment_bytes, max_bytes // 8))
        self._sizes: dict[int, int] = {}
        self._cursor = (0, 0)
        self._active: int = 0
        self._file: int | None = None
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self.backlog = 0
        self.dropped_events = 0
        self.appended_events = 0
        self._warned_full = False

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Scan the directory, restore the cursor, count the backlog and start a new segment."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.glob("*" + SUFFIX):
            with contextlib.suppress(ValueError):
                self._sizes[int(path.stem)] = path.stat().st_size
        self._cursor = self._load_cursor()
        for seg in sorted(self._sizes):
            if seg < self._cursor[0]:
                self._unlink(seg)
        self.backlog = sum(self._count_lines(seg) for seg in sorted(self._sizes))
        self._active = max(self._sizes, default=0) + 1
        if not self._sizes:
            self._cursor = (self._active, 0)
        elif self._cursor[0] not in self._sizes:
            self._cursor = (min(self._sizes), 0)
        self._open_active()
        if self.backlog:
            _LOGGER.info("Analytics spool holds %d undelivered events; replaying", self.backlog)
            self._wakeup.set()

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None

    # ------------------------------------------------------------------ state
    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def near_full(self) -> bool:
        return self.size_bytes >= NEAR_FULL_RATIO * self.max_bytes

    # ------------------------------------------------------------------ writing
    async def append(self, lines: list[bytes]) -> None:
        """Write and fsync a batch of encoded lines (see :func:`encode_line`)."""
        if not lines:
            return
        data = b"".join(lines)
        async with self._lock:
            self._make_room(len(data))
            if self._sizes[self._active] and self._sizes[self._active] + len(data) > (
                self.segment_bytes
            ):
                self._roll()
            fd = self._file
            assert fd is not None  # nosec B101: _roll() opened it
            await asyncio.to_thread(_write_all, fd, data)
            self._sizes[self._active] += len(data)
            self.backlog += len(lines)
            self.appended_events += len(lines)
        if self.near_full and not self._warned_full:
            self._warned_full = True
            _LOGGER.warning(
                "Analytics spool is %d%% full (%d of %d bytes): is Kafka reachable?",
                100 * self.size_bytes // self.max_bytes,
                self.size_bytes,
                self.max_bytes,
            )
        elif not self.near_full:
            self._warned_full = False
        self._wakeup.set()

    def _make_room(self, incoming: int) -> None:
        """Enforce the bound: delete the oldest segments (on the loop: only when full)."""
        while self.size_bytes + incoming > self.max_bytes:
            oldest = min(self._sizes)
            if oldest == self._active:
                if self._sizes[oldest] == 0:
                    return  # one batch larger than the whole spool: write it anyway
                self._roll()
                continue
            lost = self._count_lines(oldest)
            self.dropped_events += lost
            self.backlog -= lost
            _LOGGER.error("Analytics spool full: dropped %d undelivered events", lost)
            self._unlink(oldest)
            if self._cursor[0] == oldest:
                self._cursor = (min(self._sizes), 0)
                self._save_cursor()

    def _roll(self) -> None:
        self.close()
        self._active += 1
        self._open_active()

    def _open_active(self) -> None:
        path = self._path(self._active)
        self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes[self._active] = 0

    # ------------------------------------------------------------------ reading
    async def wait(self, seconds: float | None = None) -> None:
        """Return when there is something to read (or after ``seconds``)."""
        if self.backlog:
            return
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()

    async def read(self, max_events: int, after: tuple[int, int] | None = None) -> Batch | None:
        """The next complete lines after the cursor, in order; ``None`` when caught up.

        ``after`` reads on from the end of a batch not committed yet (one still in flight to
        the destination), so the delivery loop can send the next batch while the last one
        waits for its acknowledgement; the cursor still moves only with :meth:`commit`.
        """
        start_at = after or self._cursor
        if not self.backlog or not self._written_after(start_at):
            return None
        try:
            return await asyncio.to_thread(self._read, max_events, start_at)
        except FileNotFoundError:
            return None  # the bound deleted the segment under the reader: read again

    def _written_after(self, position: tuple[int, int]) -> bool:
        """Whether any byte was appended after ``position`` (no thread hop, no file opened)."""
        segment, offset = position
        return any(
            size > (offset if seg == segment else 0)
            for seg, size in self._sizes.items()
            if seg >= segment
        )

    def _read(self, max_events: int, start_at: tuple[int, int]) -> Batch | None:
        segment, offset = start_at
        records: list[Record] = []
        skipped = 0
        for seg in sorted(s for s in self._sizes if s >= segment):
            start = offset if seg == segment else 0
            size = self._sizes.get(seg, 0)
            if start >= size:
                continue
            with self._path(seg).open("rb") as f:
                f.seek(start)
                chunk = f.read(min(READ_CHUNK, size - start))
            end = chunk.rfind(b"\n") + 1
            if end == 0:
                if seg != self._active and size - start <= READ_CHUNK:
                    skipped += 1  # a torn tail left by a crash: nothing complete follows
                    return Batch(records, (seg, size), skipped)
                continue
            # One C-level split rather than a Python step per line: this runs for every event
            # the node sends (a thread, but it holds the GIL the event loop needs).
            lines = chunk[: end - 1].split(b"\n")
            if len(lines) > max_events:
                del lines[max_events:]
                end = sum(map(len, lines)) + len(lines)
            names: dict[bytes, str] = {}
            for line in lines:
                topic, tab, value = line.partition(b"\t")
                if tab:
                    name = names.get(topic)
                    if name is None:
                        name = names[topic] = topic.decode(errors="replace")
                    records.append(Record(name, value))
                else:
                    skipped += 1
            return Batch(records, (seg, start + end), skipped)
        return None

    def commit(self, batch: Batch) -> None:
        """The batch is delivered: move the cursor past it and delete finished segments."""
        self._cursor = batch.end
        self.backlog = max(0, self.backlog - len(batch.records) - batch.skipped)
        for seg in sorted(self._sizes):
            if seg < self._cursor[0] or (
                seg == self._cursor[0]
                and seg != self._active
                and self._cursor[1] >= self._sizes[seg]
            ):
                self._unlink(seg)
        if self._cursor[0] not in self._sizes:
            self._cursor = (min(s for s in self._sizes if s > self._cursor[0]), 0)
        self._save_cursor()

    # ------------------------------------------------------------------ files
    def _path(self, seg: int) -> Path:
        return self.directory / f"{seg:012d}{SUFFIX}"

    def _unlink(self, seg: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(seg).unlink()
        self._sizes.pop(seg, None)

    def _count_lines(self, seg: int) -> int:
        start = self._cursor[1] if seg == self._cursor[0] else 0
        if seg < self._cursor[0]:
            return 0
        count = 0
        with self._path(seg).open("rb") as f:
            f.seek(start)
            while chunk := f.read(READ_CHUNK):
                count += chunk.count(b"\n")
        return count

    def _load_cursor(self) -> tuple[int, int]:
        try:
            data = json.loads((self.directory / CURSOR_FILE).read_text("utf-8"))
            return int(data["segment"]), int(data["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return (min(self._sizes, default=0), 0)

    def _save_cursor(self) -> None:
        """Atomic, not fsync'd: a lost cursor update only means a batch is sent twice."""
        tmp = self.directory / (CURSOR_FILE + ".tmp")
        tmp.write_text(json.dumps({"segment": self._cursor[0], "offset": self._cursor[1]}))
        tmp.replace(self.directory / CURSOR_FILE)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)
