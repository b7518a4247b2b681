"""Sensors of the node, snapshotted against the real server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry
from syrupy.assertion import SnapshotAssertion

from tests.integration.conftest import EMBEDDING_MODEL
from tests.server.server_process import ServerProcess

from .helpers import entity_snapshot, entry_for

# Rates, totals and times depend on what ran before in the session.
VOLATILE = frozenset(
    {
        "tokens_per_second",
        "requests_per_minute",
        "errors_per_minute",
        "latency_p95",
        "latency_p50",
        "generated_tokens",
        "requests",
        "uptime",
        "edge_share",
        "last_route",
        # Memory: what earlier tests stored, read and cached.
        "memory_items",
        "memory_bytes",
        "memory_hit_rate",
        "memory_capacity_used",
        "memory_promotions",
        "memory_demotions",
        "response_cache_hit_rate",
        # analytics: a one-hour window over what the session's server served
        "analytics_requests_per_minute",
        "analytics_latency_p95",
        "analytics_tokens_per_second",
        "analytics_errors",
        "analytics_edge_share",
        "analytics_cache_hit_rate",
        "analytics_energy_per_request",
        "analytics_spool_backlog",
        # agents: whatever other tests ran (or still run) on the session server; the load is
        # the last heartbeat's, which may trail a finished task by a heartbeat interval
        "agent_tasks_done",
        "agent_tasks_failed",
        "agent_last_error",
        "agent_load",
        "agent_status",
        "agent_queue_depth",
        "pending_tasks",
    }
)


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_sensors(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    init_integration: MockConfigEntry,
    model_section: dict[str, Any],
) -> None:
    sensors = entity_snapshot(hass, entity_registry, init_integration, "sensor", volatile=VOLATILE)
    # Which request was routed last depends on what ran before in the session.
    sensors["sensor.prime_spark_edge_last_routing_decision"]["attributes"] = None
    assert sensors == snapshot
    status = init_integration.runtime_data.status_coordinator.data
    assert status.started_at is not None
    uptime = hass.states.get("sensor.prime_spark_edge_uptime")
    assert datetime.fromisoformat(uptime.state) == status.started_at.astimezone(UTC)
    # The chat model and the embedding model the session node loads up front (conftest).
    assert hass.states.get("sensor.prime_spark_edge_loaded_models").state == ", ".join(
        sorted((model_section["default"], EMBEDDING_MODEL))
    )


async def test_disabled_by_default(
    hass: HomeAssistant, entity_registry: er.EntityRegistry, server: ServerProcess
) -> None:
    """The noisy sensors start disabled."""
    entry = entry_for(server)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    disabled = sorted(
        e.translation_key or ""
        for e in er.async_entries_for_config_entry(entity_registry, entry.entry_id)
        if e.disabled_by is not None
    )
    await hass.config_entries.async_unload(entry.entry_id)
    assert disabled == [
        "errors_per_minute",
        "generated_tokens",
        "latency_p50",
        "requests",
        "total_slots",
    ]
