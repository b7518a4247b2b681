"""Shared fixtures for server tests: the real bundled model, assembled once per test session.

Tests run against the real Gemma 3 270M GGUF (no mocks). Assembling it costs about a second, so
it happens once per session into a session temp dir; tests that need a server data dir of their
own get the file hard-linked in (``seed_data_dir``), which keeps its verification stamp valid so
the server under test starts without assembling or hashing again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from inference_server.models.bundled import bundled_model_path, ensure_bundled_model


@pytest.fixture(scope="session")
def bundled_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose ``models/`` holds the verified bundled GGUF (and its stamp)."""
    data_dir = tmp_path_factory.mktemp("bundled-data")
    ensure_bundled_model(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def gguf_path(bundled_data_dir: Path) -> Path:
    """Path of the real Gemma 3 270M Q4_K_M GGUF."""
    return bundled_model_path(bundled_data_dir)


@pytest.fixture(scope="session")
def seed_data_dir(bundled_data_dir: Path) -> Callable[[Path], Path]:
    """Put the assembled bundled model into another data dir; returns the model path there."""

    def seed(data_dir: Path) -> Path:
        src = bundled_model_path(bundled_data_dir)
        dst = bundled_model_path(data_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        stamp = src.with_name(src.name + ".verified")
        for a, b in ((src, dst), (stamp, dst.with_name(dst.name + ".verified"))):
            if b.exists():
                continue
            try:
                os.link(a, b)
            except OSError:
                shutil.copy2(a, b)  # another filesystem: the copy keeps size and mtime
        return dst

    return seed
