"""Load, soak and idle footprint of one ``prime-spark-server``.

    scripts/shell python -m bench.load [--clients 1000] [--seconds 10] [--soak 600]
                                       [--idle-seconds 30] [--out bench/RESULTS.md]

(a) Concurrency: ``--clients`` (1000) clients, each on its own keep-alive connection, send
    requests back to back for ``--seconds`` per path: ``GET /health``, ``GET /api/v1/status``
    and the response-cache hit path of ``POST /v1/chat/completions`` (temperature 0, the same
    request every time: the first answer is generated, every later one is a hit), plain and
    streamed. 429 and 503 are deliberate refusals and counted apart; anything else that is not a
    200 (or a connection error) is an error. Goal: 0 errors.
(b) Soak: ``--soak`` seconds of steady load (``--soak-clients`` clients over the same paths)
    while the server's RSS and open file descriptors are sampled every ``--sample-every``
    seconds; the least-squares slope says whether either grows.
(c) Idle: a second server whose default model does not exist (so no model loads; /health says
    503 and everything else works) and whose semantic cache is off (no embedding model): RSS
    after it settled and its CPU use over ``--idle-seconds``. Edge budget: <= 120 MB, <= 1 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    BENCH_DIR,
    command_line,
    machine_line,
    now_line,
    percentile,
    proc_cpu_seconds,
    proc_fds,
    proc_rss_mb,
    slope,
    start_server,
    stop,
    write_section,
)

TITLE = "## Load, soak and idle footprint (bench/load.py)"
CHAT = {"messages": [{"role": "user", "content": "turn on the kitchen light"}],
        "temperature": 0, "max_tokens": 8}  # fmt: skip


def _paths(token: str) -> dict[str, tuple[str, str, bytes | None, dict[str, str]]]:
    auth = {"Authorization": f"Bearer {token}"}
    json_auth = {**auth, "Content-Type": "application/json"}
    return {
        "GET /health": ("GET", "/health", None, {}),
        "GET /api/v1/status": ("GET", "/api/v1/status", None, auth),
        "chat, cache hit": ("POST", "/v1/chat/completions", json.dumps(CHAT).encode(), json_auth),
        "chat, cache hit, streamed": (
            "POST", "/v1/chat/completions",
            json.dumps({**CHAT, "stream": True}).encode(), json_auth,
        ),
    }  # fmt: skip


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.refused: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []
        self.not_hits = 0

    def error(self, label: str) -> None:
        self.errors[label] = self.errors.get(label, 0) + 1


async def _one(
    session: aiohttp.ClientSession, url: str, spec: tuple[str, str, bytes | None, dict[str, str]],
    tally: Tally,
) -> None:  # fmt: skip
    method, path, body, headers = spec
    started = time.perf_counter()
    try:
        async with session.request(method, url + path, data=body, headers=headers) as r:
            payload = await r.read()
            if r.status == 200:
                tally.ok += 1
                tally.latencies.append(time.perf_counter() - started)
                if body is not None and r.headers.get("x-prime-spark-cache") != "hit":
                    tally.not_hits += 1
                streamed = body is not None and b'"stream": true' in body
                if streamed and not payload.rstrip().endswith(b"data: [DONE]"):
                    tally.error("stream without [DONE]")
            elif r.status in (429, 503):
                tally.refused[r.status] = tally.refused.get(r.status, 0) + 1
            else:
                tally.error(f"HTTP {r.status}")
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        tally.error(type(err).__name__)


async def concurrency(url: str, token: str, clients: int, seconds: float) -> list[dict[str, Any]]:
    rows = []
    paths = _paths(token)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as warm:
        for spec in (paths["chat, cache hit"], paths["chat, cache hit"]):  # fill the cache
            await _one(warm, url, spec, Tally())
    for name, spec in paths.items():
        tally = Tally()
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            stop_at = time.monotonic() + seconds

            async def client(session: aiohttp.ClientSession = session,
                             spec: Any = spec, tally: Tally = tally,
                             stop_at: float = stop_at) -> None:  # fmt: skip
                while time.monotonic() < stop_at:
                    await _one(session, url, spec, tally)

            started = time.monotonic()
            await asyncio.gather(*(client() for _ in range(clients)))
            wall = time.monotonic() - started
        lat = sorted(tally.latencies)
        rows.append({
            "path": name, "ok": tally.ok, "rps": tally.ok / wall, "refused": tally.refused,
            "errors": tally.errors, "p50": percentile(lat, 0.5) * 1000,
            "p99": percentile(lat, 0.99) * 1000, "not_hits": tally.not_hits,
        })  # fmt: skip
        print(f"  {name}: {rows[-1]}", flush=True)
        await asyncio.sleep(1.0)
    return rows


async def soak(
    url: str, token: str, pid: int, seconds: float, clients: int, every: float
) -> dict[str, Any]:
    specs = list(_paths(token).values())
    tally = Tally()
    samples: list[tuple[float, float, int]] = []
    stop_at = time.monotonic() + seconds
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def client(n: int) -> None:
            i = n
            while time.monotonic() < stop_at:
                await _one(session, url, specs[i % len(specs)], tally)
                i += 1
                await asyncio.sleep(0.01)  # steady, not saturating: a soak, not a stress test

        async def sampler() -> None:
            while time.monotonic() < stop_at:
                samples.append((time.monotonic() - started, proc_rss_mb(pid), proc_fds(pid)))
                await asyncio.sleep(every)
            samples.append((time.monotonic() - started, proc_rss_mb(pid), proc_fds(pid)))

        await asyncio.gather(sampler(), *(client(n) for n in range(clients)))
    xs = [s[0] / 60 for s in samples]
    # Warm-up (connections opening, allocator arenas, caches filling) is not a trend: the slope
    # skips the first minute of a long soak, the first 10 % (at least two samples) of a short one.
    skip = 1.0 if seconds >= 180 else max(2 * every, 0.1 * seconds) / 60
    tail = [i for i, x in enumerate(xs) if x >= skip] or list(range(len(xs)))
    return {
        "samples": samples,
        "requests": tally.ok,
        "errors": tally.errors,
        "refused": tally.refused,
        "rss_slope": slope([xs[i] for i in tail], [samples[i][1] for i in tail]),
        "fd_slope": slope([xs[i] for i in tail], [float(samples[i][2]) for i in tail]),
        "slope_from_min": xs[tail[0]] if tail else 0.0,
    }


def idle(seconds: float) -> dict[str, float]:
    proc, _url, _ = start_server(
        BENCH_DIR / "load",
        {"models": {"default": "absent-model-so-none-loads"},
         "memory": {"cache_semantic": False}},
        name="idle", wait_model=False,
    )  # fmt: skip
    try:
        time.sleep(5.0)  # let start-up work (catalog scan, first health checks) finish
        rss = proc_rss_mb(proc.pid)
        cpu0 = proc_cpu_seconds(proc.pid)
        time.sleep(seconds)
        cpu = (proc_cpu_seconds(proc.pid) - cpu0) / seconds * 100
        return {"rss": rss, "rss_end": proc_rss_mb(proc.pid), "cpu": cpu}
    finally:
        stop(proc)


def render(args: argparse.Namespace, rows: list[dict[str, Any]], soaked: dict[str, Any] | None,
           quiet: dict[str, float] | None, loaded_rss: float) -> str:  # fmt: skip
    lines = [
        TITLE, "",
        f"- date: {now_line()}",
        f"- machine: {machine_line()}",
        f"- command: {command_line('bench.load')}",
        "- server: the bundled model loaded (context 512, 2 slots), rate limit off, response "
        "cache on; client and server share the 2 cores",
        "",
        f"### (a) {args.clients} concurrent clients, {args.seconds:g} s per path, closed loop "
        "(each client on its own connection, next request when the last answered)",
        "",
        "| path | 200s | req/s | p50 ms | p99 ms | deliberate 429/503 | errors | not cache hits |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for r in rows:
        refused = ", ".join(f"{k}: {v}" for k, v in r["refused"].items()) or "0"
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        hits = r["not_hits"] if r["path"].startswith("chat") else "-"
        lines.append(f"| {r['path']} | {r['ok']} | {r['rps']:.0f} | {r['p50']:.1f} | "
                     f"{r['p99']:.1f} | {refused} | {errors} | {hits} |")  # fmt: skip
    total_errors = sum(sum(r["errors"].values()) for r in rows)
    lines += ["", f"Errors beyond deliberate 429/503: **{total_errors}** (goal 0)", ""]
    if soaked is not None:
        s = soaked["samples"]
        rss = [x[1] for x in s]
        fds = [x[2] for x in s]
        lines += [
            f"### (b) Soak: {args.soak:g} s, {args.soak_clients} clients over the four paths, "
            f"sampled every {args.sample_every:g} s",
            "",
            "| requests | errors | RSS first / last / max MB | RSS slope MB/min | "
            "fds first / last / max | fd slope /min |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| {soaked['requests']} | {sum(soaked['errors'].values())} | {rss[0]:.1f} / "
            f"{rss[-1]:.1f} / {max(rss):.1f} | {soaked['rss_slope']:+.2f} | {fds[0]} / {fds[-1]} "
            f"/ {max(fds)} | {soaked['fd_slope']:+.2f} |",
            "",
            f"Slopes are least squares from minute {soaked['slope_from_min']:.1f} on. "
            "RSS samples (MB): " + ", ".join(f"{x:.0f}" for x in rss[:: max(1, len(rss) // 20)]),
            "",
        ]  # fmt: skip
    if quiet is not None:
        lines += [
            f"### (c) Idle, no model loaded ({args.idle_seconds:g} s)",
            "",
            "| RSS MB (after 5 s) | RSS MB (end) | CPU % of one core | budget |",
            "| --- | --- | --- | --- |",
            f"| {quiet['rss']:.1f} | {quiet['rss_end']:.1f} | {quiet['cpu']:.2f} | "
            "<= 120 MB, <= 1 % |",
            "",
            f"Ratios: RSS / budget **{quiet['rss'] / 120:.2f}** (<= 1), CPU / budget "
            f"**{quiet['cpu'] / 1:.2f}** (<= 1). For comparison, the loaded server of (a) "
            f"(bundled Gemma 3 270M + embedding model): {loaded_rss:.0f} MB RSS.",
            "",
        ]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--soak", type=float, default=600.0)
    parser.add_argument("--soak-clients", type=int, default=20)
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from tests.server.server_process import TOKENS  # noqa: PLC0415

    proc, url, _ = start_server(BENCH_DIR / "load", {}, name="server")
    try:
        rows = asyncio.run(concurrency(url, TOKENS["operator"], args.clients, args.seconds))
        loaded_rss = proc_rss_mb(proc.pid)
        soaked = None
        if args.soak > 0:
            soaked = asyncio.run(soak(url, TOKENS["operator"], proc.pid, args.soak,
                                      args.soak_clients, args.sample_every))  # fmt: skip
    finally:
        stop(proc)
    quiet = idle(args.idle_seconds) if args.idle_seconds > 0 else None
    section = render(args, rows, soaked, quiet, loaded_rss)
    print(section)
    if args.out is not None:
        write_section(args.out, TITLE, section)


if __name__ == "__main__":
    main()
