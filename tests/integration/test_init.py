"""Setup, unload and reload of a config entry, and the ways setup can fail."""

from __future__ import annotations

from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.const import CONF_HOST, CONF_PORT, CONF_TOKEN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.const import DOMAIN
from tests.server.server_process import TOKENS, ServerProcess, free_port

from .helpers import NODE_ID, TITLE, wait_for
from .test_client import raw_server, reply


async def test_setup_unload_reload(
    hass: HomeAssistant,
    device_registry: dr.DeviceRegistry,
    init_integration: MockConfigEntry,
) -> None:
    entry = init_integration
    assert entry.state is ConfigEntryState.LOADED
    coordinator = entry.runtime_data.status_coordinator
    assert coordinator.stream_connected
    # While the node pushes, nothing polls.
    assert coordinator.update_interval is None

    devices = dr.async_entries_for_config_entry(device_registry, entry.entry_id)
    # The node, one device per memory tier (hot and warm on this node) and its agents'
    # devices (test_agent_devices.py).
    (device,) = [d for d in devices if (DOMAIN, NODE_ID) in d.identifiers]
    assert {next(iter(d.identifiers))[1] for d in devices} >= {
        NODE_ID,
        f"{NODE_ID}_memory_hot",
        f"{NODE_ID}_memory_warm",
    }
    assert device.identifiers == {(DOMAIN, NODE_ID)}
    assert device.name == TITLE
    assert device.manufacturer == "Prime Spark"
    assert device.serial_number == NODE_ID
    assert device.sw_version == coordinator.data.version

    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.status_coordinator is not coordinator
    await wait_for(lambda: entry.runtime_data.status_coordinator.stream_connected)

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED


async def test_server_down_at_setup(hass: HomeAssistant) -> None:
    """Nothing listens at the address: setup is retried later (ConfigEntryNotReady)."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=TITLE,
        unique_id=NODE_ID,
        data={CONF_HOST: "127.0.0.1", CONF_PORT: free_port(), CONF_TOKEN: "x"},
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    await hass.config_entries.async_unload(entry.entry_id)


async def test_not_a_prime_spark_server(hass: HomeAssistant) -> None:
    """Something else answers at the address: setup is retried later, with the reason."""
    async with raw_server(reply("200 OK", "text/html", b"<html></html>")) as port:
        entry = MockConfigEntry(
            domain=DOMAIN,
            title=TITLE,
            unique_id=NODE_ID,
            data={CONF_HOST: "127.0.0.1", CONF_PORT: port, CONF_TOKEN: "x"},
        )
        entry.add_to_hass(hass)
        assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert entry.reason is not None
    assert "text/html" in entry.reason
    await hass.config_entries.async_unload(entry.entry_id)


async def test_token_refused_at_setup(hass: HomeAssistant, server: ServerProcess) -> None:
    """A refused token fails setup and starts the reauth flow."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=TITLE,
        unique_id=NODE_ID,
        data={CONF_HOST: "127.0.0.1", CONF_PORT: server.port, CONF_TOKEN: "revoked"},
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == [SOURCE_REAUTH]
    assert flows[0]["step_id"] == "reauth_confirm"


async def test_other_node_at_address(hass: HomeAssistant, server: ServerProcess) -> None:
    """Another node answers at the configured address: its data must not become ours."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Prime Spark moved",
        unique_id="moved",
        data={CONF_HOST: "127.0.0.1", CONF_PORT: server.port, CONF_TOKEN: TOKENS["operator"]},
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    assert entry.reason is not None
    assert "edge" in entry.reason
