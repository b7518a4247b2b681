"""The node's WireGuard link to its cloud peers, as a device of its own in Home Assistant.

A connectivity binary sensor, the handshake age, the traffic both ways and the peer endpoint,
read from ``GET /api/v1/link`` every 30 s (WireGuard re-handshakes every two minutes, so a
faster poll shows nothing new). A node without a link (``state: disabled``), or a server too
old to have the route, gets no link device at all.

When the link has been down for longer than :data:`STALE_REPAIR_AFTER`, a repair issue says
so and what to check; it goes away once a handshake succeeds again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, override

from homeassistant.components.binary_sensor import (  # type: ignore[attr-defined]
    BinarySensorDeviceClass,  # re-exported, not declared: current HA keeps it in .const
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory, UnitOfInformation, UnitOfTime
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.typing import StateType
from homeassistant.helpers.update_coordinator import (
    CoordinatorEntity,
    DataUpdateCoordinator,
)

from .client import LinkStatus, PrimeSpark, PrimeSparkResponseError
from .const import DOCUMENTATION_URL, DOMAIN, LOGGER, MANUFACTURER
from .poll import poll_errors

if TYPE_CHECKING:
    from .coordinator import PrimeSparkConfigEntry

LINK_SCAN_INTERVAL = timedelta(seconds=30)
STALE_REPAIR_AFTER = 15 * 60.0
"""Seconds a link may be down before a repair issue is raised (a VPS reboot takes less)."""


class PrimeSparkLinkCoordinator(DataUpdateCoordinator[LinkStatus]):
    """Polls the link; tracks how long it has been down for the repair issue."""

    config_entry: PrimeSparkConfigEntry

    def __init__(
        self,
        hass: HomeAssistant,
        entry: PrimeSparkConfigEntry,
        client: PrimeSpark,
        node_id: str,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.down_since: float | None = None
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{entry.title} link",
            update_interval=LINK_SCAN_INTERVAL,
        )

    @override
    async def _async_update_data(self) -> LinkStatus:
        with poll_errors():
            link = await self.client.link()
        self._track_staleness(link)
        return link

    @callback
    def _track_staleness(self, link: LinkStatus) -> None:
        issue_id = link_issue_id(self.config_entry)
        if not link.enabled or link.connected:
            self.down_since = None
            ir.async_delete_issue(self.hass, DOMAIN, issue_id)
            return
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        if now - self.down_since < STALE_REPAIR_AFTER:
            return
        age = link.handshake_age_seconds
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            is_persistent=False,
            learn_more_url=DOCUMENTATION_URL,
            severity=ir.IssueSeverity.WARNING,
            translation_key="link_stale",
            translation_placeholders={
                "name": self.config_entry.title,
                "interface": link.interface,
                "minutes": str(round((now - self.down_since) / 60)),
                "handshake": "never" if age is None else f"{round(age / 60)} min ago",
                "reason": link.reason or "no recent handshake",
            },
        )


def link_issue_id(entry: PrimeSparkConfigEntry) -> str:
    return f"link_stale_{entry.entry_id}"


async def async_setup_link(
    hass: HomeAssistant, entry: PrimeSparkConfigEntry, client: PrimeSpark, node_id: str
) -> PrimeSparkLinkCoordinator | None:
    """The link coordinator when the node has a link; None otherwise (no device then)."""
    coordinator = PrimeSparkLinkCoordinator(hass, entry, client, node_id)
    try:
        link = await client.link()
    except PrimeSparkResponseError as err:
        if err.status == 404:  # a server from before the link existed
            return None
        raise
    if not link.enabled:
        return None
    coordinator.async_set_updated_data(link)
    coordinator._track_staleness(link)  # the first reading counts too
    return coordinator


class PrimeSparkLinkEntity(CoordinatorEntity[PrimeSparkLinkCoordinator]):
    """An entity of the link device (attached to the node's device)."""

    _attr_has_entity_name = True

    def __init__(
        self,
        coordinator: PrimeSparkLinkCoordinator,
        description: BinarySensorEntityDescription | SensorEntityDescription,
    ) -> None:
        super().__init__(coordinator)
        self.entity_description = description
        node_id = coordinator.node_id
        self._attr_unique_id = f"{node_id}_link_{description.key}"
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, f"{node_id}_link")},
            manufacturer=MANUFACTURER,
            model="WireGuard link",
            name=f"{coordinator.config_entry.title} link {coordinator.data.interface}",
        )


@dataclass(frozen=True, kw_only=True)
class LinkBinarySensorEntityDescription(BinarySensorEntityDescription):
    is_on_fn: Callable[[LinkStatus], bool]


@dataclass(frozen=True, kw_only=True)
class LinkSensorEntityDescription(SensorEntityDescription):
    value_fn: Callable[[LinkStatus], StateType]


LINK_BINARY_SENSORS = (
    LinkBinarySensorEntityDescription(
        key="connected",
        translation_key="link_connected",
        device_class=BinarySensorDeviceClass.CONNECTIVITY,
        is_on_fn=lambda link: link.connected,
    ),
)

LINK_SENSORS = (
    LinkSensorEntityDescription(
        key="handshake_age",
        translation_key="link_handshake_age",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.SECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        value_fn=lambda link: link.handshake_age_seconds,
    ),
    LinkSensorEntityDescription(
        key="received",
        translation_key="link_received",
        device_class=SensorDeviceClass.DATA_SIZE,
        native_unit_of_measurement=UnitOfInformation.BYTES,
        suggested_unit_of_measurement=UnitOfInformation.MEBIBYTES,
        state_class=SensorStateClass.TOTAL_INCREASING,
        value_fn=lambda link: link.rx_bytes,
    ),
    LinkSensorEntityDescription(
        key="sent",
        translation_key="link_sent",
        device_class=SensorDeviceClass.DATA_SIZE,
        native_unit_of_measurement=UnitOfInformation.BYTES,
        suggested_unit_of_measurement=UnitOfInformation.MEBIBYTES,
        state_class=SensorStateClass.TOTAL_INCREASING,
        value_fn=lambda link: link.tx_bytes,
    ),
    LinkSensorEntityDescription(
        key="endpoint",
        translation_key="link_endpoint",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda link: link.endpoint,
    ),
)


class PrimeSparkLinkBinarySensor(PrimeSparkLinkEntity, BinarySensorEntity):
    entity_description: LinkBinarySensorEntityDescription

    @property
    @override
    def is_on(self) -> bool:
        return self.entity_description.is_on_fn(self.coordinator.data)


class PrimeSparkLinkSensor(PrimeSparkLinkEntity, SensorEntity):
    entity_description: LinkSensorEntityDescription

    @property
    @override
    def native_value(self) -> StateType:
        return self.entity_description.value_fn(self.coordinator.data)


def link_binary_sensors(entry: PrimeSparkConfigEntry) -> list[PrimeSparkLinkBinarySensor]:
    """The link's binary sensors, for the binary_sensor platform (none without a link)."""
    if (coordinator := entry.runtime_data.link_coordinator) is None:
        return []
    return [PrimeSparkLinkBinarySensor(coordinator, d) for d in LINK_BINARY_SENSORS]


def link_sensors(entry: PrimeSparkConfigEntry) -> list[PrimeSparkLinkSensor]:
    """The link's sensors, for the sensor platform (none without a link)."""
    if (coordinator := entry.runtime_data.link_coordinator) is None:
        return []
    return [PrimeSparkLinkSensor(coordinator, d) for d in LINK_SENSORS]
