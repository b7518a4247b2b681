"""The Prime Spark integration: a local AI node (LLM server) in Home Assistant."""

from __future__ import annotations

from datetime import timedelta

from homeassistant.const import CONF_HOST, CONF_PORT, CONF_TOKEN, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.typing import ConfigType

from .agent_llm_api import async_setup_agent_llm_api
from .agent_services import async_setup_agent_services
from .analytics import PrimeSparkAnalyticsCoordinator
from .client import PrimeSpark
from .const import CONF_SCAN_INTERVAL, DEFAULT_SCAN_INTERVAL, DOMAIN
from .coordinator import (
    PrimeSparkConfigEntry,
    PrimeSparkEventListener,
    PrimeSparkRuntimeData,
    PrimeSparkStatusCoordinator,
)
from .detect import async_setup_detect_service
from .intent import async_setup_mode_sentences, async_setup_status_sentences
from .issues import async_delete_issues
from .link import async_setup_link, link_issue_id
from .memory import async_delete_memory_issues, async_setup_memory
from .memory_llm import async_register_memory_api
from .services import async_setup_services

PLATFORMS = [
    Platform.BINARY_SENSOR,
    Platform.BUTTON,
    Platform.CONVERSATION,
    Platform.SELECT,
    Platform.SENSOR,
]

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Set up what exists once for every node: the actions and the status sentences."""
    async_setup_services(hass)
    async_setup_detect_service(hass)
    async_setup_agent_services(hass)
    async_setup_agent_llm_api(hass)
    await async_setup_status_sentences(hass)
    await async_setup_mode_sentences(hass)
    async_register_memory_api(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: PrimeSparkConfigEntry) -> bool:
    """Set up Prime Spark from a config entry."""
    client = PrimeSpark(
        entry.data[CONF_HOST],
        port=entry.data[CONF_PORT],
        token=entry.data[CONF_TOKEN],
        session=async_get_clientsession(hass),
    )
    coordinator = PrimeSparkStatusCoordinator(hass, entry, client)
    # Unreachable -> ConfigEntryNotReady, 401 -> ConfigEntryAuthFailed (reauth).
    await coordinator.async_config_entry_first_refresh()

    analytics = PrimeSparkAnalyticsCoordinator(hass, entry, client)
    # Not fatal: analytics trouble leaves its own entities unavailable, never the node's.
    await analytics.async_refresh()
    entry.async_on_unload(analytics.async_delete_issues)

    entry.runtime_data = PrimeSparkRuntimeData(
        client=client,
        status_coordinator=coordinator,
        analytics_coordinator=analytics,
        link_coordinator=await async_setup_link(hass, entry, client, coordinator.data.node_id),
    )
    entry.runtime_data.memory_coordinator = await async_setup_memory(
        hass, entry, client, coordinator.data.node_id
    )

    entry.async_create_background_task(
        hass,
        PrimeSparkEventListener(hass, coordinator).async_run(),
        name=f"Prime Spark {entry.title} event stream",
    )
    entry.async_on_unload(entry.add_update_listener(_async_options_updated))

    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: PrimeSparkConfigEntry) -> bool:
    """Unload a config entry; the event stream task ends with it."""
    if unloaded := await hass.config_entries.async_unload_platforms(entry, PLATFORMS):
        async_delete_issues(hass, entry)
        ir.async_delete_issue(hass, DOMAIN, link_issue_id(entry))
        async_delete_memory_issues(hass, entry)
    return unloaded


async def _async_options_updated(hass: HomeAssistant, entry: PrimeSparkConfigEntry) -> None:
    """Apply changed options to the running entry (nothing here needs a reload)."""
    entry.runtime_data.status_coordinator.async_set_fallback_interval(
        timedelta(seconds=entry.options.get(CONF_SCAN_INTERVAL, DEFAULT_SCAN_INTERVAL))
    )
