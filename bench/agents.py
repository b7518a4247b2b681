"""Agent task dispatch: our Redis Streams broker against taskiq's, on the same Redis, same run.

No-op tasks isolate what the queue itself costs. For each system one worker process runs with
``--concurrency`` (16) tasks at once, and this process is the client:

- **dispatch overhead**: ``--latency-tasks`` (200) tasks one after another, each submitted and
  its result awaited (polling every millisecond, the same for both) before the next: median and
  p95 of submit → result seen;
- **throughput**: ``--tasks`` (2000) tasks submitted as fast as the client can, then every result
  awaited: tasks/s from the first submit to the last result, and the submit rate alone.

Peers: (a) ours -- ``RedisBroker`` + ``AgentRunner`` with a no-op agent (the code path every
node runs; acknowledgements through Lua scripts, attempts fenced, results kept in task hashes);
(b) taskiq 0.13 with taskiq-redis's ``RedisStreamBroker`` (consumer group, acks after
execution) and ``RedisAsyncResultBackend``, run by its own ``taskiq worker`` CLI. Each system's
keys live under a unique prefix and are deleted afterwards. Usage (from the repo root)::

    eval "$(scripts/services env)"
    scripts/shell python bench/agents.py --out bench/RESULTS.md [--redis URL]
"""

# ruff: noqa: PLC0415 - the taskiq worker imports this module with only its own settings set,
# so imports of either system happen where that system is used.
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

SECTION_TITLE = "## Agent task dispatch (bench/agents.py)"
RESULTS_HEADER = (
    "# Prime Spark benchmark results\n\n"
    "Numbers measured on the project's machines; each section is written by the script it names.\n"
    "Machines are shared, so absolute numbers are noisy: compare ratios within one run.\n"
)
ROOT = Path(__file__).resolve().parents[1]
CAPABILITY = "bench.noop"

# --------------------------------------------------------------------------------------------
# taskiq side: the broker and task are module level so `taskiq worker agents:broker` finds them
# --------------------------------------------------------------------------------------------


def _taskiq() -> tuple[Any, Any]:
    from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

    url = os.environ["BENCH_REDIS_URL"]
    prefix = os.environ["BENCH_PREFIX"]
    backend: Any = RedisAsyncResultBackend(url, result_ex_time=600, prefix_str=prefix)
    stream_broker = RedisStreamBroker(
        url, queue_name=f"{prefix}taskiq", consumer_group_name=f"{prefix}group", consumer_id="0"
    ).with_result_backend(backend)

    @stream_broker.task(task_name="noop")
    async def noop() -> None:
        return None

    return stream_broker, noop


if os.environ.get("BENCH_TASKIQ") == "1":
    broker, noop_task = _taskiq()


# --------------------------------------------------------------------------------------------
# our side
# --------------------------------------------------------------------------------------------


def _ours(url: str, prefix: str) -> Any:
    sys.path.insert(0, str(ROOT))
    from inference_server.agents.broker import BrokerSettings
    from inference_server.agents.redis_broker import RedisBroker

    return RedisBroker(url, prefix, BrokerSettings())


async def run_our_worker(url: str, prefix: str, concurrency: int) -> None:
    """The same broker and runner a node uses, with a no-op agent."""
    sys.path.insert(0, str(ROOT))
    from inference_server.agents.base import Agent, AgentContext
    from inference_server.agents.worker import AgentRunner, RunnerSettings

    class NoopAgent(Agent):
        capability: ClassVar[str] = CAPABILITY

        async def run(self, payload: dict[str, Any]) -> Any:
            return None

    ours = _ours(url, prefix)
    context = AgentContext(node=None, settings=None, redis=ours.redis, key_prefix=prefix)  # type: ignore[arg-type]
    runner = AgentRunner(
        ours,
        [(NoopAgent(context), concurrency)],
        node_id="bench",
        tier="bench",
        settings=RunnerSettings(),
    )
    await ours.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(runner.run())
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await ours.close()


# --------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------

POLL = 0.001


