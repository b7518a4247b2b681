"""Repair issues the integration raises."""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .client import SUPPORTED_API_VERSION
from .const import DOCUMENTATION_URL, DOMAIN

if TYPE_CHECKING:
    from .coordinator import PrimeSparkConfigEntry


def _api_version_issue_id(entry: PrimeSparkConfigEntry) -> str:
    return f"api_version_{entry.entry_id}"


@callback
def async_check_api_version(
    hass: HomeAssistant, entry: PrimeSparkConfigEntry, api_version: str
) -> None:
    """Raise a repair issue while the node speaks another control-plane API version.

    A newer server needs a newer integration; an older server needs its add-on (or server)
    updated. The issue goes away by itself once the versions match again.
    """
    issue_id = _api_version_issue_id(entry)
    if api_version == SUPPORTED_API_VERSION:
        ir.async_delete_issue(hass, DOMAIN, issue_id)
        return
    try:
        newer = int(api_version) > int(SUPPORTED_API_VERSION)
    except ValueError:
        newer = True  # not a number: a scheme from a future server
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        is_fixable=False,
        is_persistent=False,
        learn_more_url=DOCUMENTATION_URL,
        severity=ir.IssueSeverity.ERROR,
        translation_key="api_version_newer" if newer else "api_version_older",
        translation_placeholders={
            "name": entry.title,
            "server_version": api_version,
            "supported_version": SUPPORTED_API_VERSION,
        },
    )


@callback
def async_delete_issues(hass: HomeAssistant, entry: PrimeSparkConfigEntry) -> None:
    """Remove the entry's issues (on unload: nothing watches the node any more)."""
    ir.async_delete_issue(hass, DOMAIN, _api_version_issue_id(entry))
