"""Diagnostics of a config entry: the token never leaves Home Assistant."""

from __future__ import annotations

from typing import Any

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion

from tests.server.server_process import TOKENS

from .helpers import VOLATILE

# Values that differ from run to run (ports, paths, times, what ran before in the session).
VOLATILE_KEYS = {
    "port",
    "path",
    "started_at",
    "uptime_seconds",
    "version",
    "stats",
    "connects",
    # Routing counts and the last decision depend on what ran before; threads on the machine.
    "edge_requests",
    "cloud_requests",
    "edge_share_percent",
    "last_decision",
    "threads",
}


def _stable(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: VOLATILE if k in VOLATILE_KEYS else _stable(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_stable(v) for v in data]
    return data


async def test_diagnostics(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    snapshot: SnapshotAssertion,
    init_integration: MockConfigEntry,
) -> None:
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, init_integration)
    assert TOKENS["operator"] not in str(diagnostics)
    assert diagnostics["entry"]["data"]["token"] == "**REDACTED**"
    assert _stable(diagnostics) == snapshot
