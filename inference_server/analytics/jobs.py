"""Scheduled jobs inside the server (the role Airflow had in the seed stack): rollups,
retention, periodic samples.

Each job runs on its own interval in one background task; a failure is recorded and retried
on the next tick, never raised into the server. Last run, duration, result and counts are kept
for the status API and ``/metrics`` so a silently failing job shows up on a dashboard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_LOGGER = logging.getLogger(__name__)

JobFn = Callable[[], Awaitable[dict[str, Any] | None]]


@dataclass(kw_only=True)
class Job:
    name: str
    interval: float
    run: JobFn
    last_run: float | None = None
    """Unix time the last run started."""
    last_duration: float | None = None
    last_result: str | None = None
    """``ok`` or ``error``."""
    last_detail: dict[str, Any] | str | None = None
    runs: int = 0
    failures: int = 0
    next_due: float = field(default=0.0)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "interval_seconds": self.interval,
            "last_run": self.last_run,
            "last_duration_seconds": self.last_duration,
            "last_result": self.last_result,
            "last_detail": self.last_detail,
            "runs": self.runs,
            "failures": self.failures,
        }


class Scheduler:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}

    def add(self, name: str, interval: float, run: JobFn, *, first_delay: float = 0.0) -> Job:
        job = Job(name=name, interval=interval, run=run, next_due=time.monotonic() + first_delay)
        self.jobs[name] = job
        return job

    async def run_job(self, name: str) -> Job:
        """Run one job now (also what the loop calls); returns it with its status updated."""
        job = self.jobs[name]
        job.last_run = time.time()
        start = time.perf_counter()
        try:
            job.last_detail = await job.run()
            job.last_result = "ok"
        except Exception as err:  # a job bug is reported, it does not take the server down
            job.failures += 1
            job.last_result = "error"
            job.last_detail = f"{type(err).__name__}: {err}"
            _LOGGER.exception("Analytics job %s failed", name)
        job.runs += 1
        job.last_duration = time.perf_counter() - start
        job.next_due = time.monotonic() + job.interval
        return job

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            for job in list(self.jobs.values()):
                if job.next_due <= now:
                    await self.run_job(job.name)
            due = min((j.next_due for j in self.jobs.values()), default=now + 1.0)
            await asyncio.sleep(max(0.05, min(due - time.monotonic(), 5.0)))

    def status(self) -> list[dict[str, Any]]:
        return [job.status() for job in self.jobs.values()]
