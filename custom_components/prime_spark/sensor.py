"""Sensors of a Prime Spark node: throughput, latency, load, models and uptime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, override

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfPower, UnitOfTime
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .agent_sensor import async_setup_agent_sensors
from .analytics import analytics_sensors
from .client import Routing, Status
from .client.models import BREAKER_STATES, NODE_STATES
from .coordinator import PrimeSparkConfigEntry
from .detection_sensor import async_setup_detection_sensors
from .entity import PrimeSparkEntity, PrimeSparkPeerEntity
from .link import link_sensors
from .memory import memory_sensor_entities

PARALLEL_UPDATES = 0

UNIT_TOKENS = "tokens"
UNIT_TOKENS_PER_SECOND = "tokens/s"
UNIT_REQUESTS_PER_MINUTE = "requests/min"

MAX_STATE_LENGTH = 255


@dataclass(frozen=True, kw_only=True)
class PrimeSparkSensorEntityDescription(SensorEntityDescription):
    """Describes a Prime Spark sensor."""

    value_fn: Callable[[Status], StateType | datetime]
    has_fn: Callable[[Status], bool] = lambda _: True
    """Whether the node has this at all (servers before routing have no routing sensors)."""
    available_fn: Callable[[Status], bool] = lambda _: True
    attributes_fn: Callable[[Status], dict[str, Any] | None] = lambda _: None


def _last_route_attributes(status: Status) -> dict[str, Any] | None:
    decision = None if status.routing is None else status.routing.last_decision
    if decision is None:
        return None
    return {
        "target": decision.target,
        "peer": decision.peer,
        "model": decision.model,
        "private": decision.private,
    }


def _loaded_models(status: Status) -> str | None:
    """The loaded models, comma separated; None (unknown) while none is loaded."""
    if not (loaded := status.loaded_models):
        return None
    text = ", ".join(loaded)
    return text if len(text) <= MAX_STATE_LENGTH else text[: MAX_STATE_LENGTH - 1] + "…"


SENSORS: tuple[PrimeSparkSensorEntityDescription, ...] = (
    PrimeSparkSensorEntityDescription(
        key="tokens_per_second",
        translation_key="tokens_per_second",
        native_unit_of_measurement=UNIT_TOKENS_PER_SECOND,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda status: status.stats.tokens_per_second,
    ),
    PrimeSparkSensorEntityDescription(
        key="requests_per_minute",
        translation_key="requests_per_minute",
        native_unit_of_measurement=UNIT_REQUESTS_PER_MINUTE,
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda status: status.stats.requests_per_minute,
    ),
    PrimeSparkSensorEntityDescription(
        key="errors_per_minute",
        translation_key="errors_per_minute",
        native_unit_of_measurement=UNIT_REQUESTS_PER_MINUTE,
        state_class=SensorStateClass.MEASUREMENT,
        entity_registry_enabled_default=False,
        value_fn=lambda status: status.stats.errors_per_minute,
    ),
    PrimeSparkSensorEntityDescription(
        key="latency_p95",
        translation_key="latency_p95",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.MILLISECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda status: status.stats.latency_p95_ms,
    ),
    PrimeSparkSensorEntityDescription(
        key="latency_p50",
        translation_key="latency_p50",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.MILLISECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        entity_registry_enabled_default=False,
        value_fn=lambda status: status.stats.latency_p50_ms,
    ),
    PrimeSparkSensorEntityDescription(
        key="queue_depth",
        translation_key="queue_depth",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda status: status.queue_depth,
    ),
    PrimeSparkSensorEntityDescription(
        key="busy_slots",
        translation_key="busy_slots",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda status: status.slots_busy,
    ),
    PrimeSparkSensorEntityDescription(
        key="total_slots",
        translation_key="total_slots",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda status: status.slots_total,
    ),
    PrimeSparkSensorEntityDescription(
        key="loaded_models",
        translation_key="loaded_models",
        value_fn=_loaded_models,
    ),
    PrimeSparkSensorEntityDescription(
        key="default_model",
        translation_key="default_model",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda status: status.default_model,
    ),
    PrimeSparkSensorEntityDescription(
        key="node_state",
        translation_key="node_state",
        device_class=SensorDeviceClass.ENUM,
        options=list(NODE_STATES),
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda status: status.state,
    ),
    PrimeSparkSensorEntityDescription(
        key="generated_tokens",
        translation_key="generated_tokens",
        native_unit_of_measurement=UNIT_TOKENS,
        state_class=SensorStateClass.TOTAL_INCREASING,
        entity_registry_enabled_default=False,
        value_fn=lambda status: status.stats.generated_tokens_total,
    ),
    PrimeSparkSensorEntityDescription(
        key="requests",
        translation_key="requests",
        state_class=SensorStateClass.TOTAL_INCREASING,
        entity_registry_enabled_default=False,
        value_fn=lambda status: status.stats.requests_total,
    ),
    PrimeSparkSensorEntityDescription(
        key="edge_share",
        translation_key="edge_share",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        has_fn=lambda status: status.routing is not None,
        value_fn=lambda status: (
            None if status.routing is None else status.routing.edge_share_percent
        ),
    ),
    PrimeSparkSensorEntityDescription(
        key="last_route",
        translation_key="last_route",
        has_fn=lambda status: status.routing is not None,
        value_fn=lambda status: (
            None
            if status.routing is None or status.routing.last_decision is None
            else status.routing.last_decision.reason
        ),
        attributes_fn=_last_route_attributes,
    ),
    PrimeSparkSensorEntityDescription(
        key="power",
        translation_key="power",
        device_class=SensorDeviceClass.POWER,
        native_unit_of_measurement=UnitOfPower.WATT,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        has_fn=lambda status: status.power is not None,
        # Unavailable, not zero or a guess, where the hardware gives no telemetry.
        available_fn=lambda status: (
            status.power is not None and status.power.power_watts is not None
        ),
        value_fn=lambda status: None if status.power is None else status.power.power_watts,
    ),
    PrimeSparkSensorEntityDescription(
        key="uptime",
        translation_key="uptime",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda status: status.started_at,
    ),
)


@dataclass(frozen=True, kw_only=True)
class PrimeSparkPeerSensorEntityDescription(SensorEntityDescription):
    """Describes a sensor of a cloud peer."""

    value_fn: Callable[[Routing, str], StateType]


PEER_SENSORS: tuple[PrimeSparkPeerSensorEntityDescription, ...] = (
    PrimeSparkPeerSensorEntityDescription(
        key="peer_breaker",
        translation_key="peer_breaker",
        device_class=SensorDeviceClass.ENUM,
        options=list(BREAKER_STATES),
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda routing, name: _peer_value(routing, name, "breaker"),
    ),
    PrimeSparkPeerSensorEntityDescription(
        key="peer_latency",
        translation_key="peer_latency",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.MILLISECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda routing, name: _peer_value(routing, name, "latency_ms"),
    ),
    PrimeSparkPeerSensorEntityDescription(
        key="peer_share",
        translation_key="peer_share",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda routing, name: routing.peer_share(name),
    ),
)


def _peer_value(routing: Routing, name: str, field: str) -> StateType:
    peer = routing.peer(name)
    value: StateType = None if peer is None else getattr(peer, field)
    return value


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrimeSparkConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up the node's sensors."""
    coordinator = entry.runtime_data.status_coordinator
    async_add_entities(
        PrimeSparkSensorEntity(coordinator, description)
        for description in SENSORS
        if description.has_fn(coordinator.data)
    )
    async_add_entities(link_sensors(entry))
    async_setup_detection_sensors(hass, entry, async_add_entities)
    routing = coordinator.data.routing
    if routing is not None:
        async_add_entities(
            PrimeSparkPeerSensorEntity(coordinator, description, peer.name)
            for peer in routing.peers
            for description in PEER_SENSORS
        )
    async_add_entities(memory_sensor_entities(entry))
    async_add_entities(analytics_sensors(entry))
    await async_setup_agent_sensors(hass, entry, async_add_entities)


class PrimeSparkSensorEntity(PrimeSparkEntity, SensorEntity):
    """A sensor of a Prime Spark node."""

    entity_description: PrimeSparkSensorEntityDescription

    @property
    @override
    def native_value(self) -> StateType | datetime:
        """Return the state of the sensor."""
        return self.entity_description.value_fn(self.coordinator.data)

    @property
    @override
    def available(self) -> bool:
        """Unavailable with the node, or when the node cannot measure this."""
        return super().available and self.entity_description.available_fn(self.coordinator.data)

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Details of the value (the last routing decision's target, peer and model)."""
        return self.entity_description.attributes_fn(self.coordinator.data)


class PrimeSparkPeerSensorEntity(PrimeSparkPeerEntity, SensorEntity):
    """A sensor of a cloud peer: breaker, latency, share of requests."""

    entity_description: PrimeSparkPeerSensorEntityDescription

    @property
    @override
    def native_value(self) -> StateType:
        """Return the state of the sensor."""
        routing = self.coordinator.data.routing
        if routing is None:  # pragma: no cover - the entity exists only with routing
            return None
        return self.entity_description.value_fn(routing, self.peer_name)
