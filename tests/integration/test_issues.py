"""The repair issue raised while the node speaks another control-plane API version."""

from __future__ import annotations

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark import issues
from custom_components.prime_spark.const import DOMAIN


@pytest.mark.parametrize(
    ("supported", "translation_key"),
    [("2", "api_version_older"), ("0", "api_version_newer"), ("v-next", "api_version_newer")],
)
async def test_api_version_mismatch(
    hass: HomeAssistant,
    issue_registry: ir.IssueRegistry,
    mock_config_entry: MockConfigEntry,
    monkeypatch: pytest.MonkeyPatch,
    supported: str,
    translation_key: str,
) -> None:
    """The real node speaks API "1"; this integration is made to expect another version."""
    monkeypatch.setattr(issues, "SUPPORTED_API_VERSION", supported)
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()

    issue_id = f"api_version_{mock_config_entry.entry_id}"
    issue = issue_registry.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.translation_key == translation_key
    assert issue.severity is ir.IssueSeverity.ERROR
    assert issue.translation_placeholders == {
        "name": mock_config_entry.title,
        "server_version": "1",
        "supported_version": supported,
    }

    # The versions match again (the integration or the node was updated): the issue goes away.
    monkeypatch.setattr(issues, "SUPPORTED_API_VERSION", "1")
    await mock_config_entry.runtime_data.status_coordinator.async_refresh()
    assert issue_registry.async_get_issue(DOMAIN, issue_id) is None

    monkeypatch.setattr(issues, "SUPPORTED_API_VERSION", supported)
    await mock_config_entry.runtime_data.status_coordinator.async_refresh()
    assert issue_registry.async_get_issue(DOMAIN, issue_id) is not None
    # Unloading the entry takes its issues along.
    assert await hass.config_entries.async_unload(mock_config_entry.entry_id)
    assert issue_registry.async_get_issue(DOMAIN, issue_id) is None
