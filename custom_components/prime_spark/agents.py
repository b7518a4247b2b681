"""The agents of the node's cluster in Home Assistant: a coordinator, devices that come and go.

Every agent the node reports (its own and those of other nodes sharing its Redis) becomes a
device; an agent the node no longer reports (silent for the node's ``agents.agent_timeout``, so
gone, not just busy) has its device removed, entities and all (HA's dynamic-devices and
stale-devices rules), after a grace period a restarting node stays within. Polled: the registry
changes slowly, and a poll also refreshes load, queue depth and counters.
"""

from __future__ import annotations

from datetime import timedelta
from typing import override

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator

from .client import PrimeSparkResponseError
from .client.agents import AgentList, PrimeSparkAgents
from .const import DOMAIN, LOGGER
from .coordinator import PrimeSparkConfigEntry
from .poll import poll_errors

AGENTS_SCAN_INTERVAL = timedelta(seconds=15)
STALE_AGENT_POLLS = 20
"""Polls (5 minutes) an agent must be missing before its device is removed."""


def agent_device_identifier(node_id: str, agent_name: str) -> tuple[str, str]:
    return (DOMAIN, f"{node_id}-agent-{agent_name}")


class PrimeSparkAgentsCoordinator(DataUpdateCoordinator[AgentList]):
    """``GET /api/v1/agents`` of one node: the cluster's live agents and pending tasks."""

    config_entry: PrimeSparkConfigEntry

    def __init__(self, hass: HomeAssistant, entry: PrimeSparkConfigEntry) -> None:
        """Initialize the coordinator."""
        self.api = PrimeSparkAgents(entry.runtime_data.client)
        self.node_id = entry.runtime_data.status_coordinator.data.node_id
        self._missing_polls: dict[str, int] = {}
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{entry.title} agents",
            update_interval=AGENTS_SCAN_INTERVAL,
        )

    @override
    async def _async_update_data(self) -> AgentList:
        with poll_errors():
            try:
                return await self.api.agents()
            except PrimeSparkResponseError as err:
                if err.status == 404:  # a node from before agents: nothing to show
                    return AgentList(agents={}, pending={})
                raise

    @callback
    def async_remove_stale_devices(self) -> set[str]:
        """Remove the devices of agents missing from the last ``STALE_AGENT_POLLS`` polls.

        A node restarting (an add-on update) drops out of the registry for a moment; its
        agents' devices, entity ids and customisations must survive that, so an agent counts
        as gone for good only after it has been missing for a while. Returns the removed names.
        """
        if not self.last_update_success or self.data is None:
            return set()  # an unreachable node says nothing about its agents
        registry = dr.async_get(self.hass)
        prefix = f"{self.node_id}-agent-"
        removed: set[str] = set()
        for device in dr.async_entries_for_config_entry(registry, self.config_entry.entry_id):
            names = {
                identifier[len(prefix) :]
                for domain, identifier in device.identifiers
                if domain == DOMAIN and identifier.startswith(prefix)
            }
            if not names:
                continue
            if names & self.data.agents.keys():
                for name in names:
                    self._missing_polls.pop(name, None)
                continue
            name = min(names)
            self._missing_polls[name] = self._missing_polls.get(name, 0) + 1
            if self._missing_polls[name] >= STALE_AGENT_POLLS:
                LOGGER.debug("Agent %s is gone; removing its device", name)
                registry.async_update_device(
                    device.id, remove_config_entry_id=self.config_entry.entry_id
                )
                del self._missing_polls[name]
                removed.add(name)
        return removed
