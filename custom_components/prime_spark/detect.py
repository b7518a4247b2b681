"""The ``prime_spark.detect`` action: object detection on a camera snapshot or an image file.

The image goes to the node (``POST /api/v1/vision/detect``), which runs it on its Hailo when
it has one and on the CPU otherwise; the answer says which, and why. A camera snapshot is
taken through Home Assistant's camera component, so any camera entity works; a file must be in
a folder Home Assistant is allowed to read (``allowlist_external_dirs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv

from .compat import vol
from .const import ATTR_CONFIG_ENTRY_ID, DOMAIN
from .detection_sensor import async_report_detection
from .helpers import translated_client_errors
from .services import loaded_entry

SERVICE_DETECT: Final = "detect"
ATTR_CAMERA: Final = "camera_entity_id"
ATTR_IMAGE_PATH: Final = "image_path"
ATTR_MIN_SCORE: Final = "min_score"
SNAPSHOT_TIMEOUT: Final = 10

DETECT_SCHEMA = vol.All(
    vol.Schema(
        {
            vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
            vol.Exclusive(ATTR_CAMERA, "image"): cv.entity_domain("camera"),
            vol.Exclusive(ATTR_IMAGE_PATH, "image"): vol.All(cv.string, vol.Length(min=1)),
            vol.Optional(ATTR_MIN_SCORE): vol.All(vol.Coerce(float), vol.Range(min=0, max=1)),
        }
    ),
    cv.has_at_least_one_key(ATTR_CAMERA, ATTR_IMAGE_PATH),
)


def async_setup_detect_service(hass: HomeAssistant) -> None:
    hass.services.async_register(
        DOMAIN,
        SERVICE_DETECT,
        _async_detect,
        schema=DETECT_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )


async def _camera_image(hass: HomeAssistant, entity_id: str) -> bytes:
    # Imported here: the camera component loads only for users who detect on cameras.
    from homeassistant.components.camera import async_get_image  # noqa: PLC0415

    try:
        image = await async_get_image(hass, entity_id, timeout=SNAPSHOT_TIMEOUT)
    except HomeAssistantError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="camera_snapshot_failed",
            translation_placeholders={"entity_id": entity_id, "error": str(err)},
        ) from err
    return image.content


async def _file_image(hass: HomeAssistant, path: str) -> bytes:
    if not hass.config.is_allowed_path(path):
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="image_path_not_allowed",
            translation_placeholders={"path": path},
        )
    try:
        return await hass.async_add_executor_job(Path(path).read_bytes)
    except OSError as err:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="image_path_unreadable",
            translation_placeholders={"path": path, "error": err.strerror or str(err)},
        ) from err


async def _async_detect(call: ServiceCall) -> ServiceResponse:
    """Detect objects; the response lists them with label, score and pixel box."""
    hass = call.hass
    entry = loaded_entry(hass, call.data.get(ATTR_CONFIG_ENTRY_ID))
    camera: str | None = call.data.get(ATTR_CAMERA)
    if camera:
        image = await _camera_image(hass, camera)
    else:
        image = await _file_image(hass, call.data[ATTR_IMAGE_PATH])
    runtime = entry.runtime_data
    with translated_client_errors(hass, entry):
        result = await runtime.client.detect(image, min_score=call.data.get(ATTR_MIN_SCORE))
    if camera:
        async_report_detection(hass, entry, camera, result)
    return {
        "objects": [o.as_dict() for o in result.objects],
        "count": len(result.objects),
        "backend": result.backend,
        "model": result.model,
        "width": result.width,
        "height": result.height,
        "inference_ms": result.inference_ms,
        "total_ms": result.total_ms,
        "fallback_reason": result.fallback_reason,
        "node": runtime.status_coordinator.data.node_id,
    }
