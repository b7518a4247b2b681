"""The WireGuard link device: entities from a real server's ``/api/v1/link``, and the repair issue.

The session server has no link: no link device. A second server watches an interface that does
not exist (this machine has no WireGuard link to a VPS; the server side's tunnel test covers a
live one): the link is there but down, and the repair issue appears once it is down long enough.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import patch

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import STATE_OFF, STATE_UNKNOWN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.const import DOMAIN
from custom_components.prime_spark.link import link_issue_id
from tests.server.server_process import ServerProcess

from .const import NODE_ID
from .helpers import entry_for


def _entity_id(hass: HomeAssistant, platform: str, key: str) -> str | None:
    return er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{NODE_ID}_link_{key}")


async def test_no_link_no_device(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    assert init_integration.runtime_data.link_coordinator is None
    assert _entity_id(hass, "binary_sensor", "connected") is None


async def test_link_down_shows_and_raises_a_repair(
    hass: HomeAssistant, tmp_path: Path, server_settings: dict[str, Any]
) -> None:
    proc = ServerProcess(
        tmp_path,
        {
            **server_settings,
            "link": {"enabled": True, "interface": "wgp-absent", "poll_interval": 0.5},
        },
        name="linked",
    )
    try:
        await hass.async_add_executor_job(proc.start)
        entry = entry_for(proc)
        entry.add_to_hass(hass)
        with patch("custom_components.prime_spark.link.STALE_REPAIR_AFTER", 0.0):
            assert await hass.config_entries.async_setup(entry.entry_id)
            await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED
        link = entry.runtime_data.link_coordinator
        assert link is not None and link.data.state == "down" and link.data.reason

        connected = _entity_id(hass, "binary_sensor", "connected")
        assert connected is not None
        assert hass.states.get(connected).state == STATE_OFF
        assert hass.states.get(connected).attributes["device_class"] == "connectivity"
        age = _entity_id(hass, "sensor", "handshake_age")
        assert age is not None and hass.states.get(age).state == STATE_UNKNOWN
        received = _entity_id(hass, "sensor", "received")
        assert received is not None and float(hass.states.get(received).state) == 0
        assert _entity_id(hass, "sensor", "endpoint") is not None

        issue = ir.async_get(hass).async_get_issue(DOMAIN, link_issue_id(entry))
        assert issue is not None
        assert issue.translation_key == "link_stale"
        assert issue.translation_placeholders["interface"] == "wgp-absent"
        assert issue.translation_placeholders["handshake"] == "never"

        assert await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
        assert ir.async_get(hass).async_get_issue(DOMAIN, link_issue_id(entry)) is None
    finally:
        await hass.async_add_executor_job(proc.stop)
