"""Analytics sensors: the node's one-hour summary and its analytics pipeline's health.

A coordinator of its own because the data rate differs from the status push: the summary is a
database query over a window, read once a minute. Sensors use ``measurement`` state classes, so
Home Assistant keeps long-term statistics of them; the pipeline's health (Kafka connected,
store reachable, spool not near full) is a binary sensor, the spool backlog a diagnostic sensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, override

from homeassistant.components.binary_sensor import (  # type: ignore[attr-defined]
    BinarySensorDeviceClass,  # re-exported implicitly; binary_sensor/const.py is newer than 2025.4
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory, UnitOfTime
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.typing import StateType
from homeassistant.helpers.update_coordinator import (
    CoordinatorEntity,
    DataUpdateCoordinator,
)

from .client import AnalyticsSummary, AnalyticsWindow, PrimeSpark
from .const import DOMAIN, LOGGER, MANUFACTURER
from .poll import poll_errors

if TYPE_CHECKING:
    from .coordinator import PrimeSparkConfigEntry

ANALYTICS_INTERVAL = timedelta(seconds=60)
ANALYTICS_WINDOW: AnalyticsWindow = "1h"


class PrimeSparkAnalyticsCoordinator(DataUpdateCoordinator[AnalyticsSummary]):
    """Reads the node's one-hour analytics summary once a minute."""

    config_entry: PrimeSparkConfigEntry

    def __init__(
        self, hass: HomeAssistant, entry: PrimeSparkConfigEntry, client: PrimeSpark
    ) -> None:
        """Initialize the coordinator."""
        self.client = client
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{entry.title} analytics",
            update_interval=ANALYTICS_INTERVAL,
        )

    @override
    async def _async_update_data(self) -> AnalyticsSummary:
        # Analytics failing (disabled, store down) must not affect the node's own entities.
        with poll_errors("analytics_error"):
            summary = await self.client.analytics_summary(ANALYTICS_WINDOW)
        self._sync_issues(summary)
        return summary

    def _issue_id(self, key: str) -> str:
        return f"{key}_{self.config_entry.entry_id}"

    @callback
    def _sync_issues(self, summary: AnalyticsSummary) -> None:
        """Raise a repair issue for each alert condition (monitoring/prometheus/alerts.yml)
        while it holds; it goes away by itself once the condition clears."""
        conditions = {
            "analytics_kafka_disconnected": summary.kafka_connected is False,
            "analytics_spool_near_full": summary.spool_near_full,
            "analytics_unhealthy": not summary.healthy
            and summary.kafka_connected is not False
            and not summary.spool_near_full,
        }
        for key, holds in conditions.items():
            if not holds:
                ir.async_delete_issue(self.hass, DOMAIN, self._issue_id(key))
                continue
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                self._issue_id(key),
                is_fixable=False,
                is_persistent=False,
                severity=ir.IssueSeverity.ERROR
                if key == "analytics_spool_near_full"
                else ir.IssueSeverity.WARNING,
                translation_key=key,
                translation_placeholders={
                    "name": self.config_entry.title,
                    "backlog": str(summary.spool_backlog),
                    "store": summary.store,
                },
            )

    @callback
    def async_delete_issues(self) -> None:
        """Remove this node's analytics issues (on unload: nothing watches the node any more)."""
        for key in ANALYTICS_ISSUES:
            ir.async_delete_issue(self.hass, DOMAIN, self._issue_id(key))


ANALYTICS_ISSUES = (
    "analytics_kafka_disconnected",
    "analytics_spool_near_full",
    "analytics_unhealthy",
)


def _percent(value: float | None) -> float | None:
    return None if value is None else round(value * 100, 2)


@dataclass(frozen=True, kw_only=True)
class PrimeSparkAnalyticsSensorEntityDescription(SensorEntityDescription):
    """Describes an analytics sensor."""

    value_fn: Callable[[AnalyticsSummary], StateType]


