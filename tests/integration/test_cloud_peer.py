"""A node with a cloud peer in Home Assistant: the peer's device follows the real peer.

Two real servers on loopback: the cloud, and the edge (the configured node) with the cloud as
its peer. The cloud is killed and started again; Home Assistant shows its breaker open and
closed through the edge's event stream.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from homeassistant.components.select import ATTR_OPTION, SERVICE_SELECT_OPTION
from homeassistant.const import ATTR_ENTITY_ID, STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr

from custom_components.prime_spark.const import DOMAIN, SERVICE_GENERATE
from tests.server.server_process import TOKENS, ServerProcess

from .helpers import crash, entry_for, wait_for

REACHABLE = "binary_sensor.prime_spark_edge_peer_vps_reachable"
BREAKER = "sensor.prime_spark_edge_peer_vps_circuit_breaker"
LATENCY = "sensor.prime_spark_edge_peer_vps_latency"
SHARE = "sensor.prime_spark_edge_peer_vps_share_of_requests"
LAST_ROUTE = "sensor.prime_spark_edge_last_routing_decision"


@pytest.fixture
def cloud(tmp_path: Path, server_settings: dict[str, Any]) -> Generator[ServerProcess]:
    proc = ServerProcess(
        tmp_path, {**server_settings, "server": {"node_id": "cloudnode"}}, name="cloud"
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def edge(
    tmp_path: Path, server_settings: dict[str, Any], cloud: ServerProcess
) -> Generator[ServerProcess]:
    peer = {"name": "vps", "url": cloud.url, "token": TOKENS["operator"], "connect_timeout": 1}
    routing = {"peers": [peer], "health_interval": 0.5, "failure_threshold": 1, "cooldown": 1}
    proc = ServerProcess(tmp_path, {**server_settings, "routing": routing}, name="edge")
    proc.start()
    yield proc
    proc.stop()


def _cloud_chats(cloud: ServerProcess) -> int:
    _, _, text = cloud.request("GET", "/metrics", token=TOKENS["reader"])
    return sum(
        int(float(value))
        for labels, value in re.findall(
            r"^prime_spark_http_requests_total\{([^}]*)\} (\S+)$", text, re.M
        )
        if 'route="/v1/chat/completions"' in labels
    )


async def _generate(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    response = await hass.services.async_call(
        DOMAIN, SERVICE_GENERATE, data, blocking=True, return_response=True
    )
    assert isinstance(response, dict)
    return response


async def test_peer_device_follows_the_cloud(
    hass: HomeAssistant,
    device_registry: dr.DeviceRegistry,
    edge: ServerProcess,
    cloud: ServerProcess,
) -> None:
    entry = entry_for(edge)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    coordinator = entry.runtime_data.status_coordinator
    await wait_for(lambda: coordinator.stream_connected)
    await wait_for(lambda: hass.states.get(REACHABLE).state == STATE_ON)
    assert hass.states.get(BREAKER).state == "closed"
    assert hass.states.get(REACHABLE).attributes["breaker"] == "closed"
    devices = {
        identifier: device
        for device in dr.async_entries_for_config_entry(device_registry, entry.entry_id)
        for identifier in device.identifiers
    }
    assert devices[(DOMAIN, "edge_peer_vps")].model == "Cloud peer"
    assert devices[(DOMAIN, "edge_peer_vps")].name == "Prime Spark edge peer vps"

    await hass.services.async_call(
        "select",
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: "select.prime_spark_edge_routing_mode", ATTR_OPTION: "cloud_first"},
        blocking=True,
    )
    before = await hass.async_add_executor_job(_cloud_chats, cloud)
    await _generate(hass, prompt="Say hi.", max_tokens=4)
    assert await hass.async_add_executor_job(_cloud_chats, cloud) == before + 1
    await wait_for(lambda: hass.states.get(LAST_ROUTE).state == "cloud: cloud first")
    assert hass.states.get(LAST_ROUTE).attributes["peer"] == "vps"
    await wait_for(lambda: float(hass.states.get(SHARE).state) > 0)
    await coordinator.async_refresh()  # latency also arrives with the stats every 10 s
    assert float(hass.states.get(LATENCY).state) > 0

    # Private requests stay home even in cloud_first.
    await _generate(hass, prompt="Say hi.", max_tokens=4, private=True)
    assert await hass.async_add_executor_job(_cloud_chats, cloud) == before + 1
    await wait_for(lambda: hass.states.get(LAST_ROUTE).state == "edge: private")

    await hass.async_add_executor_job(crash, cloud)
    response = await _generate(hass, prompt="Say hi.", max_tokens=4)  # falls back to the edge
    assert response["text"] is not None
    await wait_for(lambda: hass.states.get(REACHABLE).state == STATE_OFF)
    assert hass.states.get(REACHABLE).attributes["last_error"]

    await hass.async_add_executor_job(cloud.start)
    await wait_for(lambda: hass.states.get(REACHABLE).state == STATE_ON, timeout=30)
    assert hass.states.get(BREAKER).state == "closed"
    await hass.config_entries.async_unload(entry.entry_id)
