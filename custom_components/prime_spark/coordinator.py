"""Data coordination for Prime Spark: the node's event stream first, polling as the fallback."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, override

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryError
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator

from .client import (
    PrimeSpark,
    PrimeSparkAuthenticationError,
    PrimeSparkError,
    RouteEvent,
    ServerEvent,
    StatsEvent,
    Status,
)
from .const import (
    CONF_SCAN_INTERVAL,
    DEFAULT_SCAN_INTERVAL,
    DOMAIN,
    EVENT_STREAM_RETRY_MAXIMUM,
    EVENT_STREAM_RETRY_MINIMUM,
    LOGGER,
)
from .issues import async_check_api_version
from .poll import poll_errors

if TYPE_CHECKING:
    from .analytics import PrimeSparkAnalyticsCoordinator
    from .link import PrimeSparkLinkCoordinator
    from .memory import PrimeSparkMemoryCoordinator


@dataclass(kw_only=True)
class PrimeSparkRuntimeData:
    """What a loaded entry holds: the client and the coordinators."""

    client: PrimeSpark
    status_coordinator: PrimeSparkStatusCoordinator
    analytics_coordinator: PrimeSparkAnalyticsCoordinator
    link_coordinator: PrimeSparkLinkCoordinator | None = None
    """The WireGuard link's coordinator; None on a node without a link."""
    memory_coordinator: PrimeSparkMemoryCoordinator | None = None


type PrimeSparkConfigEntry = ConfigEntry[PrimeSparkRuntimeData]


class PrimeSparkStatusCoordinator(DataUpdateCoordinator[Status]):
    """The node's status: pushed by its event stream, polled only while the stream is down.

    One coordinator serves every entity because the node sends all of its live data on one
    stream (``state`` on every change, ``stats`` every 10 s) and answers all of it in one
    ``GET /api/v1/status``; what changes rarely (version, models, start time) comes with the
    full status read after every (re)connect of the stream.
    """

    config_entry: PrimeSparkConfigEntry

    def __init__(
        self, hass: HomeAssistant, entry: PrimeSparkConfigEntry, client: PrimeSpark
    ) -> None:
        """Initialize the coordinator."""
        self.client = client
        self.fallback_interval = timedelta(
            seconds=entry.options.get(CONF_SCAN_INTERVAL, DEFAULT_SCAN_INTERVAL)
        )
        self.stream_connected = False
        self.stream_connects = 0
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{entry.title} status",
            update_interval=self.fallback_interval,
        )

    @override
    async def _async_update_data(self) -> Status:
        """Read the whole status."""
        with poll_errors():
            try:
                status = await self.client.status()
            except PrimeSparkAuthenticationError as err:
                raise ConfigEntryAuthFailed(
                    translation_domain=DOMAIN, translation_key="authentication_error"
                ) from err
        if status.node_id != self.config_entry.unique_id:
            # Another node answers at this address: its entities must not show up as ours.
            raise ConfigEntryError(
                translation_domain=DOMAIN,
                translation_key="node_id_mismatch",
                translation_placeholders={
                    "expected": str(self.config_entry.unique_id),
                    "actual": status.node_id,
                },
            )
        async_check_api_version(self.hass, self.config_entry, status.api_version)
        return status

    @callback
    def async_set_fallback_interval(self, interval: timedelta) -> None:
        """Apply a new polling interval (options flow) without reloading."""
        self.fallback_interval = interval
        if not self.stream_connected:
            self.update_interval = interval

    @callback
    def async_set_stream_connected(self, connected: bool) -> None:
        """Stop polling while the stream pushes; poll again once it is gone."""
        self.stream_connected = connected
        self.update_interval = None if connected else self.fallback_interval
        if connected:
            self.stream_connects += 1

    async def async_set_routing_mode(self, mode: str) -> None:
        """Change the node's routing mode and show the node's answer at once."""
        routing = await self.client.set_routing_mode(mode)
        if self.data is not None:
            self.async_set_updated_data(replace(self.data, routing=routing))

    async def async_set_power_mode(self, mode: str) -> None:
        """Change the node's power mode and show the node's answer at once."""
        power = await self.client.set_power_mode(mode)
        if self.data is not None:
            self.async_set_updated_data(replace(self.data, power=power))

    @callback
    def async_handle_event(self, event: ServerEvent) -> None:
        """Apply a pushed event to the last full status."""
        if self.data is None:  # pragma: no cover - the listener starts after the first refresh
            return
        if isinstance(event, StatsEvent):
            self.async_set_updated_data(self.data.with_stats(event.stats))
            return
        if isinstance(event, RouteEvent):
            self.async_set_updated_data(self.data.with_route(event.decision))
            return
        known = {model.id for model in self.data.models}
        if not set(event.state.loaded_models) <= known:
            # A model the last status did not list (the server's config changed): read it all.
            self.config_entry.async_create_task(
                self.hass, self.async_request_refresh(), eager_start=False
            )
        self.async_set_updated_data(self.data.with_state(event.state))


class PrimeSparkEventListener:
    """Follows the node's event stream for as long as the entry is loaded.

    Every (re)connect starts with a full status read, so nothing that changed while the stream
    was down is missed; losing the stream reads the status at once, which marks the entities
    unavailable when the node is gone (and logs that once, through the coordinator), then polls
    at the fallback interval while reconnecting with exponential backoff.
    """

    def __init__(self, hass: HomeAssistant, coordinator: PrimeSparkStatusCoordinator) -> None:
        """Initialize the listener."""
        self._hass = hass
        self._coordinator = coordinator
        self._retry = EVENT_STREAM_RETRY_MINIMUM

    async def async_run(self) -> None:
        """Keep the stream open; returns only on an authentication failure."""
        coordinator = self._coordinator
        while not self._hass.is_stopping:
            connected = False
            try:
                async with aclosing(coordinator.client.events()) as events:
                    async for event in events:
                        if not connected:
                            # Catch up on what changed while the stream was down, then switch
                            # from polling to push.
                            await coordinator.async_refresh()
                            if not coordinator.last_update_success:
                                # A stream, but no usable status (another node at this
                                # address, say): stay with polling, try again later.
                                break
                            connected = True
                            self._retry = EVENT_STREAM_RETRY_MINIMUM
                            coordinator.async_set_stream_connected(True)
                            LOGGER.debug("Event stream of %s connected", coordinator.name)
                        coordinator.async_handle_event(event)
            except PrimeSparkAuthenticationError:
                # The refresh raises ConfigEntryAuthFailed, which starts the reauth flow; the
                # entry is reloaded with the new token, and a new listener with it.
                coordinator.async_set_stream_connected(False)
                await coordinator.async_refresh()
                return
            except PrimeSparkError as err:
                LOGGER.debug("Event stream of %s stopped: %s", coordinator.name, err)
            else:
                LOGGER.debug("Event stream of %s ended", coordinator.name)
            if connected:
                coordinator.async_set_stream_connected(False)
                await coordinator.async_refresh()
            await asyncio.sleep(self._retry.total_seconds())
            self._retry = min(self._retry * 2, EVENT_STREAM_RETRY_MAXIMUM)