ANALYTICS_SENSORS: tuple[PrimeSparkAnalyticsSensorEntityDescription, ...] = (
    PrimeSparkAnalyticsSensorEntityDescription(
        key="analytics_requests_per_minute",
        translation_key="analytics_requests_per_minute",
        native_unit_of_measurement="requests/min",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=2,
        value_fn=lambda s: s.requests_per_minute,
    ),
    PrimeSparkAnalyticsSensorEntityDescription(
        key="analytics_latency_p95",
        translation_key="analytics_latency_p95",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.MILLISECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda s: s.latency_p95_ms,
    ),
    PrimeSparkAnalyticsSensorEntityDescription(
        key="analytics_tokens_per_second",
        translation_key="analytics_tokens_per_second",
        native_unit_of_measurement="tokens/s",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda s: s.tokens_per_second,
    ),
    PrimeSparkAnalyticsSensorEntityDescription(
        key="analytics_errors",
        translation_key="analytics_errors",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda s: s.errors,
    ),
    PrimeSparkAnalyticsSensorEntityDescription(
        key="analytics_edge_share",
        translation_key="analytics_edge_share",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda s: _percent(s.edge_share),
    ),
    PrimeSparkAnalyticsSensorEntityDescription(
        key="analytics_cache_hit_rate",
        translation_key="analytics_cache_hit_rate",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda s: _percent(s.cache_hit_rate),
    ),
    PrimeSparkAnalyticsSensorEntityDescription(
        key="analytics_energy_per_request",
        translation_key="analytics_energy_per_request",
        native_unit_of_measurement="Wh",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=3,
        value_fn=lambda s: s.energy_per_request_wh,
    ),
    PrimeSparkAnalyticsSensorEntityDescription(
        key="analytics_spool_backlog",
        translation_key="analytics_spool_backlog",
        native_unit_of_measurement="events",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda s: s.spool_backlog,
    ),
)


@dataclass(frozen=True, kw_only=True)
class PrimeSparkAnalyticsBinarySensorEntityDescription(BinarySensorEntityDescription):
    """Describes an analytics binary sensor."""

    is_on_fn: Callable[[AnalyticsSummary], bool]


ANALYTICS_BINARY_SENSORS: tuple[PrimeSparkAnalyticsBinarySensorEntityDescription, ...] = (
    PrimeSparkAnalyticsBinarySensorEntityDescription(
        key="analytics_healthy",
        translation_key="analytics_healthy",
        device_class=BinarySensorDeviceClass.CONNECTIVITY,
        entity_category=EntityCategory.DIAGNOSTIC,
        is_on_fn=lambda s: s.healthy,
    ),
)


class PrimeSparkAnalyticsEntity(CoordinatorEntity[PrimeSparkAnalyticsCoordinator]):
    """An analytics entity of a Prime Spark node (the same device as the node's entities)."""

    _attr_has_entity_name = True

    def __init__(
        self,
        coordinator: PrimeSparkAnalyticsCoordinator,
        description: EntityDescription,
        node_id: str,
    ) -> None:
        """Initialize the entity."""
        super().__init__(coordinator)
        self.entity_description = description
        self._attr_unique_id = f"{node_id}_{description.key}"
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, node_id)}, manufacturer=MANUFACTURER
        )


class PrimeSparkAnalyticsSensorEntity(PrimeSparkAnalyticsEntity, SensorEntity):
    """An analytics sensor."""

    entity_description: PrimeSparkAnalyticsSensorEntityDescription

    @property
    @override
    def native_value(self) -> StateType:
        """Return the state of the sensor."""
        return self.entity_description.value_fn(self.coordinator.data)


class PrimeSparkAnalyticsBinarySensorEntity(PrimeSparkAnalyticsEntity, BinarySensorEntity):
    """An analytics binary sensor."""

    entity_description: PrimeSparkAnalyticsBinarySensorEntityDescription

    @property
    @override
    def is_on(self) -> bool:
        """Return the state of the binary sensor."""
        return self.entity_description.is_on_fn(self.coordinator.data)


def analytics_sensors(entry: PrimeSparkConfigEntry) -> list[PrimeSparkAnalyticsSensorEntity]:
    """The analytics sensors of a loaded entry."""
    data = entry.runtime_data
    node_id = data.status_coordinator.data.node_id
    return [
        PrimeSparkAnalyticsSensorEntity(data.analytics_coordinator, description, node_id)
        for description in ANALYTICS_SENSORS
    ]


def analytics_binary_sensors(
    entry: PrimeSparkConfigEntry,
) -> list[PrimeSparkAnalyticsBinarySensorEntity]:
    """The analytics binary sensors of a loaded entry."""
    data = entry.runtime_data
    node_id = data.status_coordinator.data.node_id
    return [
        PrimeSparkAnalyticsBinarySensorEntity(data.analytics_coordinator, description, node_id)
        for description in ANALYTICS_BINARY_SENSORS
    ]
