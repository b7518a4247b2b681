"""Analytics sensors against the real server: values from its summary, state classes for
long-term statistics, the pipeline-health binary sensor, and a node without analytics."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from homeassistant.components.sensor import ATTR_STATE_CLASS, SensorStateClass
from homeassistant.const import STATE_ON, STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.analytics import ANALYTICS_SENSORS
from custom_components.prime_spark.client import AnalyticsSummary
from tests.server.server_process import TOKENS, ServerProcess

from .helpers import entry_for

PREFIX = "sensor.prime_spark_edge_"


async def test_analytics_sensors_follow_the_summary(
    hass: HomeAssistant, init_integration: MockConfigEntry, server: ServerProcess
) -> None:
    status, _, _ = await hass.async_add_executor_job(
        lambda: server.request(
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            token=TOKENS["operator"],
        )
    )
    assert status == 200
    coordinator = init_integration.runtime_data.analytics_coordinator

    async def counted() -> bool:
        await coordinator.async_refresh()
        return coordinator.data.requests >= 1

    from .helpers import wait_for

    await wait_for(counted, timeout=30, interval=0.5)
    await hass.async_block_till_done()
    summary: AnalyticsSummary = coordinator.data
    rpm = hass.states.get(PREFIX + "requests_per_minute_1_h")
    assert rpm is not None
    assert float(rpm.state) == summary.requests_per_minute > 0
    assert rpm.attributes[ATTR_STATE_CLASS] == SensorStateClass.MEASUREMENT
    for description in ANALYTICS_SENSORS:
        assert description.state_class == SensorStateClass.MEASUREMENT  # long-term statistics
    assert float(hass.states.get(PREFIX + "edge_share_1_h").state) == 100.0
    assert float(hass.states.get(PREFIX + "latency_95th_percentile_1_h").state) > 0
    # No cache and no power telemetry on this node yet: unknown, not zero.
    assert hass.states.get(PREFIX + "cache_hit_rate_1_h").state == STATE_UNKNOWN
    assert hass.states.get(PREFIX + "energy_per_request_1_h").state == STATE_UNKNOWN
    assert hass.states.get(PREFIX + "analytics_spool_backlog").state.isdigit()
    healthy = hass.states.get("binary_sensor.prime_spark_edge_analytics_pipeline")
    assert healthy is not None and healthy.state == STATE_ON


@pytest.fixture
def no_analytics_server(
    tmp_path: Path, server_settings: dict[str, Any]
) -> Generator[ServerProcess]:
    """A node with ``analytics.enabled: false`` (not started)."""
    proc = ServerProcess(tmp_path, {**server_settings, "analytics": {"enabled": False}})
    yield proc
    proc.stop()


async def test_node_without_analytics_keeps_its_own_entities(
    hass: HomeAssistant, no_analytics_server: ServerProcess
) -> None:
    proc = no_analytics_server
    await hass.async_add_executor_job(proc.start)
    entry: MockConfigEntry = entry_for(proc)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.prime_spark_edge_ready").state == STATE_ON
    assert hass.states.get(PREFIX + "requests_per_minute_1_h").state == STATE_UNAVAILABLE
    assert (
        hass.states.get("binary_sensor.prime_spark_edge_analytics_pipeline").state
        == STATE_UNAVAILABLE
    )
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
