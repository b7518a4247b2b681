"""Routing and power modes in Home Assistant: selects, actions, sensors, voice, the client.

Against the real server: a mode set from Home Assistant is read back from the server's own API,
and a mode changed on the server arrives in Home Assistant through the event stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from homeassistant.components import conversation
from homeassistant.components.select import ATTR_OPTION, SERVICE_SELECT_OPTION
from homeassistant.const import ATTR_ENTITY_ID, STATE_UNAVAILABLE
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.client import (
    Power,
    PrimeSpark,
    RouteEvent,
    Routing,
    Status,
)
from custom_components.prime_spark.client.models import NodeState, parse_event
from custom_components.prime_spark.compat import vol
from custom_components.prime_spark.const import (
    DOMAIN,
    SERVICE_GENERATE,
    SERVICE_SET_POWER_MODE,
    SERVICE_SET_ROUTING_MODE,
)
from tests.server.server_process import TOKENS, ServerProcess

from .helpers import crash, entry_for, wait_for

ROUTING_SELECT = "select.prime_spark_edge_routing_mode"
POWER_SELECT = "select.prime_spark_edge_power_mode"
EDGE_SHARE = "sensor.prime_spark_edge_edge_share"
LAST_ROUTE = "sensor.prime_spark_edge_last_routing_decision"
POWER_SENSOR = "sensor.prime_spark_edge_power"
DEFAULT_AGENT = "conversation.home_assistant"


@pytest.fixture(autouse=True)
def restore_modes(server: ServerProcess) -> Iterator[None]:
    """The session server is shared: put its modes back after each test."""
    yield
    for path, mode in (("/api/v1/routing", "edge_first"), ("/api/v1/power", "balanced")):
        status, _, body = server.request("PUT", path, {"mode": mode}, token=TOKENS["operator"])
        assert status == 200, body


async def _server(
    hass: HomeAssistant, server: ServerProcess, method: str, path: str, body: Any = None
) -> Any:
    status, _, data = await hass.async_add_executor_job(
        lambda: server.request(method, path, body, token=TOKENS["operator"])
    )
    assert status == 200, data
    return data


async def _ask(hass: HomeAssistant, text: str) -> str:
    result = await conversation.async_converse(
        hass, text, None, Context(), language="en", agent_id=DEFAULT_AGENT
    )
    speech = result.response.speech["plain"]["speech"]
    assert isinstance(speech, str)
    return speech


# ---------------------------------------------------------------------------------- selects


async def test_selects_drive_the_server(
    hass: HomeAssistant, init_integration: MockConfigEntry, server: ServerProcess
) -> None:
    routing = hass.states.get(ROUTING_SELECT)
    assert routing is not None
    assert routing.state == "edge_first"
    assert routing.attributes["options"] == ["edge_first", "cloud_first", "balanced"]
    power = hass.states.get(POWER_SELECT)
    assert power is not None
    assert power.state == "balanced"
    assert power.attributes["options"] == ["performance", "balanced", "power_save", "critical"]

    await hass.services.async_call(
        "select",
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: ROUTING_SELECT, ATTR_OPTION: "cloud_first"},
        blocking=True,
    )
    assert hass.states.get(ROUTING_SELECT).state == "cloud_first"
    assert (await _server(hass, server, "GET", "/api/v1/routing"))["mode"] == "cloud_first"

    await hass.services.async_call(
        "select",
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: POWER_SELECT, ATTR_OPTION: "power_save"},
        blocking=True,
    )
    assert hass.states.get(POWER_SELECT).state == "power_save"
    server_power = await _server(hass, server, "GET", "/api/v1/power")
    assert server_power["mode"] == "power_save"
    assert server_power["slots"] == 1


async def test_selects_follow_changes_made_elsewhere(
    hass: HomeAssistant, init_integration: MockConfigEntry, server: ServerProcess
) -> None:
    await _server(hass, server, "PUT", "/api/v1/routing", {"mode": "balanced"})
    await _server(hass, server, "PUT", "/api/v1/power", {"mode": "critical"})
    await wait_for(lambda: hass.states.get(ROUTING_SELECT).state == "balanced")
    await wait_for(lambda: hass.states.get(POWER_SELECT).state == "critical")
    status = init_integration.runtime_data.status_coordinator.data
    assert status.power is not None
    assert (status.power.threads, status.power.slots) == (1, 1)


async def test_select_errors_are_translated(hass: HomeAssistant, server: ServerProcess) -> None:
    """A reader token may watch but not change: the select says why."""
    entry = entry_for(server, token=TOKENS["reader"])
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            "select",
            SERVICE_SELECT_OPTION,
            {ATTR_ENTITY_ID: ROUTING_SELECT, ATTR_OPTION: "cloud_first"},
            blocking=True,
        )
    assert err.value.translation_key == "authentication_error"
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            "select",
            SERVICE_SELECT_OPTION,
            {ATTR_ENTITY_ID: ROUTING_SELECT, ATTR_OPTION: "sideways"},
            blocking=True,
        )
    await hass.config_entries.async_unload(entry.entry_id)


# ---------------------------------------------------------------------------------- actions


async def test_mode_actions(
    hass: HomeAssistant, init_integration: MockConfigEntry, server: ServerProcess
) -> None:
    await hass.services.async_call(
        DOMAIN, SERVICE_SET_ROUTING_MODE, {"mode": "balanced"}, blocking=True
    )
    await hass.services.async_call(
        DOMAIN,
        SERVICE_SET_POWER_MODE,
        {"mode": "performance", "config_entry_id": init_integration.entry_id},
        blocking=True,
    )
    assert (await _server(hass, server, "GET", "/api/v1/routing"))["mode"] == "balanced"
    assert (await _server(hass, server, "GET", "/api/v1/power"))["mode"] == "performance"
    assert hass.states.get(ROUTING_SELECT).state == "balanced"
    assert hass.states.get(POWER_SELECT).state == "performance"
    with pytest.raises(vol.Invalid):
        await hass.services.async_call(
            DOMAIN, SERVICE_SET_POWER_MODE, {"mode": "turbo"}, blocking=True
        )


async def test_mode_action_on_a_dead_node(hass: HomeAssistant, own_server: ServerProcess) -> None:
    own_server.start()
    entry = entry_for(own_server)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await hass.async_add_executor_job(crash, own_server)
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN, SERVICE_SET_ROUTING_MODE, {"mode": "cloud_first"}, blocking=True
        )
    assert err.value.translation_key == "communication_error"
    # Voice says which node it could not change.
    assert await _ask(hass, "set AI power mode to critical") == (
        f"Could not set the AI power mode of {entry.title} to critical."
    )
    await hass.config_entries.async_unload(entry.entry_id)


async def test_private_generate_and_routing_sensors(
    hass: HomeAssistant, init_integration: MockConfigEntry, server: ServerProcess
) -> None:
    await hass.services.async_call(
        DOMAIN, SERVICE_SET_ROUTING_MODE, {"mode": "cloud_first"}, blocking=True
    )
    response = await hass.services.async_call(
        DOMAIN,
        SERVICE_GENERATE,
        {"prompt": "Say hi.", "max_tokens": 4, "private": True},
        blocking=True,
        return_response=True,
    )
    assert isinstance(response, dict)
    assert response["text"] is not None
    routing = await _server(hass, server, "GET", "/api/v1/routing")
    assert routing["last_decision"]["reason"] == "edge: private"
    assert routing["last_decision"]["private"] is True
    # The route event arrives through the stream: the sensors show the decision.
    await wait_for(lambda: hass.states.get(LAST_ROUTE).state == "edge: private")
    last = hass.states.get(LAST_ROUTE)
    assert last.attributes["target"] == "edge"
    assert last.attributes["private"] is True
    assert float(hass.states.get(EDGE_SHARE).state) == routing["decisions"]["edge_share_percent"]
    # No PMIC on this machine: the power sensor is unavailable, never a made-up number.
    assert hass.states.get(POWER_SENSOR).state == STATE_UNAVAILABLE


async def test_power_sensor_shows_watts_when_measured(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """The value path, with a status as a Raspberry Pi 5 node reports it."""
    coordinator = init_integration.runtime_data.status_coordinator
    status = coordinator.data
    assert status.power is not None
    coordinator.async_set_updated_data(
        replace(status, power=replace(status.power, power_watts=6.4))
    )
    await hass.async_block_till_done()
    state = hass.states.get(POWER_SENSOR)
    assert state.state == "6.4"
    assert state.attributes["unit_of_measurement"] == "W"


# ---------------------------------------------------------------------------------- voice


@pytest.mark.parametrize(
    ("text", "path", "mode", "speech"),
    [
        (
            "set AI routing to cloud first",
            "/api/v1/routing",
            "cloud_first",
            "AI routing is now cloud first.",
        ),
        (
            "Set the AI routing to balanced",
            "/api/v1/routing",
            "balanced",
            "AI routing is now balanced.",
        ),
        (
            "set AI power mode to power save",
            "/api/v1/power",
            "power_save",
            "AI power mode is now power save.",
        ),
        (
            "switch AI power mode to critical",
            "/api/v1/power",
            "critical",
            "AI power mode is now critical.",
        ),
    ],
)
async def test_voice_sets_modes(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    server: ServerProcess,
    text: str,
    path: str,
    mode: str,
    speech: str,
) -> None:
    assert await _ask(hass, text) == speech
    assert (await _server(hass, server, "GET", path))["mode"] == mode


async def test_voice_without_a_node(hass: HomeAssistant) -> None:
    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()
    assert await _ask(hass, "set AI routing to edge first") == "No Prime Spark node is set up."


# ---------------------------------------------------------------------------------- client


async def test_client_routing_and_power(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as session:
        client = PrimeSpark(
            "127.0.0.1", port=server.port, token=TOKENS["operator"], session=session
        )
        routing = await client.routing()
        assert isinstance(routing, Routing)
        assert routing.mode == "edge_first"
        assert routing.peers == ()
        routing = await client.set_routing_mode("cloud_first")
        assert routing.mode == "cloud_first"
        power = await client.power()
        assert isinstance(power, Power)
        assert power.power_watts is None
        power = await client.set_power_mode("power_save")
        assert (power.mode, power.slots, power.max_tokens_cap) == ("power_save", 1, 256)
        status = await client.status()
        assert status.routing is not None
        assert status.routing.mode == "cloud_first"
        assert status.power is not None
        assert status.power.mode == "power_save"


def test_parsing_routing_data() -> None:
    """Peers and decisions as a node with a cloud peer sends them; older servers send none."""
    routing = Routing.from_dict(
        {
            "mode": "balanced",
            "peers": [
                {
                    "name": "vps",
                    "url": "http://10.8.0.1:8780",
                    "reachable": None,
                    "breaker": "closed",
                    "latency_ms": None,
                    "requests": 0,
                    "failures": 0,
                    "last_error": None,
                }
            ],
            "decisions": {"edge": 3, "cloud": 1, "edge_share_percent": 75.0},
            "last_decision": None,
        }
    )
    assert routing.peers[0].reachable is None
    event = parse_event(
        "route",
        7,
        {
            "target": "cloud",
            "peer": "vps",
            "reason": "cloud: edge queue full",
            "model": None,
            "private": False,
            "edge_share_percent": 60.0,
        },
    )
    assert isinstance(event, RouteEvent)
    routing = routing.with_decision(event.decision)
    assert (routing.edge_requests, routing.cloud_requests) == (3, 2)
    assert routing.edge_share_percent == 60.0
    refused = replace(event.decision, target=None, reason="refused: power critical")
    assert routing.with_decision(refused).edge_share_percent == 60.0

    state = NodeState.from_dict(
        {
            "ready": True,
            "state": "ready",
            "reason": None,
            "loaded_models": [],
            "slots_busy": 0,
            "slots_total": 2,
            "queue_depth": 0,
            "routing_mode": "cloud_first",
            "peers": {
                "vps": {"breaker": "open", "reachable": False},
                "gone": {"breaker": "closed"},
            },
            "power_mode": "critical",
            "threads": 1,
            "slot_limit": 1,
            "power_watts": None,
        }
    )
    assert state.peers == {"vps": ("open", False, None), "gone": ("closed", None, None)}
    base = _minimal_status()
    assert base.routing is None and base.power is None  # a server before routing
    assert base.with_state(state).routing is None
    assert base.with_route(event.decision) is base
    full = replace(
        base,
        routing=routing,
        power=Power(mode="balanced", threads=4, slots=2, max_tokens_cap=None, power_watts=None),
    )
    updated = full.with_state(state)
    assert updated.routing is not None and updated.power is not None
    assert updated.routing.mode == "cloud_first"
    assert updated.routing.peers[0].breaker == "open"
    assert updated.routing.peers[0].reachable is False
    assert (updated.power.mode, updated.power.threads, updated.power.slots) == ("critical", 1, 1)


def _minimal_status() -> Status:
    return Status.from_dict(
        {
            "node_id": "n",
            "version": "0",
            "api_version": "1",
            "uptime_seconds": 1,
            "ready": True,
            "state": "ready",
            "models": [],
            "slots": {"total": 2, "busy": 0, "detail": []},
            "queue": {"depth": 0, "capacity": 4},
            "stats": {
                "requests_per_minute": 0,
                "errors_per_minute": 0,
                "latency_p50_ms": None,
                "latency_p95_ms": None,
                "tokens_per_second": None,
                "generated_tokens_total": 0,
                "requests_total": 0,
            },
            "default_model": "m",
        }
    )
