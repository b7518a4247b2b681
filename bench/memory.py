"""Memory benchmarks: the hot tier vs redis-benchmark, and the response-cache hit path over HTTP.

    scripts/shell python -m bench.memory [--redis-url URL] [--seconds 5] [--rates 1000,2000,3000]
                                         [--clients 8,50] [--rounds 3]
                                         [--skip-http | --skip-hot]
                                         [--out bench/RESULTS.md]

(a) Hot tier: ``RedisHotTier`` (redis-py asyncio) with a 50/50 get/put mix, pipelined in batches
    of ``--pipeline`` (16) operations (``get_many`` = MGET, ``put_many`` = the batch put script
    that also keeps the LRU index and byte count; the tier merges the batches of concurrent
    tasks into one MGET and one script call per round trip), ``--rounds`` (3) times per
    ``--clients`` count of concurrent tasks (8: 128 operations in flight; 50: 800, what
    redis-benchmark keeps in flight), each run followed by ``redis-benchmark -t set,get -P 16
    -c 50`` on the same Redis database twice: on the same workload (``-r`` the tier's 10,000
    keys, ``-d`` the size of the item's JSON the tier stores, 235 bytes) and with the tool's
    defaults (one key, ``-d 100``).
    The ratio is ours / the mean of redis-benchmark's SET and GET rates of the same round, the
    goal measured against the same workload by the rounds' median (one run's rates move by a
    third between runs on the shared VM, both peers', not always together); CPU time per
    operation of each client and of redis-server is reported beside it.
(b) Cache hits: a ``prime-spark-server`` (temp data dir, loopback, free port, bundled model) gets
    one deterministic chat request cached, then an open-model load: requests are sent at fixed
    arrival times (``--rates`` per second, ``--seconds`` each) whether or not earlier ones have
    answered, and each latency is measured from its scheduled send time, so a stalled server
    shows up as latency instead of as a slower client (no coordinated omission).
    The generator (``--generator``, default ``auto``) is ``oha`` when it is installed (on PATH
    or in ``/opt/prime-spark/tools/bin``: ``oha -q RATE --latency-correction``, a compiled
    client that leaves the server its CPU), else the Python one in this file. With 2 CPUs or
    more and ``taskset``, the server is pinned to CPU 0 and oha to CPU 1. Each rate also
    reports the server's CPU milliseconds per request (its process CPU time over the requests
    answered: the number that survives a shared machine) and checks from the cache's own
    counters that every request was a hit.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import proc_cpu_seconds
from inference_server.memory.hot import RedisHotTier
from inference_server.memory.record import MemoryItem

RESULTS_HEADER = "## Memory (bench/memory.py)"


def _redis_pid(url: str) -> int | None:
    """The redis-server's process id, when it runs on this machine (its CPU is then sampled)."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def _cpu_seconds(pid: int | None) -> float:
    """user + system CPU seconds of a process (``/proc/PID/stat``), 0 when not sampled."""
    return 0.0 if pid is None else proc_cpu_seconds(pid)