async def _until(check: Callable[[], Awaitable[bool]], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("no result in time")
        await asyncio.sleep(POLL)


class OursClient:
    name = "(a) prime-spark agents (RedisBroker)"

    def __init__(self, url: str, prefix: str) -> None:
        from inference_server.agents.model import TaskSpec

        self.broker = _ours(url, prefix)
        self.spec = TaskSpec(capability=CAPABILITY, payload={})

    async def submit(self) -> str:
        task, _ = await self.broker.submit(self.spec)
        return str(task.id)

    async def wait(self, handle: str) -> None:
        async def done() -> bool:
            task = await self.broker.get(handle)
            if task is not None and task.state not in ("queued", "running", "retrying"):
                if task.state != "succeeded":
                    raise RuntimeError(f"task {handle} ended {task.state}: {task.error}")
                return True
            return False

        await _until(done)

    async def close(self) -> None:
        await self.broker.close()


class TaskiqClient:
    name = "(b) taskiq + taskiq-redis (RedisStreamBroker)"

    def __init__(self) -> None:
        self.broker, self.task = _taskiq()

    async def start(self) -> None:
        await self.broker.startup()

    async def submit(self) -> Any:
        return await self.task.kiq()

    async def wait(self, handle: Any) -> None:
        result = await handle.wait_result(check_interval=POLL, timeout=60)
        if result.is_err:
            raise RuntimeError(f"taskiq task failed: {result.error}")

    async def close(self) -> None:
        await self.broker.shutdown()


async def measure(client: Any, latency_tasks: int, tasks: int) -> dict[str, float]:
    for _ in range(20):  # warm-up: connections, scripts, JIT-free but caches warm
        await client.wait(await client.submit())
    latencies = []
    for _ in range(latency_tasks):
        start = time.perf_counter()
        await client.wait(await client.submit())
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    start = time.perf_counter()
    handles = []
    for _ in range(0, tasks, 50):  # 50 submits in flight at a time
        handles.extend(await asyncio.gather(*(client.submit() for _ in range(50))))
    submitted = time.perf_counter() - start
    for handle in handles:
        await client.wait(handle)
    total = time.perf_counter() - start
    return {
        "latency_median_ms": statistics.median(latencies) * 1000,
        "latency_p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
        "submit_per_s": len(handles) / submitted,
        "tasks_per_s": len(handles) / total,
        "tasks": len(handles),
    }


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def _cleanup(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(url)
    keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
    for i in range(0, len(keys), 500):
        await redis.delete(*keys[i : i + 500])
    await redis.aclose()


async def bench_ours(args: argparse.Namespace, logs: Path) -> dict[str, float]:
    prefix = f"bench-agents-{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = _spawn(
        [
            sys.executable,
            __file__,
            "--role",
            "ours-worker",
            "--redis",
            args.redis,
            "--prefix",
            prefix,
            "--concurrency",
            str(args.concurrency),
        ],
        env,
        logs / "ours-worker.log",
    )
    client = OursClient(args.redis, prefix)
    try:

        async def registered() -> bool:
            return bool(await client.broker.agents())

        await _until(registered, limit=30)
        return await measure(client, args.latency_tasks, args.tasks)
    finally:
        await client.close()
        _stop(worker)
        await _cleanup(args.redis, prefix)


async def bench_taskiq(args: argparse.Namespace, logs: Path) -> dict[str, float]:
    prefix = f"bench-taskiq-{uuid.uuid4().hex[:8]}:"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'bench'}:{ROOT}",
        "BENCH_TASKIQ": "1",
        "BENCH_REDIS_URL": args.redis,
        "BENCH_PREFIX": prefix,
    }
    worker = _spawn(
        [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "agents:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(args.concurrency),
            "--ack-type",
            "when_saved",
            "--log-level",
            "WARNING",
        ],
        env,
        logs / "taskiq-worker.log",
    )
    os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_PREFIX")})
    client = TaskiqClient()
    await client.start()
    try:
        from redis.asyncio import Redis

        redis = Redis.from_url(args.redis)

        async def consumer_ready() -> bool:
            with contextlib.suppress(Exception):
                groups = await redis.xinfo_groups(f"{prefix}taskiq")
                return any(g["consumers"] for g in groups)
            return False

        await _until(consumer_ready, limit=60)
        await redis.aclose()
        return await measure(client, args.latency_tasks, args.tasks)
    finally:
        await client.close()
        _stop(worker)
        await _cleanup(args.redis, prefix)


