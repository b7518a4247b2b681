"""The prime_spark.detect action: a camera entity's snapshot (through HA's camera component) or
an image file, sent to the real server; its CPU detector answers (no Hailo on this machine).

The photograph is scikit-image's ``astronaut`` sample (NASA, public domain), stored as JPEG
here so that the HA test lanes need no image libraries.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from homeassistant.components.camera import Camera
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import AddEntitiesCallback
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockPlatform,
    mock_platform,
)

from custom_components.prime_spark.compat import vol
from custom_components.prime_spark.const import DOMAIN
from custom_components.prime_spark.detect import SERVICE_DETECT

from .const import NODE_ID

ASTRONAUT = Path(__file__).with_name("astronaut.jpg")
FACE_CENTRE = (223, 113)


class StillCamera(Camera):
    """A camera entity whose snapshot is a fixed image (or that fails, like an offline one)."""

    def __init__(self, name: str, image: bytes | None) -> None:
        super().__init__()
        self._attr_name = name
        self._attr_unique_id = name
        self._image = image

    async def async_camera_image(
        self, width: int | None = None, height: int | None = None
    ) -> bytes | None:
        return self._image


@pytest.fixture
async def cameras(hass: HomeAssistant) -> None:
    async def setup_platform(
        hass: HomeAssistant, config: Any, add_entities: AddEntitiesCallback, info: Any = None
    ) -> None:
        add_entities([StillCamera("Hallway", ASTRONAUT.read_bytes()), StillCamera("Dead", None)])

    mock_platform(hass, "test.camera", MockPlatform(async_setup_platform=setup_platform))
    assert await async_setup_component(hass, "camera", {"camera": {"platform": "test"}})
    await hass.async_block_till_done()


async def _detect(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    response = await hass.services.async_call(
        DOMAIN, SERVICE_DETECT, data, blocking=True, return_response=True
    )
    assert isinstance(response, dict)
    return response


def _assert_astronaut(response: dict[str, Any]) -> None:
    assert response["backend"] == "cpu"
    assert response["node"] == NODE_ID
    assert (response["width"], response["height"]) == (512, 512)
    assert response["count"] == len(response["objects"]) >= 1
    face = next(o for o in response["objects"] if o["label"] == "face")
    box = face["box"]
    assert box["x_min"] <= FACE_CENTRE[0] <= box["x_max"]
    assert box["y_min"] <= FACE_CENTRE[1] <= box["y_max"]
    assert 0 < face["score"] <= 1
    assert response["fallback_reason"]  # why not the Hailo


async def test_detect_on_a_camera(
    hass: HomeAssistant, init_integration: MockConfigEntry, cameras: None
) -> None:
    _assert_astronaut(await _detect(hass, camera_entity_id="camera.hallway"))


async def test_detect_on_a_file(
    hass: HomeAssistant, init_integration: MockConfigEntry, tmp_path: Path
) -> None:
    shutil.copy(ASTRONAUT, tmp_path / "snap.jpg")
    hass.config.allowlist_external_dirs = {str(tmp_path)}
    _assert_astronaut(await _detect(hass, image_path=str(tmp_path / "snap.jpg"), min_score=0.5))


async def test_detect_refuses_files_outside_the_allowlist(
    hass: HomeAssistant, init_integration: MockConfigEntry, tmp_path: Path
) -> None:
    shutil.copy(ASTRONAUT, tmp_path / "snap.jpg")
    with pytest.raises(ServiceValidationError) as caught:
        await _detect(hass, image_path=str(tmp_path / "snap.jpg"))
    assert caught.value.translation_key == "image_path_not_allowed"
    hass.config.allowlist_external_dirs = {str(tmp_path)}
    with pytest.raises(ServiceValidationError) as caught:
        await _detect(hass, image_path=str(tmp_path / "missing.jpg"))
    assert caught.value.translation_key == "image_path_unreadable"


async def test_detect_errors_are_translated(
    hass: HomeAssistant, init_integration: MockConfigEntry, cameras: None, tmp_path: Path
) -> None:
    with pytest.raises(HomeAssistantError) as caught:
        await _detect(hass, camera_entity_id="camera.dead")
    assert caught.value.translation_key == "camera_snapshot_failed"
    (tmp_path / "not.jpg").write_bytes(b"this is no image")
    hass.config.allowlist_external_dirs = {str(tmp_path)}
    with pytest.raises(HomeAssistantError) as caught:
        await _detect(hass, image_path=str(tmp_path / "not.jpg"))
    assert caught.value.translation_key == "server_error"
    assert "not an image" in str(caught.value)


async def test_detect_schema(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    for data in (
        {},
        {"camera_entity_id": "light.kitchen"},
        {"camera_entity_id": "camera.x", "image_path": "/x.jpg"},
        {"image_path": "/x.jpg", "min_score": 2},
    ):
        with pytest.raises(vol.Invalid):
            await _detect(hass, **data)


async def test_detection_count_sensor_per_camera(
    hass: HomeAssistant, init_integration: MockConfigEntry, cameras: None, tmp_path: Path
) -> None:
    """A camera gets a count sensor on its first detection; files do not make one."""
    registry = er.async_get(hass)
    unique_id = f"{NODE_ID}_detections_camera.hallway"
    assert registry.async_get_entity_id("sensor", DOMAIN, unique_id) is None
    response = await _detect(hass, camera_entity_id="camera.hallway")
    await hass.async_block_till_done()
    entity_id = registry.async_get_entity_id("sensor", DOMAIN, unique_id)
    assert entity_id is not None
    state = hass.states.get(entity_id)
    assert state is not None
    assert int(state.state) == response["count"]
    assert state.attributes["labels"]["face"] >= 1
    assert state.attributes["backend"] == "cpu"
    assert state.attributes["unit_of_measurement"] == "objects"

    await _detect(hass, camera_entity_id="camera.hallway", min_score=0.999)
    await hass.async_block_till_done()
    assert hass.states.get(entity_id).state == "0"

    # Restored after a reload, with its last count.
    assert await hass.config_entries.async_reload(init_integration.entry_id)
    await hass.async_block_till_done()
    assert hass.states.get(entity_id).state == "0"
    assert (
        len(
            [
                e
                for e in er.async_entries_for_config_entry(registry, init_integration.entry_id)
                if "_detections_" in e.unique_id
            ]
        )
        == 1
    )
