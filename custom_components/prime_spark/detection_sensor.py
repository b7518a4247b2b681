"""A sensor per camera the ``prime_spark.detect`` action was used on: its last object count.

Created the first time a camera's snapshot is detected (the action sends a dispatcher signal),
restored after a restart from the entity registry and the last state, so an automation can
trigger on "people in the hallway > 0" without keeping the action's response itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Final, override

from homeassistant.components.sensor import (
    RestoreSensor,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.dispatcher import async_dispatcher_connect, async_dispatcher_send
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .client import Detections
from .const import DOMAIN
from .coordinator import PrimeSparkConfigEntry

UNIQUE_ID_INFIX: Final = "_detections_"
UNIT_OBJECTS: Final = "objects"

DETECTION_SENSOR: Final = SensorEntityDescription(
    key="camera_detections",
    translation_key="camera_detections",
    state_class=SensorStateClass.MEASUREMENT,
    native_unit_of_measurement=UNIT_OBJECTS,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class CameraDetection:
    camera_entity_id: str
    count: int
    labels: dict[str, int]
    backend: str


def _signal(entry: PrimeSparkConfigEntry) -> str:
    return f"{DOMAIN}_camera_detection_{entry.entry_id}"


@callback
def async_report_detection(
    hass: HomeAssistant, entry: PrimeSparkConfigEntry, camera_entity_id: str, result: Detections
) -> None:
    """Called by the detect action after a camera snapshot was detected."""
    detection = CameraDetection(
        camera_entity_id=camera_entity_id,
        count=len(result.objects),
        labels=dict(Counter(o.label for o in result.objects)),
        backend=result.backend,
    )
    async_dispatcher_send(hass, _signal(entry), detection)


@callback
def async_setup_detection_sensors(
    hass: HomeAssistant,
    entry: PrimeSparkConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Restore the cameras' sensors from the registry; add one when a new camera shows up."""
    node_id = entry.runtime_data.status_coordinator.data.node_id
    prefix = f"{node_id}{UNIQUE_ID_INFIX}"
    sensors: dict[str, CameraDetectionSensor] = {}
    for registered in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id):
        if registered.domain == "sensor" and registered.unique_id.startswith(prefix):
            camera = registered.unique_id[len(prefix) :]
            sensors[camera] = CameraDetectionSensor(node_id, entry.title, camera)
    async_add_entities(sensors.values())

    @callback
    def _detected(detection: CameraDetection) -> None:
        sensor = sensors.get(detection.camera_entity_id)
        if sensor is None:
            sensor = sensors[detection.camera_entity_id] = CameraDetectionSensor(
                node_id, entry.title, detection.camera_entity_id, detection
            )
            async_add_entities([sensor])
            return
        sensor.async_update_detection(detection)

    entry.async_on_unload(async_dispatcher_connect(hass, _signal(entry), _detected))


class CameraDetectionSensor(RestoreSensor):
    """Objects found in a camera's last detected snapshot."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(
        self,
        node_id: str,
        title: str,
        camera_entity_id: str,
        detection: CameraDetection | None = None,
    ) -> None:
        self.entity_description = DETECTION_SENSOR
        self._camera = camera_entity_id
        self._attr_unique_id = f"{node_id}{UNIQUE_ID_INFIX}{camera_entity_id}"
        self._attr_translation_placeholders = {"camera": camera_entity_id.split(".", 1)[-1]}
        self._attr_device_info = DeviceInfo(identifiers={(DOMAIN, node_id)}, name=title)
        self._attr_extra_state_attributes: dict[str, Any] = {"camera": camera_entity_id}
        if detection is not None:
            self._apply(detection)

    def _apply(self, detection: CameraDetection) -> None:
        self._attr_native_value = detection.count
        self._attr_extra_state_attributes = {
            "camera": self._camera,
            "labels": detection.labels,
            "backend": detection.backend,
        }

    @override
    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        if self._attr_native_value is None and (last := await self.async_get_last_sensor_data()):
            self._attr_native_value = last.native_value

    @callback
    def async_update_detection(self, detection: CameraDetection) -> None:
        self._apply(detection)
        self.async_write_ha_state()
