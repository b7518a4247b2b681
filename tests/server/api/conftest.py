"""Real server processes for the API tests: one regular node, one with tight limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.server.server_process import TOKENS, ServerProcess


@pytest.fixture(scope="session")
def model_section(bundled_model_path: Path) -> dict[str, object]:
    """Point every test server at the one assembled GGUF instead of assembling it per server."""
    return {
        "paths": [str(bundled_model_path)],
        "default": bundled_model_path.stem.lower(),
        "context_size": 1024,
        "max_tokens_default": 64,
    }


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_section: dict[str, object]
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("api"), {"models": {**model_section, "slots": 4}}, name="main"
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def tight_server(
    tmp_path_factory: pytest.TempPathFactory, model_section: dict[str, object]
) -> Iterator[ServerProcess]:
    """One slot, no wait queue and 4 requests a minute: limits are easy to hit."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("tight"),
        {
            "models": {**model_section, "slots": 1, "queue_size": 0},
            "security": {"rate_limit_per_minute": 4},
        },
        name="tight",
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=TOKENS["operator"], max_retries=0)
