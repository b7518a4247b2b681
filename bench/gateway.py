"""Gateway overhead: our server's routing (``remote`` backend) vs LiteLLM's proxy, same upstream.

    scripts/shell python -m bench.gateway [--step-seconds 4] [--rates 100,200,...]
                                          [--p99-bound-ms 100] [--no-pin] [--out bench/RESULTS.md]

One mock OpenAI upstream (bench/mock_upstream.py: raw asyncio/uvloop, a fixed chat completion)
stands behind both gateways:

- **ours**: ``prime-spark-server`` with ``routing.mode: cloud_first`` and the mock as its only
  cloud peer (``models: [mock-model]``); its default model is absent so no model loads, and the
  response cache is off (every request goes upstream, as through LiteLLM);
- **LiteLLM**: ``litellm --config`` (the ``litellm[proxy]`` package, 1 worker, a master key)
  with the mock as an ``openai/`` deployment.

Load is open-model (bench/common.py: constant arrival rate, latency from the scheduled send
time, so coordinated omission is corrected; a Python asyncio/aiohttp generator). First the
upstream is driven directly to show its capacity exceeds both gateways'; then each target runs
a low fixed rate for the overhead percentiles (gateway pXX - direct pXX) and rising rates until a
step fails (a failing step is run once more and the better of the two kept, the machine
being shared): the max sustainable rate is the highest step with p99 <= ``--p99-bound-ms``, no
errors and at least 95 % of the offered rate achieved.

Pinning (``--no-pin`` turns it off; 2-core machine): the load generator and the upstream share
CPU 0, the gateway under test has CPU 1 to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    BENCH_DIR,
    RateResult,
    command_line,
    machine_line,
    now_line,
    open_model,
    proc_cpu_seconds,
    start_server,
    stop,
    wait_http,
    write_section,
)
from bench.mock_upstream import MODEL

TITLE = "## Gateway overhead vs LiteLLM (bench/gateway.py)"
LITELLM_KEY = "sk-bench-" + "0123456789abcdef" * 2
_REQUEST = {"model": MODEL, "messages": [{"role": "user", "content": "turn on the kitchen light"}],
            "temperature": 0.7, "max_tokens": 16}  # fmt: skip
BODY = json.dumps(_REQUEST).encode()


def _free_port() -> int:
    from tests.server.server_process import free_port  # noqa: PLC0415

    return free_port()


def _pin(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def start_upstream(workers: int, cpus: str | None) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [*_pin(cpus), sys.executable, "-m", "bench.mock_upstream", "--port", str(port),
         "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/models", 30)
    return proc, url


def start_ours(upstream: str, cpus: str | None) -> tuple[subprocess.Popen[bytes], str]:
    settings: dict[str, Any] = {
        "models": {"default": "absent-model-so-none-loads"},
        "memory": {"cache_enabled": False, "cache_semantic": False},
        "routing": {
            "mode": "cloud_first",
            "health_interval": 5,
            "peers": [{"name": "mock", "url": upstream, "models": [MODEL],
                       "max_concurrency": 1024}],
        },
    }  # fmt: skip
    proc, url, _ = start_server(
        BENCH_DIR / "gateway", settings, name="ours", cpus=cpus, wait_model=False
    )
    return proc, url


def start_litellm(upstream: str, cpus: str | None) -> tuple[subprocess.Popen[bytes], str]:
    work = BENCH_DIR / "gateway" / "litellm"
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": upstream + "/v1", "api_key": "sk-mock"}}],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": LITELLM_KEY},
    }  # fmt: skip
    (work / "config.json").write_text(json.dumps(config), encoding="utf-8")
    # JSON is YAML; LiteLLM reads the file with yaml.safe_load.
    (work / "config.yaml").write_text(json.dumps(config), encoding="utf-8")
    port = _free_port()
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    log = (work / "proxy.log").open("ab")
    litellm = str(Path(sys.executable).with_name("litellm"))
    proc = subprocess.Popen(
        [*_pin(cpus), litellm, "--config", str(work / "config.yaml"), "--host", "127.0.0.1",
         "--port", str(port), "--num_workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health/liveliness", 120)
    except RuntimeError:
        stop(proc)
        raise
    return proc, url


def _sender(
    session: aiohttp.ClientSession, url: str, token: str | None, *, route_check: bool = False
) -> Callable[[], Awaitable[str | None]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    async def send() -> str | None:
        async with session.post(url + "/v1/chat/completions", data=BODY, headers=headers) as r:
            body = await r.read()
            if r.status != 200:
                return f"HTTP {r.status}"
            if b"kitchen light" not in body:
                return "wrong body"
            if route_check and not r.headers.get("x-prime-spark-route", "").startswith("cloud"):
                return "not routed to the peer"
        return None

    return send


def sustainable(step: RateResult, bound_ms: float) -> bool:
    return (
        step.error_count == 0 and step.p(0.99) <= bound_ms and step.achieved >= 0.95 * step.offered
    )


async def drive(
    send: Callable[[], Awaitable[str | None]],
    pid: int,
    rates: list[int],
    seconds: float,
    bound_ms: float,
    overhead_rate: int,
    overhead_seconds: float,
) -> dict[str, Any]:
    for _ in range(50):  # warm-up: connections, code paths
        await send()
    cpu0 = proc_cpu_seconds(pid)
    base = await open_model(send, overhead_rate, overhead_seconds)
    cpu_per_request = (proc_cpu_seconds(pid) - cpu0) / max(1, base.requests) * 1000
    steps: list[RateResult] = []
    for rate in rates:
        await asyncio.sleep(1.0)
        step = await open_model(send, rate, seconds)
        if not sustainable(step, bound_ms):  # a shared machine: one retry before giving up
            await asyncio.sleep(2.0)
            again = await open_model(send, rate, seconds)
            step = again if again.p(0.99) < step.p(0.99) else step
        steps.append(step)
        print(f"  {rate}/s: achieved {step.achieved:.0f}, p99 {step.p(0.99):.1f} ms, "
              f"errors {step.errors}", flush=True)  # fmt: skip
        if not sustainable(step, bound_ms):
            break
    best = max((s.offered for s in steps if sustainable(s, bound_ms)), default=0.0)
    return {"base": base, "steps": steps, "max": best, "cpu_ms": cpu_per_request}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    gateway_cpu = None if args.no_pin else "1"
    upstream_cpu = None if args.no_pin else "0"
    if not args.no_pin:
        os.sched_setaffinity(0, {0})
    rates = [int(r) for r in args.rates.split(",")]
    results: dict[str, Any] = {}
    upstream, upstream_url = start_upstream(args.upstream_workers, upstream_cpu)
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            print("direct upstream", flush=True)
            results["direct"] = await drive(
                _sender(session, upstream_url, None), upstream.pid, rates + args.extra_direct,
                args.step_seconds,
                args.p99_bound_ms, args.overhead_rate, args.overhead_seconds,
            )  # fmt: skip
            from tests.server.server_process import TOKENS  # noqa: PLC0415

            targets: list[tuple[str, Callable[..., tuple[subprocess.Popen[bytes], str]], str]] = [
                ("ours", start_ours, TOKENS["operator"]),
            ]
            if not args.skip_litellm:
                targets.append(("litellm", start_litellm, LITELLM_KEY))
            for name, starter, token in targets:
                proc, url = starter(upstream_url, gateway_cpu)
                try:
                    print(name, flush=True)
                    results[name] = await drive(
                        _sender(session, url, token, route_check=name == "ours"), proc.pid, rates,
                        args.step_seconds, args.p99_bound_ms, args.overhead_rate,
                        args.overhead_seconds,
                    )  # fmt: skip
                finally:
                    stop(proc)
    finally:
        stop(upstream)
    return results


def _pcts(r: RateResult) -> tuple[float, float, float]:
    return r.p(0.50), r.p(0.95), r.p(0.99)


def render(args: argparse.Namespace, results: dict[str, Any]) -> str:
    import litellm  # noqa: PLC0415  (its version only)

    direct = results["direct"]
    labels = {"direct": "upstream directly", "ours": "prime-spark-server (remote backend)",
              "litellm": "LiteLLM proxy"}  # fmt: skip
    pin = "none" if args.no_pin else "load generator + upstream on CPU 0, gateway on CPU 1"
    version = getattr(litellm, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version  # noqa: PLC0415

        version = dist_version("litellm")
    lines = [
        TITLE,
        "",
        f"- date: {now_line()}",
        f"- machine: {machine_line()}",
        f"- command: {command_line('bench.gateway')}",
        f"- peers: LiteLLM proxy {version} (`litellm --config`, 1 worker, master key); "
        "prime-spark-server `routing.mode: cloud_first`, the mock as its only peer, no model "
        "loaded, response cache off",
        f"- upstream: bench/mock_upstream.py, {args.upstream_workers} process(es), a fixed "
        "chat completion; pinning: " + pin,
        "- load: open-model Python asyncio/aiohttp generator, latency from each request's "
        "scheduled send time (coordinated omission corrected); "
        f"{args.connections} keep-alive connections at most",
        f"- overhead: {args.overhead_rate} req/s for {args.overhead_seconds:g} s per target (far "
        "below every target's capacity, so it is service time, not queueing), "
        "gateway percentile - direct percentile; CPU ms/request: the target process's CPU time "
        "over that phase / requests; max sustainable: highest step of "
        f"{args.step_seconds:g} s with p99 <= {args.p99_bound_ms:g} ms, 0 errors, >= 95 % "
        "of the offered rate achieved",
        "",
        "| target | max sustainable req/s | p50 ms | p95 ms | p99 ms | overhead p50 ms | "
        "overhead p95 ms | overhead p99 ms | CPU ms/request | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    d50, d95, d99 = _pcts(direct["base"])
    for name in ("direct", "ours", "litellm"):
        if name not in results:
            continue
        r = results[name]
        p50, p95, p99 = _pcts(r["base"])
        errors = sum(s.error_count for s in r["steps"]) + r["base"].error_count
        over = ("-", "-", "-") if name == "direct" else (
            f"{p50 - d50:.2f}", f"{p95 - d95:.2f}", f"{p99 - d99:.2f}")  # fmt: skip
        last = r["steps"][-1] if r["steps"] else None
        ceiling = "" if last is None or sustainable(last, args.p99_bound_ms) else (
            f" (next step {last.offered:.0f}: {last.achieved:.0f} achieved, "
            f"p99 {last.p(0.99):.0f} ms)")  # fmt: skip
        lines.append(
            f"| {labels[name]} | {r['max']:.0f}{ceiling} | {p50:.2f} | {p95:.2f} | {p99:.2f} | "
            f"{over[0]} | {over[1]} | {over[2]} | {r['cpu_ms']:.2f} | {errors} |"
        )
    lines += ["", "Steps (offered → achieved req/s, p99 ms, errors):", ""]
    for name in ("direct", "ours", "litellm"):
        if name in results:
            steps = ", ".join(
                f"{s.offered:.0f}→{s.achieved:.0f} ({s.p(0.99):.1f}"
                + (f", {s.error_count} err" if s.error_count else "") + ")"
                for s in results[name]["steps"]
            )  # fmt: skip
            lines.append(f"- {labels[name]}: {steps}")
    lines += ["", "Ratios (goals in brackets):", ""]
    if "litellm" in results and "ours" in results:
        ours, ll = results["ours"], results["litellm"]
        rate_ratio = ours["max"] / ll["max"] if ll["max"] else float("nan")
        o95 = ours["base"].p(0.95) - d95
        l95 = ll["base"].p(0.95) - d95
        lines.append(f"- max req/s ours / LiteLLM: **{rate_ratio:.2f}** (>= 3)")
        lines.append(
            f"- p95 overhead ours / LiteLLM: **{o95 / l95 if l95 > 0 else float('nan'):.2f}** "
            "(<= 0.33)"
        )
        lines.append(
            f"- CPU per request ours / LiteLLM: **{ours['cpu_ms'] / ll['cpu_ms']:.2f}** (the "
            "measure other processes on the machine disturb least; no goal, for reading the two "
            "above)"
        )
    else:
        lines.append("- LiteLLM was not measured in this run: no ratio")
    lines += [
        "- upstream direct max / best gateway max: "
        f"{direct['max'] / max(1.0, *(results[n]['max'] for n in results if n != 'direct')):.1f}"
        " (the upstream is not the bottleneck when this is well above 1; the direct steps stop "
        "at the generator's own limit, which shares CPU 0 with the upstream)",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", default="10,25,50,75,100,150,200,300,400,600,800,1000,1200,1600,2400"
    )
    parser.add_argument("--step-seconds", type=float, default=4.0)
    parser.add_argument("--overhead-rate", type=int, default=10)
    parser.add_argument("--overhead-seconds", type=float, default=15.0)
    parser.add_argument("--p99-bound-ms", type=float, default=100.0)
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--upstream-workers", type=int, default=1)
    parser.add_argument(
        "--direct-extra-rates", default="3200,4000", help="rates only the upstream is driven at"
    )
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.extra_direct = [int(r) for r in args.direct_extra_rates.split(",") if r]
    started = time.monotonic()
    results = asyncio.run(run(args))
    section = render(args, results)
    print(section)
    print(f"gateway bench took {time.monotonic() - started:.0f} s")
    if args.out is not None:
        write_section(args.out, TITLE, section)


if __name__ == "__main__":
    main()