async def hot_tier(url: str, seconds: float, pipeline: int, clients: int) -> dict[str, Any]:
    """``clients`` tasks, each alternating a get_many and a put_many of ``pipeline`` keys.

    The key ring and each batch's arguments are built before the clock starts (slices of them
    are passed), as redis-benchmark builds its command buffer once: what is timed is the tier.
    CPU seconds of this process and of redis-server are sampled around the run.
    """
    prefix = f"ps-bench-{uuid.uuid4().hex[:8]}:"
    tier = RedisHotTier(url, prefix)
    text = MemoryItem(namespace="bench", key="k", value="x" * 100).encode()
    keys = [f"key{i}" for i in range(10_000)]
    ring = keys + keys[:pipeline]  # a batch is ring[s : s + pipeline], wrapping around
    ring_ids = [f"bench\x00{k}" for k in ring]
    ring_items = [("bench", k, text) for k in ring]
    await tier.put_many(ring_items[:1000])
    redis_pid = _redis_pid(url)
    ops = 0
    stop = time.monotonic() + seconds

    async def client(n: int) -> None:
        nonlocal ops
        i = n * 997
        while time.monotonic() < stop:
            s = i % len(keys)
            i += pipeline
            if (i // pipeline) % 2:
                await tier.get_many(ring_ids[s : s + pipeline])
            else:
                await tier.put_many(ring_items[s : s + pipeline])
            ops += pipeline

    cpu0, redis0 = time.process_time(), _cpu_seconds(redis_pid)
    started = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.monotonic() - started
    cpu, redis_cpu = time.process_time() - cpu0, _cpu_seconds(redis_pid) - redis0
    await tier.flush()
    await tier.close()
    return {
        "ops_per_second": ops / elapsed,
        "ops": ops,
        "seconds": elapsed,
        "clients": clients,
        "keys": len(keys),
        "value_bytes": len(text.encode()),
        "client_us_per_op": cpu / ops * 1e6,
        "redis_us_per_op": redis_cpu / ops * 1e6 if redis_pid else None,
    }


def _delete_benchmark_keys(url: str) -> None:
    """redis-benchmark's keys: ``key:__rand_int__``, and ``key:`` + 12 digits with ``-r``."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    try:
        keys = [b"key:__rand_int__", *client.scan_iter(match="key:" + "[0-9]" * 12, count=1000)]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def redis_benchmark(
    url: str, pipeline: int, requests: int, *, keyspace: int | None = None, value_bytes: int = 100
) -> dict[str, float]:
    """SET and GET rates of ``redis-benchmark -c 50 -P pipeline``, and CPU per request of
    redis-benchmark itself (``client_us_per_op``) and of redis-server (``redis_us_per_op``).

    Without ``keyspace`` every request reads or writes the one key ``key:__rand_int__`` (the
    tool's default); with it, random keys of that many (``-r``), as the hot tier's run cycles
    its key ring. ``value_bytes`` is ``-d``: the hot tier stores an item's JSON, not the bare
    100-byte value, so the same-workload run writes values of the item's size.
    """
    match = re.match(r"redis://([^:/]+):(\d+)(?:/(\d+))?", url)
    if not match:
        raise SystemExit(f"cannot parse {url}")
    host, port, db = match.group(1), match.group(2), match.group(3) or "0"
    redis_pid = _redis_pid(url)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    redis0 = _cpu_seconds(redis_pid)
    out = subprocess.run(
        [
            "redis-benchmark",
            "-h",
            host,
            "-p",
            port,
            "--dbnum",
            db,
            "-t",
            "set,get",
            "-P",
            str(pipeline),
            "-c",
            "50",
            "-n",
            str(requests),
            "-d",
            str(value_bytes),
            *(["-r", str(keyspace)] if keyspace else []),
            "-q",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    redis_cpu = _cpu_seconds(redis_pid) - redis0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    rates = {}
    for line in out.replace("\r", "\n").splitlines():
        found = re.match(r"(SET|GET): ([\d.]+) requests per second", line.strip())
        if found:
            rates[found.group(1)] = float(found.group(2))
    _delete_benchmark_keys(url)
    total = 2 * requests  # -t set,get: each test sends -n requests
    rates["client_us_per_op"] = client_cpu / total * 1e6
    if redis_pid:
        rates["redis_us_per_op"] = redis_cpu / total * 1e6
    return rates


OHA_DIRS = ("/opt/prime-spark/tools/bin",)
CHAT_BODY = {"messages": [{"role": "user", "content": "turn on the kitchen light"}],
             "temperature": 0, "max_tokens": 8}  # fmt: skip


def find_oha() -> str | None:
    """The oha binary: on PATH, else where the project's tools are installed."""
    return shutil.which("oha") or shutil.which("oha", path=os.pathsep.join(OHA_DIRS))


def cpu_pinning() -> tuple[list[str], list[str]]:
    """``taskset`` prefixes for the server (CPU 0) and the load generator (CPU 1), or none."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return [], []
    return ["taskset", "-c", "0"], ["taskset", "-c", "1"]


def _start_server(
    workdir: Path, pin: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    from tests.server.server_process import TOKENS, free_port  # noqa: PLC0415

    port = free_port()
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = {
        "server": {"host": "127.0.0.1", "port": port, "data_dir": str(data),
                   "log_level": "warning"},
        "security": {"api_tokens": [{"name": "bench", "token": TOKENS["operator"],
                                     "role": "operator"}], "rate_limit_per_minute": 0},
        "discovery": {"enabled": False},
        "models": {"context_size": 512, "slots": 1},
    }  # fmt: skip
    path = workdir / "settings.json"
    path.write_text(json.dumps(config))
    log = (workdir / "server.log").open("ab")
    proc = subprocess.Popen(
        [*(pin or []), sys.executable, "-m", "inference_server", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    import urllib.request  # noqa: PLC0415

    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready")


async def _cache_counters(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/api/v1/memory/cache") as r:
        r.raise_for_status()
        stats: dict[str, Any] = await r.json()
        return stats


async def _prime_cache(session: aiohttp.ClientSession, url: str, payload: bytes) -> None:
    """The first request is the miss that fills the cache; then warm connections and code."""
    for _ in range(2):
        async with session.post(url + "/v1/chat/completions", data=payload) as r:
            await r.read()
    for _ in range(200):
        async with session.post(url + "/v1/chat/completions", data=payload) as r:
            if r.headers.get("x-prime-spark-cache") != "hit":
                raise SystemExit(f"the warm-up request was not a cache hit: {r.headers}")
            await r.read()


async def _python_rate(
    session: aiohttp.ClientSession, url: str, payload: bytes, rate: int, seconds: float
) -> dict[str, Any]:
    """One rate with the in-process generator: a task per request at its scheduled time."""
    latencies: list[float] = []
    errors = 0
    not_hits = 0
    total = int(rate * seconds)
    start = time.perf_counter() + 0.1

    async def one(scheduled: float) -> None:
        nonlocal errors, not_hits
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            async with session.post(url + "/v1/chat/completions", data=payload) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
                elif r.headers.get("x-prime-spark-cache") != "hit":
                    not_hits += 1
        except aiohttp.ClientError:
            errors += 1
        latencies.append(time.perf_counter() - scheduled)

    tasks = [asyncio.create_task(one(start + i / rate)) for i in range(total)]
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "offered": rate,
        "achieved": total / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95)] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "errors": errors,
        "not_hits": not_hits,
        "requests": total,
    }


def _oha_rate(
    oha: str, pin: list[str], url: str, token: str, payload: bytes, rate: int, seconds: float,
    connections: int,
) -> dict[str, Any]:  # fmt: skip
    """One rate with oha: ``-q`` fixed arrival rate, ``--latency-correction`` measures each
    latency from the request's scheduled start (no coordinated omission), ``-w`` lets the
    requests in flight at the deadline finish instead of counting them as errors."""
    command = [
        *pin, oha, "--no-tui", "--output-format", "json", "-z", f"{seconds}s",
        "-q", str(rate), "--latency-correction", "-w", "-c", str(connections),
        "--worker-threads", "1", "-m", "POST",
        "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
        "-d", payload.decode(), url + "/v1/chat/completions",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    codes = {int(k): v for k, v in report.get("statusCodeDistribution", {}).items()}
    percentiles = report["latencyPercentiles"]
    answered = sum(codes.values())
    return {
        "offered": rate,
        "achieved": report["summary"]["requestsPerSec"],
        "p50_ms": percentiles["p50"] * 1000,
        "p95_ms": percentiles["p95"] * 1000,
        "p99_ms": percentiles["p99"] * 1000,
        "mean_ms": report["summary"]["average"] * 1000,
        "errors": answered - codes.get(200, 0) + sum(report.get("errorDistribution", {}).values()),
        "requests": answered,
    }


async def cache_hits(
    url: str,
    token: str,
    rates: list[int],
    seconds: float,
    *,
    server_pid: int | None = None,
    oha: str | None = None,
    pin: list[str] | None = None,
    connections: int = 64,
) -> list[dict[str, Any]]:
    """Part (b): every rate in turn, with oha when given, else the Python generator.

    ``not_hits`` comes from the cache's own counters (hits before and after each rate), so it is
    the same check for both generators; ``cpu_ms`` is the server's CPU time per answered request.
    """
    payload = json.dumps(CHAT_BODY).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=512)
    rows = []
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        await _prime_cache(session, url, payload)
        for rate in rates:
            hits_before = (await _cache_counters(session, url))["hits"]
            cpu_before = proc_cpu_seconds(server_pid) if server_pid else None
            if oha is not None:
                row = await asyncio.to_thread(
                    _oha_rate, oha, pin or [], url, token, payload, rate, seconds, connections
                )
            else:
                row = await _python_rate(session, url, payload, rate, seconds)
            if server_pid and cpu_before is not None:
                used = proc_cpu_seconds(server_pid) - cpu_before
                row["cpu_ms"] = used / max(row["requests"], 1) * 1000
            hits = (await _cache_counters(session, url))["hits"] - hits_before
            row["not_hits"] = max(row["requests"] - row["errors"] - hits, 0)
            rows.append(row)
    return rows


def _cpu(us: float | None) -> str:
    return "n/a" if us is None else f"{us:.2f}"


def render(args: argparse.Namespace,
           pairs: list[tuple[dict[str, Any], dict[str, float], dict[str, float]]],
           rows: list[dict[str, Any]]) -> str:  # fmt: skip
    lines = [
        RESULTS_HEADER,
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()} (shared with other work: absolute numbers are noisy)",
        f"- load average (1 min) at the start: {os.getloadavg()[0]:.2f}",
        f"- command: `scripts/shell python -m bench.memory {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        "### (a) Hot tier (Redis) vs redis-benchmark, same Redis, same run",
        "",
        "Each hot-tier run is followed by its redis-benchmark runs; the ratio compares them, "
        "and the rounds' median is the result. CPU "
        "µs/op is CPU time over operations (client process; redis-server from /proc), which "
        "contention on a shared machine moves far less than ops/s.",
        "",
        "| peer | workload | in flight | ops/s | client CPU µs/op | redis-server CPU µs/op |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    found: dict[int, list[tuple[float, float | None, float]]] = {}
    for hot, same, default in pairs:
        lines.append(
            f"| RedisHotTier (redis-py asyncio) | 50/50 get/put, batches of {args.pipeline}, "
            f"{hot['clients']} tasks, {hot['keys']:,} keys, {hot['value_bytes']}-byte items "
            f"(a 100-byte value as JSON) + LRU index | "
            f"{hot['clients'] * args.pipeline} | {hot['ops_per_second']:,.0f} | "
            f"{_cpu(hot['client_us_per_op'])} | {_cpu(hot['redis_us_per_op'])} |"
        )
        means = []
        for rb, workload in (
            (same, f"-r {hot['keys']} -d {hot['value_bytes']}: the same workload"),
            (default, "-d 100, one key (the tool's default)"),
        ):
            rates = {op: rate for op, rate in rb.items() if op in ("SET", "GET")}
            for op, rate in rates.items():
                lines.append(
                    f"| redis-benchmark | {op}, -P {args.pipeline} -c 50 {workload} | "
                    f"{50 * args.pipeline} | {rate:,.0f} | {_cpu(rb.get('client_us_per_op'))} | "
                    f"{_cpu(rb.get('redis_us_per_op'))} |"
                )
            means.append(statistics.fmean(rates.values()) if rates else float("nan"))
        cpu_ratio = None
        if hot["redis_us_per_op"] is not None and "redis_us_per_op" in same:
            ours = hot["client_us_per_op"] + hot["redis_us_per_op"]
            cpu_ratio = (same["client_us_per_op"] + same["redis_us_per_op"]) / ours
        found.setdefault(hot["clients"], []).append(
            (hot["ops_per_second"] / means[0], cpu_ratio, hot["ops_per_second"] / means[1])
        )
    ratios = []
    for clients, rounds in found.items():
        same_ratios = [r[0] for r in rounds]
        cpu = [r[1] for r in rounds if r[1] is not None]
        each = ", ".join(f"{r:.2f}" for r in same_ratios)
        ratios.append(
            f"- {clients} tasks: ops/s ours / redis-benchmark mean(SET, GET), same workload, "
            f"median of {len(rounds)} round(s): **{statistics.median(same_ratios):.2f}** "
            f"(goal >= 0.5; each: {each})"
            + (f", CPU per op (client + server) theirs / ours {statistics.median(cpu):.2f}"
               if cpu else "")
            + "; against the tool's default (one key, 100 bytes): "
            f"{statistics.median(r[2] for r in rounds):.2f}"
        )  # fmt: skip
    lines += ["", *ratios, ""]
    if not pairs:  # --skip-hot: no part (a) to show
        lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("### (a)"))]
    lines += [
        "### (b) Response-cache hit path over HTTP (open-model load)",
        "",
        f"- generator: {args.generator_used}",
        f"- CPUs: {args.pinning}",
        f"- load average before part (b): {args.load_before}",
        "",
        "| offered req/s | achieved req/s | p50 ms | p95 ms | p99 ms | errors | not hits "
        "| server CPU ms/req |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cpu = f"{r['cpu_ms']:.3f}" if "cpu_ms" in r else "-"
        lines.append(
            f"| {r['offered']} | {r['achieved']:,.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']} | {r['not_hits']} | {cpu} |"
        )
    lines += [
        "",
        "Goal: >= 3000 req/s with p95 < 10 ms. Server CPU ms/req: the server process's CPU time "
        "(all threads) over the requests answered at that rate.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Results\n\n"
    pattern = re.compile(re.escape(RESULTS_HEADER) + r".*?(?=\n## |\Z)", re.S)
    text = (
        pattern.sub(section.rstrip() + "\n", text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + section)
    )
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:16379/9")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument(
        "--clients",
        default="8,50",
        help="hot-tier task counts, one run (and one redis-benchmark run) each: 8 x 16 is the "
        "tier's usual load, 50 x 16 has redis-benchmark's -c 50 -P 16 in flight",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="hot-tier runs per task count, each followed by its redis-benchmark runs: the "
        "ratio is judged by the median round (one run's rates move by a third on a shared VM)",
    )
    parser.add_argument("--rates", default="1000,2000,3000,4000")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--skip-hot", action="store_true", help="part (b) only: no hot-tier or redis-benchmark run"
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "oha", "python"),
        default="auto",
        help="part (b)'s load generator (auto: oha when installed)",
    )
    parser.add_argument("--connections", type=int, default=64, help="oha's connections")
    args = parser.parse_args()
    args.generator_used, args.pinning, args.load_before = "-", "-", "-"

    pairs = []
    for clients in () if args.skip_hot else (int(c) for c in args.clients.split(",")):
        for _ in range(args.rounds):
            hot = asyncio.run(hot_tier(args.redis_url, args.seconds, args.pipeline, clients))
            same = redis_benchmark(
                args.redis_url, args.pipeline, 400_000,
                keyspace=hot["keys"], value_bytes=hot["value_bytes"],
            )  # fmt: skip
            pairs.append((hot, same, redis_benchmark(args.redis_url, args.pipeline, 400_000)))
    rows: list[dict[str, Any]] = []
    if not args.skip_http:
        from tests.server.server_process import TOKENS  # noqa: PLC0415

        oha = find_oha() if args.generator != "python" else None
        if args.generator == "oha" and oha is None:
            raise SystemExit("--generator oha: oha is not installed (PATH, /opt/prime-spark/tools)")
        server_pin, client_pin = cpu_pinning() if oha is not None else ([], [])
        args.generator_used = "Python aiohttp in this process (shares the CPUs with the server)"
        if oha is not None:
            version = subprocess.run(
                [oha, "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
            args.generator_used = (
                f"{version}: -q RATE --latency-correction -w -c {args.connections}, 1 worker thread"
            )
        args.pinning = (
            "server pinned to CPU 0, oha to CPU 1 (taskset)"
            if server_pin
            else "not pinned (client and server share the CPUs)"
        )
        args.load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        workdir = Path(tempfile.gettempdir()) / "prime-spark-bench" / "memory"
        # the data dir is kept: the model assembles once
        proc, url = _start_server(workdir, server_pin)
        try:
            rates = [int(r) for r in args.rates.split(",")]
            rows = asyncio.run(
                cache_hits(
                    url, TOKENS["operator"], rates, args.seconds, server_pid=proc.pid, oha=oha,
                    pin=client_pin, connections=args.connections,
                )
            )  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    section = render(args, pairs, rows)
    print(section)
    if args.out is not None:
        write_section(args.out, section)


if __name__ == "__main__":
    main()
