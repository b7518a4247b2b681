"""The reload button, against the real server."""

from __future__ import annotations

from dataclasses import replace

import pytest
from homeassistant.components.button import DOMAIN as BUTTON_DOMAIN
from homeassistant.components.button import SERVICE_PRESS
from homeassistant.config_entries import SOURCE_REAUTH
from homeassistant.const import ATTR_ENTITY_ID, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry
from syrupy.assertion import SnapshotAssertion

from custom_components.prime_spark.const import DOMAIN
from tests.server.server_process import TOKENS, ServerProcess

from .helpers import crash, entity_snapshot, entry_for, wait_for

RELOAD = "button.prime_spark_edge_reload_model"
MODEL_LOADED = "binary_sensor.prime_spark_edge_default_model_loaded"


async def _press(hass: HomeAssistant) -> None:
    await hass.services.async_call(
        BUTTON_DOMAIN, SERVICE_PRESS, {ATTR_ENTITY_ID: RELOAD}, blocking=True
    )


async def test_reload_button(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    init_integration: MockConfigEntry,
) -> None:
    # The last press time is volatile: keep it out of the snapshot.
    assert (
        entity_snapshot(
            hass, entity_registry, init_integration, "button", volatile=frozenset({"reload_model"})
        )
        == snapshot
    )
    await _press(hass)
    assert hass.states.get(RELOAD).state not in ("unknown", "unavailable")
    await wait_for(lambda: hass.states.get(MODEL_LOADED).state == STATE_ON, timeout=10)


async def test_reload_button_needs_operator(hass: HomeAssistant, server: ServerProcess) -> None:
    """A reader token can watch but not reload: a translated error, and reauth starts."""
    entry = entry_for(server, token=TOKENS["reader"])
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    with pytest.raises(HomeAssistantError) as err:
        await _press(hass)
    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == "authentication_error"
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == [SOURCE_REAUTH]
    await hass.config_entries.async_unload(entry.entry_id)


async def test_reload_button_node_gone(hass: HomeAssistant, own_server: ServerProcess) -> None:
    """The node is gone by the time the button is pressed: a translated error."""
    await hass.async_add_executor_job(own_server.start)
    entry = entry_for(own_server)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    coordinator = entry.runtime_data.status_coordinator
    await wait_for(lambda: coordinator.stream_connected)

    await hass.async_add_executor_job(crash, own_server)
    await wait_for(lambda: hass.states.get(RELOAD).state == STATE_UNAVAILABLE)
    # The press races the outage: the entity still looked available when it was pressed.
    coordinator.async_set_updated_data(coordinator.data)
    with pytest.raises(HomeAssistantError) as err:
        await _press(hass)
    assert err.value.translation_key == "communication_error"
    await hass.config_entries.async_unload(entry.entry_id)


async def test_reload_model_the_node_lost(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """The node refuses the reload (it no longer knows the model): its error, translated."""
    coordinator = init_integration.runtime_data.status_coordinator
    coordinator.async_set_updated_data(replace(coordinator.data, default_model="gone"))
    with pytest.raises(HomeAssistantError) as err:
        await _press(hass)
    assert err.value.translation_key == "server_error"
    assert err.value.translation_placeholders is not None
    assert "gone" in err.value.translation_placeholders["error"]
