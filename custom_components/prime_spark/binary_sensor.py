"""Binary sensors of a Prime Spark node: ready to serve, default model loaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import override

from homeassistant.components.binary_sensor import (  # type: ignore[attr-defined]
    # Imported, not re-exported, by the package since 2026.x; its ``const`` module is newer
    # than 2025.4, so the package is the one place both versions have it.
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .analytics import analytics_binary_sensors
from .client import Peer, Status
from .coordinator import PrimeSparkConfigEntry
from .entity import PrimeSparkEntity, PrimeSparkPeerEntity
from .link import link_binary_sensors

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


PEER_REACHABLE = BinarySensorEntityDescription(
    key="peer_reachable",
    translation_key="peer_reachable",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
)
"""On while the peer answers and its circuit breaker lets requests through."""


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
    async_add_entities(link_binary_sensors(entry))
    routing = coordinator.data.routing
    if routing is not None:
        async_add_entities(
            PrimeSparkPeerBinarySensorEntity(coordinator, PEER_REACHABLE, peer.name)
            for peer in routing.peers
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


class PrimeSparkPeerBinarySensorEntity(PrimeSparkPeerEntity, BinarySensorEntity):
    """Whether a cloud peer can take requests: reachable, breaker not open."""

    @property
    @override
    def is_on(self) -> bool | None:
        """Return the state of the binary sensor (None until the first health check)."""
        peer: Peer | None = self.peer
        if peer is None or peer.reachable is None:
            return None
        return peer.reachable and peer.breaker != "open"

    @property
    @override
    def extra_state_attributes(self) -> dict[str, str | None] | None:
        """The breaker's state and the last error, for automations and the dashboard."""
        peer = self.peer
        if peer is None:
            return None
        return {"breaker": peer.breaker, "last_error": peer.last_error}
