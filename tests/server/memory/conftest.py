"""Real parts for the memory tests: Redis (a unique key prefix per test), a private redis-server
that a test may stop, directories, the real MiniLM embedding model and real server processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from inference_server.backends.base import EmbeddingResult
from inference_server.backends.llama_cpp import LlamaCppEngine
from inference_server.config import MemorySettings, ModelSettings
from inference_server.memory.embedder import Embedder
from inference_server.memory.hot import RedisHotTier
from inference_server.models.embedding import (
    EMBEDDING_MODEL_ID,
    embedding_model_path,
    ensure_embedding_model,
)
from tests.server.server_process import free_port


@pytest.fixture(scope="session")
def embedding_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("embedding-data")
    ensure_embedding_model(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def seed_embedding(embedding_data_dir: Path) -> Callable[[Path], None]:
    """Hard-link the converted embedding GGUF (and its stamp) into a server's data dir."""

    def seed(data_dir: Path) -> None:
        src = embedding_model_path(embedding_data_dir)
        dst = embedding_model_path(data_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        for a, b in ((src, dst), (src.with_name(src.name + ".verified"),
                                  dst.with_name(dst.name + ".verified"))):  # fmt: skip
            if not b.exists():
                try:
                    os.link(a, b)
                except OSError:
                    shutil.copy2(a, b)

    return seed


class _Engine:
    """The registry's embed() signature over one real llama.cpp engine."""

    def __init__(self, engine: LlamaCppEngine) -> None:
        self.engine = engine

    async def embed(self, model: str, inputs: Sequence[str]) -> EmbeddingResult:
        return await self.engine.embed(inputs)


@pytest.fixture(scope="session")
def embedding_engine(embedding_data_dir: Path) -> Iterator[_Engine]:
    engine = LlamaCppEngine(
        EMBEDDING_MODEL_ID,
        embedding_model_path(embedding_data_dir),
        ModelSettings(slots=1, context_size=512),
    )
    engine.load()
    yield _Engine(engine)
    engine.close()


@pytest.fixture
def embedder(embedding_engine: _Engine) -> Embedder:
    return Embedder(embedding_engine, EMBEDDING_MODEL_ID)


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own on the shared Redis, removed afterwards."""
    prefix = f"ps-test-memory-{uuid.uuid4().hex[:12]}:"
    yield prefix
    tier = RedisHotTier(redis_url, prefix)
    await tier.flush()
    await tier.close()


def memory_settings(**overrides: Any) -> MemorySettings:
    base: dict[str, Any] = {"mover_interval_seconds": 3600.0}
    base.update(overrides)
    return MemorySettings(**base)


class PrivateRedis:
    """A redis-server of this test's own (so it can be stopped), with an append-only file."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")
