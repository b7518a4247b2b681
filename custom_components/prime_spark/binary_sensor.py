"""Binary sensors of a Prime Spark node: ready to serve, default model loaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import override

from homeassistant.components.binary_sensor import (
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .analytics import analytics_binary_sensors
from .client import Status
from .coordinator import PrimeSparkConfigEntry
from .entity import PrimeSparkEntity

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class PrimeSparkBinarySensorEntityDescription(BinarySensorEntityDescription):
    """Describes a Prime Spark binary sensor."""

    is_on_fn: Callable[[Status], bool]


BINARY_SENSORS: tuple[PrimeSparkBinarySensorEntityDescription, ...] = (
    PrimeSparkBinarySensorEntityDescription(
        key="ready",
        translation_key="ready",
        is_on_fn=lambda status: status.ready,
    ),
    PrimeSparkBinarySensorEntityDescription(
        key="model_loaded",
        translation_key="model_loaded",
        is_on_fn=lambda status: status.default_model in status.loaded_models,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrimeSparkConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up the node's binary sensors."""
    coordinator = entry.runtime_data.status_coordinator
    async_add_entities(
        PrimeSparkBinarySensorEntity(coordinator, description) for description in BINARY_SENSORS
    )
    async_add_entities(analytics_binary_sensors(entry))


class PrimeSparkBinarySensorEntity(PrimeSparkEntity, BinarySensorEntity):
    """A binary sensor of a Prime Spark node."""

    entity_description: PrimeSparkBinarySensorEntityDescription

    @property
    @override
    def is_on(self) -> bool:
        """Return the state of the binary sensor."""
        return self.entity_description.is_on_fn(self.coordinator.data)
