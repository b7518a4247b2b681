"""Real server processes for the API tests: one regular node, one with tight limits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.server.server_process import TOKENS, ServerProcess

MODELS = {"context_size": 1024, "max_tokens_default": 64}

MakeServer = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def make_server(
    tmp_path_factory: pytest.TempPathFactory, seed_data_dir: Callable[[Path], Path]
) -> Iterator[MakeServer]:
    """A server on the bundled model, hard-linked into its data dir (no assembly per server)."""
    made: list[ServerProcess] = []

    def make(settings: dict[str, Any] | None = None, name: str = "server") -> ServerProcess:
        settings = dict(settings or {})
        settings["models"] = {**MODELS, **settings.get("models", {})}
        proc = ServerProcess(tmp_path_factory.mktemp(name), settings, name=name)
        seed_data_dir(proc.data_dir)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()


@pytest.fixture(scope="session")
def server(make_server: MakeServer) -> ServerProcess:
    # Keep-alive comments after every buffered token: tool-mode streams exercise them always.
    return make_server(
        {"models": {"slots": 4}, "server": {"stream_keepalive_seconds": 0}}, name="main"
    ).start()


@pytest.fixture(scope="session")
def tight_server(make_server: MakeServer) -> ServerProcess:
    """One slot, no wait queue and 4 requests a minute: limits are easy to hit."""
    return make_server(
        {
            "models": {"slots": 1, "queue_size": 0},
            "security": {"rate_limit_per_minute": 4},
        },
        name="tight",
    ).start()


@pytest.fixture
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=TOKENS["operator"], max_retries=0)
