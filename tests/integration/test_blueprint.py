"""The UPS blueprint: validates, and drives the real node to critical and back."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from homeassistant.components import automation
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from tests.server.server_process import TOKENS, ServerProcess

from .helpers import wait_for

BLUEPRINT = (
    Path(__file__).parents[2] / "blueprints" / "automation" / "prime_spark" / "ups_power_mode.yaml"
)
POWER_SELECT = "select.prime_spark_edge_power_mode"
UPS = "input_boolean.ups_on_battery"


@pytest.fixture(autouse=True)
def restore_power_mode(server: ServerProcess) -> Iterator[None]:
    yield
    status, _, body = server.request(
        "PUT", "/api/v1/power", {"mode": "balanced"}, token=TOKENS["operator"]
    )
    assert status == 200, body


async def test_ups_on_battery_switches_to_critical_and_back(
    hass: HomeAssistant, init_integration: MockConfigEntry, server: ServerProcess
) -> None:
    target = Path(hass.config.path("blueprints", "automation", "prime_spark"))
    await hass.async_add_executor_job(lambda: target.mkdir(parents=True, exist_ok=True))
    await hass.async_add_executor_job(shutil.copy, BLUEPRINT, target / BLUEPRINT.name)
    assert await async_setup_component(
        hass, "input_boolean", {"input_boolean": {"ups_on_battery": {}}}
    )
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: {
                "id": "ups",
                "alias": "UPS power mode",
                "use_blueprint": {
                    "path": f"prime_spark/{BLUEPRINT.name}",
                    "input": {
                        "ups_entity": UPS,
                        "power_mode_entity": POWER_SELECT,
                        "normal_mode": "power_save",
                    },
                },
            }
        },
    )
    await hass.async_block_till_done()
    assert hass.states.get("automation.ups_power_mode").state == "on"  # it validated

    await hass.services.async_call("input_boolean", "turn_on", {"entity_id": UPS}, blocking=True)
    await wait_for(lambda: hass.states.get(POWER_SELECT).state == "critical")
    assert _server_mode(await hass.async_add_executor_job(_power, server)) == "critical"

    await hass.services.async_call("input_boolean", "turn_off", {"entity_id": UPS}, blocking=True)
    await wait_for(lambda: hass.states.get(POWER_SELECT).state == "power_save")
    assert _server_mode(await hass.async_add_executor_job(_power, server)) == "power_save"


def _power(server: ServerProcess) -> dict[str, object]:
    status, _, body = server.request("GET", "/api/v1/power", token=TOKENS["reader"])
    assert status == 200
    return body  # type: ignore[no-any-return]


def _server_mode(power: dict[str, object]) -> object:
    return power["mode"]
