"""Selects of a Prime Spark node: the routing mode and the power mode.

Setting one changes the node at once (and the node keeps it across restarts); a change made
elsewhere (another Home Assistant, the API, a blueprint) comes back through the event stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import override

from homeassistant.components.select import SelectEntity, SelectEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .client import Status
from .client.models import POWER_MODES, ROUTING_MODES
from .coordinator import PrimeSparkConfigEntry, PrimeSparkStatusCoordinator
from .entity import PrimeSparkEntity
from .helpers import prime_spark_exception_handler

PARALLEL_UPDATES = 1


@dataclass(frozen=True, kw_only=True)
class PrimeSparkSelectEntityDescription(SelectEntityDescription):
    """Describes a Prime Spark select."""

    has_fn: Callable[[Status], bool]
    current_fn: Callable[[Status], str | None]
    select_fn: Callable[[PrimeSparkStatusCoordinator, str], Awaitable[None]]


SELECTS: tuple[PrimeSparkSelectEntityDescription, ...] = (
    PrimeSparkSelectEntityDescription(
        key="routing_mode",
        translation_key="routing_mode",
        entity_category=EntityCategory.CONFIG,
        options=list(ROUTING_MODES),
        has_fn=lambda status: status.routing is not None,
        current_fn=lambda status: None if status.routing is None else status.routing.mode,
        select_fn=lambda coordinator, mode: coordinator.async_set_routing_mode(mode),
    ),
    PrimeSparkSelectEntityDescription(
        key="power_mode",
        translation_key="power_mode",
        entity_category=EntityCategory.CONFIG,
        options=list(POWER_MODES),
        has_fn=lambda status: status.power is not None,
        current_fn=lambda status: None if status.power is None else status.power.mode,
        select_fn=lambda coordinator, mode: coordinator.async_set_power_mode(mode),
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrimeSparkConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up the node's selects (a server without routing or power modes has none)."""
    coordinator = entry.runtime_data.status_coordinator
    async_add_entities(
        PrimeSparkSelectEntity(coordinator, description)
        for description in SELECTS
        if description.has_fn(coordinator.data)
    )


class PrimeSparkSelectEntity(PrimeSparkEntity, SelectEntity):
    """A mode of a Prime Spark node."""

    entity_description: PrimeSparkSelectEntityDescription

    @property
    @override
    def current_option(self) -> str | None:
        """Return the mode in effect."""
        return self.entity_description.current_fn(self.coordinator.data)

    @prime_spark_exception_handler
    @override
    async def async_select_option(self, option: str) -> None:
        """Change the mode on the node; the answer updates every entity at once."""
        await self.entity_description.select_fn(self.coordinator, option)
