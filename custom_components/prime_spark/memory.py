"""The node's tiered memory in Home Assistant: a coordinator, tier devices and the repair issue.

Memory status changes slowly (items, bytes, promotions), so it is polled on its own rate instead
of riding the node's event stream. A warm tier whose path is missing or not writable (the classic
"NAS not mounted") raises a repair issue until the node reports it healthy again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, override

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfInformation
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.typing import StateType
from homeassistant.helpers.update_coordinator import (
    CoordinatorEntity,
    DataUpdateCoordinator,
)

from .client import PrimeSpark, PrimeSparkResponseError
from .const import DOCUMENTATION_URL, DOMAIN, LOGGER, MANUFACTURER
from .coordinator import PrimeSparkConfigEntry
from .poll import poll_errors

MEMORY_SCAN_INTERVAL = timedelta(seconds=30)
TIERS = ("hot", "warm", "cold")


class PrimeSparkMemoryCoordinator(DataUpdateCoordinator[dict[str, Any]]):
    """``GET /api/v1/memory/status`` every 30 s; an empty mapping when memory is turned off."""

    config_entry: PrimeSparkConfigEntry

    def __init__(
        self, hass: HomeAssistant, entry: PrimeSparkConfigEntry, client: PrimeSpark, node_id: str
    ) -> None:
        """Initialize the coordinator."""
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{DOMAIN} memory",
            update_interval=MEMORY_SCAN_INTERVAL,
        )
        self.client = client
        self.node_id = node_id

    @override
    async def _async_update_data(self) -> dict[str, Any]:
        with poll_errors():
            try:
                data = await self.client.memory_status()
            except PrimeSparkResponseError as err:
                if err.status == 404:  # memory turned off on the node: no tier to show
                    return {}
                raise
        async_check_warm_tier(self.hass, self.config_entry, data)
        return data


def _warm_issue_id(entry: PrimeSparkConfigEntry) -> str:
    return f"warm_tier_{entry.entry_id}"


@callback
def async_check_warm_tier(
    hass: HomeAssistant, entry: PrimeSparkConfigEntry, data: dict[str, Any]
) -> None:
    """Raise (or clear) the repair issue for a warm tier the node cannot use."""
    warm = data.get("tiers", {}).get("warm") or {}
    problem = warm.get("problem")
    issue_id = _warm_issue_id(entry)
    if not problem:
        ir.async_delete_issue(hass, DOMAIN, issue_id)
        return
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        is_fixable=False,
        is_persistent=False,
        learn_more_url=DOCUMENTATION_URL,
        severity=ir.IssueSeverity.ERROR,
        translation_key=f"warm_tier_{problem}",
        translation_placeholders={"name": entry.title, "path": str(warm.get("path", ""))},
    )


@callback
def async_delete_memory_issues(hass: HomeAssistant, entry: PrimeSparkConfigEntry) -> None:
    """Remove the entry's memory issues (on unload)."""
    ir.async_delete_issue(hass, DOMAIN, _warm_issue_id(entry))


@dataclass(frozen=True, kw_only=True)
class MemoryTierSensorEntityDescription(SensorEntityDescription):
    """Describes a sensor of one memory tier."""

    value_fn: Callable[[dict[str, Any]], StateType]


def _percent(value: Any) -> StateType:
    return None if value is None else round(float(value) * 100, 2)


TIER_SENSORS: tuple[MemoryTierSensorEntityDescription, ...] = (
    MemoryTierSensorEntityDescription(
        key="items",
        translation_key="memory_items",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda tier: tier.get("items"),
    ),
    MemoryTierSensorEntityDescription(
        key="bytes",
        translation_key="memory_bytes",
        device_class=SensorDeviceClass.DATA_SIZE,
        native_unit_of_measurement=UnitOfInformation.BYTES,
        suggested_unit_of_measurement=UnitOfInformation.MEBIBYTES,
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda tier: tier.get("bytes"),
    ),
    MemoryTierSensorEntityDescription(
        key="hit_rate",
        translation_key="memory_hit_rate",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda tier: _percent(tier.get("hit_rate")),
    ),
    MemoryTierSensorEntityDescription(
        key="capacity_used",
        translation_key="memory_capacity_used",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda tier: _percent(tier.get("capacity_used")),
    ),
    MemoryTierSensorEntityDescription(
        key="promotions",
        translation_key="memory_promotions",
        state_class=SensorStateClass.TOTAL_INCREASING,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda tier: tier.get("promotions_in"),
    ),
    MemoryTierSensorEntityDescription(
        key="demotions",
        translation_key="memory_demotions",
        state_class=SensorStateClass.TOTAL_INCREASING,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda tier: tier.get("demotions_out"),
    ),
)


