"""schemathesis against a running server, longer than the test's run, with a random seed.

    scripts/shell python -m bench.fuzz [--max-examples 50] [--out bench/RESULTS.md]

The configuration (checks, per-operation expectations) is bench/schemathesis.toml with the hooks
in bench/fuzz_hooks.py, the same as tests/server/api/test_fuzz.py uses; findings are fixed in the
server or the OpenAPI document, not filtered. The summary schemathesis prints goes into
RESULTS.md; the whole output stays in ``$TMPDIR/prime-spark-bench/fuzz/schemathesis.log``
(``/tmp`` by default).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
from pathlib import Path

from bench.common import (
    BENCH_DIR,
    command_line,
    machine_line,
    now_line,
    start_server,
    stop,
    write_section,
)

TITLE = "## API fuzzing (bench/fuzz.py)"
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--include-path",
        action="append",
        default=[],
        help="only these operations' paths (repeatable); all of them by default",
    )
    args = parser.parse_args()
    from tests.server.server_process import TOKENS  # noqa: PLC0415

    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    workdir = BENCH_DIR / "fuzz"
    proc, url, _ = start_server(
        workdir, {"models": {"slots": 2, "context_size": 512, "max_tokens_default": 8}}
    )
    try:
        env = {**os.environ, "PRIME_SPARK_FUZZ_TOKEN": TOKENS["admin"],
               "SCHEMATHESIS_HOOKS": "bench.fuzz_hooks"}  # fmt: skip
        done = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "--no-color", "--config-file",
             str(ROOT / "bench" / "schemathesis.toml"), "run", f"{url}/api/v1/openapi.json",
             "--max-examples", str(args.max_examples), "--seed", str(seed),
             *(f"--include-path={path}" for path in args.include_path)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False,
        )  # fmt: skip
    finally:
        stop(proc)
    output = done.stdout + done.stderr
    (workdir / "schemathesis.log").write_text(output, encoding="utf-8")
    summary = [line for line in output.splitlines()
               if re.search(r"(passed|failed|errored|skipped|Operations|cases|Seed|FAILURES)",
                            line, re.I)][-12:]  # fmt: skip
    section = "\n".join([
        TITLE, "",
        f"- date: {now_line()}",
        f"- machine: {machine_line()}",
        f"- command: {command_line('bench.fuzz')} (seed {seed})",
        f"- result: **{'clean' if done.returncode == 0 else 'FINDINGS'}** "
        f"(schemathesis exit code {done.returncode}); full log "
        f"`{workdir / 'schemathesis.log'}`",
        "",
        "```text", *summary, "```", "",
    ])  # fmt: skip
    print(section)
    if args.out is not None:
        write_section(args.out, TITLE, section)


if __name__ == "__main__":
    main()
