"""Buttons of a Prime Spark node."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, override

from homeassistant.components.button import ButtonEntity, ButtonEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .client import PrimeSpark, Status
from .coordinator import PrimeSparkConfigEntry
from .entity import PrimeSparkEntity
from .helpers import prime_spark_exception_handler

PARALLEL_UPDATES = 1


@dataclass(frozen=True, kw_only=True)
class PrimeSparkButtonEntityDescription(ButtonEntityDescription):
    """Describes a Prime Spark button."""

    available_fn: Callable[[Status], bool] = lambda _: True
    press_fn: Callable[[PrimeSpark, Status], Awaitable[Any]]


BUTTONS: tuple[PrimeSparkButtonEntityDescription, ...] = (
    PrimeSparkButtonEntityDescription(
        key="reload_model",
        translation_key="reload_model",
        entity_category=EntityCategory.CONFIG,
        available_fn=lambda status: status.default_model is not None,
        press_fn=lambda client, status: client.reload_model(status.default_model or ""),
    ),
    PrimeSparkButtonEntityDescription(
        key="flush_response_cache",
        translation_key="flush_response_cache",
        entity_category=EntityCategory.CONFIG,
        press_fn=lambda client, _: client.flush_response_cache(),
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrimeSparkConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up the node's buttons."""
    coordinator = entry.runtime_data.status_coordinator
    async_add_entities(PrimeSparkButtonEntity(coordinator, description) for description in BUTTONS)


class PrimeSparkButtonEntity(PrimeSparkEntity, ButtonEntity):
    """A button of a Prime Spark node."""

    entity_description: PrimeSparkButtonEntityDescription

    @property
    @override
    def available(self) -> bool:
        """Return if the button can be pressed."""
        return super().available and self.entity_description.available_fn(self.coordinator.data)

    @prime_spark_exception_handler
    @override
    async def async_press(self) -> None:
        """Press the button; the event stream reports what it changed."""
        await self.entity_description.press_fn(self.coordinator.client, self.coordinator.data)