def memory_sensor_entities(entry: PrimeSparkConfigEntry) -> list[SensorEntity]:
    """One device per configured tier with its sensors, and the node's cache hit-rate sensor."""
    coordinator = entry.runtime_data.memory_coordinator
    if coordinator is None or not coordinator.data:
        return []
    entities: list[SensorEntity] = [ResponseCacheHitRateSensor(coordinator)]
    for tier, status in coordinator.data.get("tiers", {}).items():
        if status.get("configured"):
            entities += [MemoryTierSensor(coordinator, tier, d) for d in TIER_SENSORS]
    return entities


class MemoryTierSensor(CoordinatorEntity[PrimeSparkMemoryCoordinator], SensorEntity):
    """A sensor of one memory tier, on that tier's own device (of the same config entry)."""

    _attr_has_entity_name = True
    entity_description: MemoryTierSensorEntityDescription

    def __init__(
        self,
        coordinator: PrimeSparkMemoryCoordinator,
        tier: str,
        description: MemoryTierSensorEntityDescription,
    ) -> None:
        """Initialize the sensor."""
        super().__init__(coordinator)
        self.entity_description = description
        self._tier = tier
        node_id = coordinator.node_id
        self._attr_unique_id = f"{node_id}_memory_{tier}_{description.key}"
        backend = coordinator.data["tiers"][tier].get("backend") or tier
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, f"{node_id}_memory_{tier}")},
            manufacturer=MANUFACTURER,
            model=f"Memory tier ({backend})",
            name=f"{coordinator.config_entry.title} memory {tier}",
        )

    @property
    def _tier_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.coordinator.data.get("tiers", {}).get(self._tier) or {}
        return status

    @property
    @override
    def available(self) -> bool:
        """Unavailable while the tier is (Redis down, NAS unmounted, peer offline)."""
        return super().available and bool(self._tier_status.get("available"))

    @property
    @override
    def native_value(self) -> StateType:
        """Return the state of the sensor."""
        return self.entity_description.value_fn(self._tier_status)


class ResponseCacheHitRateSensor(CoordinatorEntity[PrimeSparkMemoryCoordinator], SensorEntity):
    """Share of cacheable chat requests the node answered from its response cache."""

    _attr_has_entity_name = True
    _attr_translation_key = "response_cache_hit_rate"
    _attr_native_unit_of_measurement = PERCENTAGE
    _attr_state_class = SensorStateClass.MEASUREMENT
    _attr_suggested_display_precision = 1

    def __init__(self, coordinator: PrimeSparkMemoryCoordinator) -> None:
        """Initialize the sensor on the node's device."""
        super().__init__(coordinator)
        self._attr_unique_id = f"{coordinator.node_id}_response_cache_hit_rate"
        self._attr_device_info = DeviceInfo(identifiers={(DOMAIN, coordinator.node_id)})

    @property
    @override
    def native_value(self) -> StateType:
        """Return the hit rate in percent (unknown before the first cacheable request)."""
        cache = self.coordinator.data.get("response_cache") or {}
        return _percent(cache.get("hit_rate"))


async def async_setup_memory(
    hass: HomeAssistant, entry: PrimeSparkConfigEntry, client: PrimeSpark, node_id: str
) -> PrimeSparkMemoryCoordinator:
    """Create the memory coordinator and read it once (a failure is not fatal to the entry)."""
    coordinator = PrimeSparkMemoryCoordinator(hass, entry, client, node_id)
    await coordinator.async_refresh()
    if not coordinator.last_update_success:
        LOGGER.debug("Memory status not available yet on %s", entry.title)
    return coordinator
