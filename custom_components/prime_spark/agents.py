"""The agents of the node's cluster in Home Assistant: a coordinator, devices that come and go.

Every agent the node reports (its own and those of other nodes sharing its Redis) becomes a
device under the node; an agent the node no longer reports (it has been silent for the node's
``agents.agent_timeout``, so it is gone, not just busy) has its device removed, entities and
all (HA's dynamic-devices and stale-devices rules). Polled: the registry changes slowly, and a
poll also refreshes load, queue depth and counters.
"""

from __future__ import annotations

from datetime import timedelta
from typing import override

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed

from .client import PrimeSparkConnectionError, PrimeSparkError, PrimeSparkResponseError
from .client.agents import AgentList, PrimeSparkAgents
from .const import DOMAIN, LOGGER
from .coordinator import PrimeSparkConfigEntry

AGENTS_SCAN_INTERVAL = timedelta(seconds=15)


def agent_device_identifier(node_id: str, agent_name: str) -> tuple[str, str]:
    return (DOMAIN, f"{node_id}-agent-{agent_name}")


class PrimeSparkAgentsCoordinator(DataUpdateCoordinator[AgentList]):
    """``GET /api/v1/agents`` of one node: the cluster's live agents and pending tasks."""

    config_entry: PrimeSparkConfigEntry

    def __init__(self, hass: HomeAssistant, entry: PrimeSparkConfigEntry) -> None:
        """Initialize the coordinator."""
        self.api = PrimeSparkAgents(entry.runtime_data.client)
        self.node_id = entry.runtime_data.status_coordinator.data.node_id
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{entry.title} agents",
            update_interval=AGENTS_SCAN_INTERVAL,
        )

    @override
    async def _async_update_data(self) -> AgentList:
        try:
            return await self.api.agents()
        except PrimeSparkResponseError as err:
            if err.status == 404:  # a node from before agents: nothing to show
                return AgentList(agents={}, pending={})
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="unknown_error",
                translation_placeholders={"error": str(err)},
            ) from err
        except PrimeSparkConnectionError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="communication_error",
                translation_placeholders={"error": str(err)},
            ) from err
        except PrimeSparkError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="unknown_error",
                translation_placeholders={"error": str(err)},
            ) from err

    @callback
    def async_remove_stale_devices(self) -> None:
        """Remove the devices of agents the node no longer reports."""
        if not self.last_update_success or self.data is None:
            return  # an unreachable node says nothing about its agents
        registry = dr.async_get(self.hass)
        live = {agent_device_identifier(self.node_id, name) for name in self.data.agents}
        prefix = f"{self.node_id}-agent-"
        for device in dr.async_entries_for_config_entry(registry, self.config_entry.entry_id):
            ours = {i for i in device.identifiers if i[0] == DOMAIN and i[1].startswith(prefix)}
            if ours and not ours & live:
                LOGGER.debug("Agent device %s is gone; removing it", device.name)
                registry.async_update_device(
                    device.id, remove_config_entry_id=self.config_entry.entry_id
                )