def write_section(out: Path, section: str) -> None:
    """Replace (or append) this script's section of the results file; others stay intact."""
    text = out.read_text(encoding="utf-8") if out.exists() else RESULTS_HEADER
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION_TITLE), None)
    if start is None:
        body = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        body = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    out.write_text(body, encoding="utf-8")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def render(args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> str:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def ratio(key: str) -> float:
        return med("ours", key) / med("taskiq", key)

    rows = []
    for key, label in (("ours", OursClient.name), ("taskiq", TaskiqClient.name)):
        rows.append(
            f"| {label} | {med(key, 'latency_median_ms'):.2f} | {med(key, 'latency_p95_ms'):.2f} "
            f"| {med(key, 'submit_per_s'):.0f} | {med(key, 'tasks_per_s'):.0f} |"
        )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            SECTION_TITLE,
            "",
            f"- date: {now}",
            f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}; redis-py {_version('redis')}, "
            f"taskiq {_version('taskiq')}, taskiq-redis {_version('taskiq-redis')}",
            f"- Redis: the shared test Redis ({args.redis}), one worker process per system with "
            f"{args.concurrency} tasks at once, the client in the bench process; "
            f"{args.runs} run(s) per system alternating, medians",
            f"- dispatch overhead: {args.latency_tasks} no-op tasks one at a time, submit → result "
            f"seen (both clients poll every {POLL * 1000:g} ms); throughput: {args.tasks} no-op "
            "tasks submitted 50 at a time, then every result awaited",
            f"- command: `scripts/shell python bench/agents.py --out bench/RESULTS.md "
            f"--runs {args.runs}`",
            "",
            "| peer | latency median (ms) | latency p95 (ms) | submit/s | tasks/s end to end |",
            "| --- | --- | --- | --- | --- |",
            *rows,
            "",
            "Ratios (ours / taskiq):",
            "",
            f"- dispatch latency median: {ratio('latency_median_ms'):.2f} (below 1 = ours faster)",
            f"- end-to-end tasks/s: {ratio('tasks_per_s'):.2f}; "
            f"submit/s: {ratio('submit_per_s'):.2f} (above 1 = ours faster)",
            "- what ours does per task that taskiq does not: an idempotency check and a task "
            "hash with state counters on submit, an attempt-fenced begin and finish (Lua), "
            "reclaim and retry scheduling, heartbeats refreshing running entries",
            "",
        ]
    )


async def main_async(args: argparse.Namespace, logs: Path) -> int:
    results: dict[str, list[dict[str, float]]] = {"ours": [], "taskiq": []}
    for run in range(args.runs):
        for name, bench in (("ours", bench_ours), ("taskiq", bench_taskiq)):
            result = await bench(args, logs)
            results[name].append(result)
            print(
                f"run {run + 1} {name}: latency median {result['latency_median_ms']:.2f} ms, "
                f"p95 {result['latency_p95_ms']:.2f} ms, submit {result['submit_per_s']:.0f}/s, "
                f"end to end {result['tasks_per_s']:.0f} tasks/s",
                flush=True,
            )
    section = render(args, results)
    print()
    print(section)
    if args.out:
        write_section(Path(args.out), section)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default=os.environ.get("PRIME_SPARK_TEST_REDIS_URL"))
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--latency-tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out")
    parser.add_argument("--role", default="client", choices=["client", "ours-worker"])
    parser.add_argument("--prefix")
    args = parser.parse_args(argv)
    if not args.redis:
        parser.error('no Redis: pass --redis or eval "$(scripts/services env)"')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "ours-worker":
        asyncio.run(run_our_worker(args.redis, args.prefix, args.concurrency))
        return 0
    sys.path.insert(0, str(ROOT))
    logs = Path(tempfile.gettempdir()) / "prime-spark-bench" / "agents"
    logs.mkdir(parents=True, exist_ok=True)
    return asyncio.run(main_async(args, logs))


if __name__ == "__main__":
    sys.exit(main())
