"""Sensors of a Prime Spark node: throughput, latency, load, models and uptime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import override

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory, UnitOfTime
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .agent_sensor import async_setup_agent_sensors
from .client import Status
from .client.models import NODE_STATES
from .coordinator import PrimeSparkConfigEntry
from .entity import PrimeSparkEntity

PARALLEL_UPDATES = 0

UNIT_TOKENS = "tokens"
UNIT_TOKENS_PER_SECOND = "tokens/s"
UNIT_REQUESTS_PER_MINUTE = "requests/min"

MAX_STATE_LENGTH = 255


@dataclass(frozen=True, kw_only=True)
class PrimeSparkSensorEntityDescription(SensorEntityDescription):
    """Describes a Prime Spark sensor."""

    value_fn: Callable[[Status], StateType | datetime]


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
        key="uptime",
        translation_key="uptime",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda status: status.started_at,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrimeSparkConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up the node's sensors."""
    coordinator = entry.runtime_data.status_coordinator
    async_add_entities(PrimeSparkSensorEntity(coordinator, description) for description in SENSORS)
    await async_setup_agent_sensors(hass, entry, async_add_entities)


class PrimeSparkSensorEntity(PrimeSparkEntity, SensorEntity):
    """A sensor of a Prime Spark node."""

    entity_description: PrimeSparkSensorEntityDescription

    @property
    @override
    def native_value(self) -> StateType | datetime:
        """Return the state of the sensor."""
        return self.entity_description.value_fn(self.coordinator.data)
