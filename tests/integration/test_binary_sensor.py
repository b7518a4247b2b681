"""Binary sensors of the node, snapshotted against the real server."""

from __future__ import annotations

from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry
from syrupy.assertion import SnapshotAssertion

from .helpers import entity_snapshot


async def test_binary_sensors(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    init_integration: MockConfigEntry,
) -> None:
    assert entity_snapshot(hass, entity_registry, init_integration, "binary_sensor") == snapshot
    assert hass.states.get("binary_sensor.prime_spark_edge_ready").state == STATE_ON
    assert hass.states.get("binary_sensor.prime_spark_edge_default_model_loaded").state == (
        STATE_ON
    )
