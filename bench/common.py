"""Shared parts of the benches: RESULTS.md sections, the open-model load generator, servers.

The load generator is open-model (constant arrival rate): request ``i`` is *scheduled* at
``start + i / rate`` and sent then whether or not earlier requests have answered, and its latency
is measured from that scheduled time, not from when the client got round to sending it. A
stalled server therefore shows up as latency rather than as a client that quietly slowed down
(coordinated omission, as wrk2 corrects it). It is a Python asyncio generator (aiohttp); when
the generator itself falls behind, the lag shows up in the latency too, and ``send_lag_p99_ms``
says how far behind the sends were.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

RESULTS_HEADER = (
    "# Prime Spark benchmark results\n\n"
    "Numbers measured on the project's machines; each section is written by the script it names.\n"
    "Machines are shared, so absolute numbers are noisy: compare ratios within one run.\n"
)
# Under $TMPDIR, so two runs (two clones, or a bench beside bench/run_all) can keep apart.
BENCH_DIR = Path(tempfile.gettempdir()) / "prime-spark-bench"


def machine_line() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model}), {platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}; shared with other work, absolute numbers are noisy"
    )


def now_line() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"


def command_line(module: str) -> str:
    return f"`scripts/shell python -m {module} {' '.join(sys.argv[1:])}`".replace(" `", "`")


def write_section(path: Path, title: str, section: str) -> None:
    """Replace the section that starts with ``title`` (up to the next ``## ``), or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else RESULTS_HEADER
    pattern = re.compile(re.escape(title) + r".*?(?=\n## |\Z)", re.S)
    body = section.rstrip() + "\n"
    if pattern.search(text):
        text = pattern.sub(lambda _: body, text)
    else:
        text = text.rstrip() + "\n\n" + body
    path.write_text(text, encoding="utf-8")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(len(sorted_values) * q))
    return sorted_values[index]


@dataclass(slots=True)
class RateResult:
    """One constant-rate step: latencies in seconds from each request's scheduled send time."""

    offered: float
    requests: int
    wall: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    send_lag: list[float] = field(default_factory=list)

    @property
    def achieved(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies), q) * 1000

    def lag_p99_ms(self) -> float:
        return percentile(sorted(self.send_lag), 0.99) * 1000


async def open_model(
    send: Callable[[], Awaitable[str | None]], rate: float, seconds: float
) -> RateResult:
    """Send at ``rate``/s for ``seconds``; ``send`` returns None on success or an error label."""
    total = max(1, int(rate * seconds))
    result = RateResult(offered=rate, requests=total, wall=0.0)
    start = time.perf_counter() + 0.05

    async def one(scheduled: float) -> None:
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        result.send_lag.append(max(0.0, time.perf_counter() - scheduled))
        try:
            error = await send()
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            error = type(err).__name__
        if error is None:
            result.latencies.append(time.perf_counter() - scheduled)
        else:
            result.errors[error] = result.errors.get(error, 0) + 1

    tasks = [asyncio.create_task(one(start + i / rate)) for i in range(total)]
    await asyncio.gather(*tasks)
    result.wall = time.perf_counter() - start
    return result


def wait_http(url: str, timeout: float = 240.0, *, any_status: bool = False) -> None:
    """Until ``url`` answers 200 (or any HTTP status with ``any_status``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError:
            if any_status:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def start_server(
    workdir: Path,
    settings: dict[str, Any],
    *,
    name: str = "server",
    cpus: str | None = None,
    wait_model: bool = True,
    port: int | None = None,
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A ``prime-spark-server`` with its own data dir (kept, so the model assembles once).

    ``wait_model`` waits for /health 200; otherwise any answer of /health will do (a node whose
    default model is absent answers 503 for ever but serves everything else).
    """
    from tests.server.server_process import JWT_SECRET, TOKENS, free_port  # noqa: PLC0415

    port = port or free_port()
    data = workdir / name
    data.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "data_dir": str(data),
                   "log_level": "warning"},
        "security": {"api_tokens": [{"name": r, "token": t, "role": r} for r, t in TOKENS.items()],
                     "rate_limit_per_minute": 0, "jwt_secret": JWT_SECRET},
        "discovery": {"enabled": False},
        "models": {"context_size": 512, "slots": 2},
    }  # fmt: skip
    for section, values in settings.items():
        base.setdefault(section, {}).update(values)
    config = data / "settings.json"
    config.write_text(json.dumps(base), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIME_SPARK_")}
    command = [sys.executable, "-m", "inference_server", "--config", str(config)]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    log = (data / "server.log").open("ab")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", 300, any_status=not wait_model)
    except RuntimeError:
        stop(proc)
        raise
    return proc, url, data


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes_cpu_seconds(match: Callable[[str, list[str]], bool]) -> float:
    """CPU seconds of every process ``match(comm, argv)`` accepts, with their reaped children.

    For a service whose workers come and go (PostgreSQL's backends end with their connection):
    an exited backend's time moves to the postmaster's children's time, so the difference of
    two readings still counts it.
    """
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            if not match(comm, argv):
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended while we looked
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0
