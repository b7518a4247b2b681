"""Analytics sensors against the real server: values from its summary, state classes for
long-term statistics, the pipeline-health binary sensor, and a node without analytics."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from homeassistant.components.sensor import ATTR_STATE_CLASS, SensorStateClass
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.analytics import ANALYTICS_SENSORS
from custom_components.prime_spark.client import AnalyticsSummary
from custom_components.prime_spark.const import DOMAIN
from tests.server.server_process import TOKENS, ServerProcess, free_port

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


@pytest.fixture
def dead_kafka_server(tmp_path: Path, server_settings: dict[str, Any]) -> Generator[ServerProcess]:
    """A node whose Kafka address has nothing listening (not started)."""
    proc = ServerProcess(
        tmp_path,
        {**server_settings, "analytics": {"kafka_bootstrap": f"127.0.0.1:{free_port()}"}},
    )
    yield proc
    proc.stop()


async def test_kafka_down_raises_a_repair_issue_while_it_holds(
    hass: HomeAssistant, issue_registry: ir.IssueRegistry, dead_kafka_server: ServerProcess
) -> None:
    await hass.async_add_executor_job(dead_kafka_server.start)
    entry: MockConfigEntry = entry_for(dead_kafka_server)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    issue_id = f"analytics_kafka_disconnected_{entry.entry_id}"
    issue = issue_registry.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.translation_key == "analytics_kafka_disconnected"
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["name"] == entry.title
    healthy = hass.states.get("binary_sensor.prime_spark_edge_analytics_pipeline")
    assert healthy.state == STATE_OFF
    # The node's own entities are not affected.
    assert hass.states.get("binary_sensor.prime_spark_edge_ready").state == STATE_ON
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert issue_registry.async_get_issue(DOMAIN, issue_id) is None
