"""Base entity for Prime Spark."""

from __future__ import annotations

from typing import override

from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .client import Peer
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


class PrimeSparkPeerEntity(CoordinatorEntity[PrimeSparkStatusCoordinator]):
    """An entity of one cloud peer of a Prime Spark node (a device behind the node)."""

    _attr_has_entity_name = True

    def __init__(
        self,
        coordinator: PrimeSparkStatusCoordinator,
        description: EntityDescription,
        peer: str,
    ) -> None:
        """Initialize the entity."""
        super().__init__(coordinator)
        self.entity_description = description
        self.peer_name = peer
        node_id = coordinator.data.node_id
        self._attr_unique_id = f"{node_id}_peer_{peer}_{description.key}"
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, f"{node_id}_peer_{peer}")},
            manufacturer=MANUFACTURER,
            model="Cloud peer",
            # Named after its node: ``via_device`` differs between the HA versions we support.
            name=f"{coordinator.config_entry.title} peer {peer}",
        )

    @property
    def peer(self) -> Peer | None:
        """The peer's last known state (None once the node no longer lists it)."""
        routing = self.coordinator.data.routing
        return None if routing is None else routing.peer(self.peer_name)

    @property
    @override
    def available(self) -> bool:
        """Unavailable with the node, or when the node no longer has this peer."""
        return super().available and self.peer is not None
