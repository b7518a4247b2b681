"""schemathesis against a running server: every operation of the OpenAPI document, fuzzed.

Checks: no 5xx, status codes and bodies (and each server-sent event) as documented, schema-valid
requests accepted (chat: see bench/fuzz_hooks.py), invalid ones refused, 405s with ``Allow``.
A short, seeded run here (10 examples per operation, about a minute); bench/run_all runs the
same configuration with more examples and a random seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.server.api.conftest import MakeServer
from tests.server.server_process import TOKENS

REPO = Path(__file__).parents[3]


def test_openapi_contract_holds_under_fuzzing(make_server: MakeServer) -> None:
    # A small context bounds how long any fuzzed generation can run.
    server = make_server(
        {"models": {"slots": 2, "context_size": 512, "max_tokens_default": 8}}, name="fuzz"
    ).start()
    env = {
        **os.environ,
        "PRIME_SPARK_FUZZ_TOKEN": TOKENS["admin"],
        "SCHEMATHESIS_HOOKS": "bench.fuzz_hooks",
    }
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--no-color",
        "--config-file",
        str(REPO / "bench" / "schemathesis.toml"),
        "run",
        f"{server.url}/api/v1/openapi.json",
        "--max-examples",
        "10",
        "--seed",
        "20261126",
    ]
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
