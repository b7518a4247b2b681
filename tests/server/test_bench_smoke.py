"""The benches of bench/ run end to end with their smallest sizes, so they cannot rot.

Each runs as the user would run it (``python -m bench.X --out FILE``) and must exit 0 and write
its section with its table. No timing is asserted: speed belongs in bench/RESULTS.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def _call(module: str, *args: str, timeout: float = 900) -> str:
    """``python -m module args`` from the repository root; its standard output."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def _run(module: str, out: Path, *args: str, timeout: float = 900) -> str:
    _call(module, *args, "--out", str(out), timeout=timeout)
    return out.read_text(encoding="utf-8")


def test_gateway_bench_runs(tmp_path: Path) -> None:
    text = _run(
        "bench.gateway", tmp_path / "RESULTS.md", "--rates", "20", "--step-seconds", "0.5",
        "--overhead-rate", "20", "--overhead-seconds", "0.5", "--direct-extra-rates", "",
        "--no-pin",
    )  # fmt: skip
    assert "## Gateway overhead vs LiteLLM (bench/gateway.py)" in text
    for row in ("| upstream directly |", "| prime-spark-server (remote backend) |",
                "| LiteLLM proxy |", "max req/s ours / LiteLLM"):  # fmt: skip
        assert row in text


def test_load_bench_runs(tmp_path: Path) -> None:
    text = _run(
        "bench.load", tmp_path / "RESULTS.md", "--clients", "20", "--seconds", "0.5",
        "--soak", "2", "--sample-every", "0.5", "--idle-seconds", "1",
    )  # fmt: skip
    assert "## Load, soak and idle footprint (bench/load.py)" in text
    for row in ("| GET /health |", "| GET /api/v1/status |", "| chat, cache hit |",
                "| chat, cache hit, streamed |", "### (b) Soak", "### (c) Idle"):  # fmt: skip
        assert row in text


def test_analytics_bench_runs(tmp_path: Path) -> None:
    text = _run("bench.analytics", tmp_path / "RESULTS.md", "--events", "3000")
    assert "## Analytics pipeline (bench/analytics.py)" in text
    for row in ("| (a) Kafka ProducerPerformance", "| (b) ours:", "| (c) sink alone:",
                "| (d) end to end", "| (e) embedded default", "| (f) end to end, two nodes"):  # fmt: skip
        line = next(ln for ln in text.splitlines() if ln.startswith(row))
        if row not in ("| (a) Kafka ProducerPerformance", "| (b) ours:"):
            assert line.split(" | ")[3:5] == ["3000", "0"], line  # every event, none lost


def test_pg_write_bench_runs() -> None:
    """It prints its table (no section of its own: its numbers are notes under analytics)."""
    out = _call("bench.pg_write", "--events", "2000", "--batch", "1000", "--rounds", "1")
    assert "2000 inference events, batches of 1000" in out
    for row in ("| store |", "| replay |", "| before |"):
        assert row in out


def test_faults_bench_runs(tmp_path: Path) -> None:
    text = _run(
        "bench.faults", tmp_path / "RESULTS.md", "--outage", "0.5", "--rate", "5",
        "--chat-rate", "1", "--items", "3",
    )  # fmt: skip
    assert "## Fault injection (bench/faults.py)" in text
    for row in ("| Redis (hot tier + agent tasks) stopped, restarted |", "| cloud peer (2nd prime-spark-server)",
                "| server SIGKILLed mid-stream, restarted |",
                "| Kafka broker (analytics) SIGKILLed, restarted |",
                "| PostgreSQL (analytics store) SIGKILLed, restarted |"):  # fmt: skip
        assert row in text
    # The pipeline must not lose or duplicate an event, nor Redis an item or a task, even at
    # this size.
    for line in text.splitlines():
        if line.startswith("| Redis (hot tier"):
            lost = line.rsplit("|", 2)[-2].strip()
            assert lost.startswith("0 items; 0 tasks (") and "duplicates 0 (" in lost, lost
            assert "never started 0;" in lost, lost
        if line.startswith(("| Kafka broker", "| PostgreSQL (analytics")):
            assert line.rsplit("|", 2)[-2].strip().startswith("0 (")
            assert "duplicates 0;" in line


def test_security_scan_runs(tmp_path: Path) -> None:
    text = _run("bench.security", tmp_path / "RESULTS.md")
    assert "### pip-audit" in text
    assert "### bandit" in text
    # Every finding is fixed or carries a "# nosec BXXX: reason" (issue 9: clean or justified).
    assert "**0 open findings**" in text, text[text.index("### bandit") :]


def test_fuzz_bench_runs(tmp_path: Path) -> None:
    # One operation: the whole document is fuzzed by tests/server/api/test_fuzz.py already.
    text = _run(
        "bench.fuzz", tmp_path / "RESULTS.md", "--max-examples", "1", "--seed", "1",
        "--include-path", "/api/v1/routing",
    )  # fmt: skip
    assert "## API fuzzing (bench/fuzz.py)" in text
    assert "- result: **" in text
