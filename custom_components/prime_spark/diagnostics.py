"""Diagnostics support for Prime Spark."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_TOKEN
from homeassistant.core import HomeAssistant

from .coordinator import PrimeSparkConfigEntry

TO_REDACT = {CONF_TOKEN, "api_token", "authorization", "jwt_secret", "password"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: PrimeSparkConfigEntry
) -> dict[str, Any]:
    """Return diagnostics for a config entry: its settings (no token) and the node's status."""
    coordinator = entry.runtime_data.status_coordinator
    return async_redact_data(
        {
            "entry": {
                "title": entry.title,
                "data": dict(entry.data),
                "options": dict(entry.options),
            },
            "event_stream": {
                "connected": coordinator.stream_connected,
                "connects": coordinator.stream_connects,
            },
            "polling": {
                "last_update_success": coordinator.last_update_success,
                "update_interval_seconds": (
                    None
                    if coordinator.update_interval is None
                    else coordinator.update_interval.total_seconds()
                ),
            },
            "status": coordinator.data.as_dict(),
        },
        TO_REDACT,
    )
