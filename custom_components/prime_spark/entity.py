"""Base entity for Prime Spark."""

from __future__ import annotations

from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN, MANUFACTURER
from .coordinator import PrimeSparkStatusCoordinator


class PrimeSparkEntity(CoordinatorEntity[PrimeSparkStatusCoordinator]):
    """An entity of a Prime Spark node (the device)."""

    _attr_has_entity_name = True

    def __init__(
        self, coordinator: PrimeSparkStatusCoordinator, description: EntityDescription
    ) -> None:
        """Initialize the entity."""
        super().__init__(coordinator)
        self.entity_description = description
        node_id = coordinator.data.node_id
        self._attr_unique_id = f"{node_id}_{description.key}"
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, node_id)},
            manufacturer=MANUFACTURER,
            model="Inference node",
            name=coordinator.config_entry.title,
            serial_number=node_id,
            sw_version=coordinator.data.version,
        )
