"""Agent devices in Home Assistant: one per agent of the cluster, removed when the agent is gone.

Two real nodes share a Redis (a unique key prefix per test): Home Assistant is set up for the
first; the second node's agents show up as devices through the first, and when that node is
killed its agents leave the cluster registry and their devices leave Home Assistant.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed

from custom_components.prime_spark.agents import AGENTS_SCAN_INTERVAL, STALE_AGENT_POLLS
from custom_components.prime_spark.const import DOMAIN
from tests.server.server_process import ServerProcess

from .const import NODE_ID
from .helpers import crash, entry_for, wait_for

AGENT_TYPES = ("embed", "llm", "memory", "vision")


def _agent_devices(hass: HomeAssistant, entry: MockConfigEntry) -> set[str]:
    registry = dr.async_get(hass)
    return {
        identifier.split("-agent-", 1)[1]
        for device in dr.async_entries_for_config_entry(registry, entry.entry_id)
        for domain, identifier in device.identifiers
        if domain == DOMAIN and "-agent-" in identifier
    }


async def _poll(hass: HomeAssistant, times: int = 1) -> None:
    """Let the agents coordinator poll (time travel past its interval).

    The poll runs as a background task over real HTTP: give it real time to finish, or the
    next time jump would also fire its request timeout.
    """
    for _ in range(times):
        async_fire_time_changed(
            hass, dt_util.utcnow() + AGENTS_SCAN_INTERVAL + timedelta(seconds=1)
        )
        await hass.async_block_till_done()
        await asyncio.sleep(0.25)
        await hass.async_block_till_done()


async def test_agent_devices_follow_the_cluster(
    hass: HomeAssistant,
    tmp_path: Path,
    server_settings: dict[str, Any],
    redis_url: str,
) -> None:
    agents = {
        "redis_url": redis_url,
        "key_prefix": f"test-ha-agents-{uuid.uuid4().hex[:8]}:",
        "heartbeat_interval": 0.2,
        "agent_timeout": 1.5,
        "reclaim_idle": 2.0,
    }
    edge = ServerProcess(tmp_path, {**server_settings, "agents": agents}, name="edge")
    cloud = ServerProcess(
        tmp_path,
        {
            **server_settings,
            "server": {"node_id": "cloud"},
            "agents": {**agents, "tier": "cloud", "enabled": ["llm"]},
        },
        name="cloud",
    )
    try:
        await hass.async_add_executor_job(edge.start)
        await hass.async_add_executor_job(cloud.start)
        entry = entry_for(edge)
        entry.add_to_hass(hass)

        async def cluster_ready() -> bool:
            _, _, body = await hass.async_add_executor_job(edge.request, "GET", "/api/v1/agents")
            return len(body["agents"]) == len(AGENT_TYPES) + 1

        await wait_for(cluster_ready, timeout=30)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()

        expected = {f"{NODE_ID}.{t}" for t in AGENT_TYPES} | {"cloud.llm"}
        assert _agent_devices(hass, entry) == expected
        state = hass.states.get("sensor.cloud_llm_status")
        assert state is not None
        assert state.state == "idle"
        pending = hass.states.get("sensor.prime_spark_edge_pending_llm_tasks")
        assert pending is not None
        assert pending.state == "0"

        await hass.async_add_executor_job(crash, cloud)

        async def cloud_gone() -> bool:
            _, _, body = await hass.async_add_executor_job(edge.request, "GET", "/api/v1/agents")
            return all(a["node_id"] != "cloud" for a in body["agents"])

        await wait_for(cloud_gone, timeout=30)
        # Missing for a moment (a restarting node): the device stays, its entities unavailable.
        await _poll(hass, STALE_AGENT_POLLS - 1)
        assert _agent_devices(hass, entry) == expected
        assert hass.states.get("sensor.cloud_llm_status").state == "unavailable"
        # Gone for good: the device and its entities are removed.
        await _poll(hass)
        await wait_for(lambda: _agent_devices(hass, entry) == expected - {"cloud.llm"})
        assert hass.states.get("sensor.cloud_llm_status") is None
        assert hass.states.get(f"sensor.{NODE_ID}_llm_status") is not None

        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
    finally:
        await asyncio.gather(
            hass.async_add_executor_job(edge.stop), hass.async_add_executor_job(cloud.stop)
        )
