"""Sensors of the cluster's agents (one device each) and of pending tasks per capability.

Called from the sensor platform's setup. Entities are added when an agent or a capability
first shows up; an agent's entities are unavailable while the last poll failed and go away with
its device when the node stops reporting it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import override

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .agents import PrimeSparkAgentsCoordinator, agent_device_identifier
from .client.agents import AgentInfo, AgentList
from .const import DOMAIN, MANUFACTURER
from .coordinator import PrimeSparkConfigEntry

UNIT_TASKS = "tasks"
AGENT_STATUSES = ["idle", "busy", "full"]


def _status(agent: AgentInfo, _: AgentList) -> str:
    if agent.load <= 0:
        return "idle"
    return "full" if agent.load >= agent.capacity else "busy"


def _queue_depth(agent: AgentInfo, agents: AgentList) -> int:
    return sum(agents.pending.get(capability, 0) for capability in agent.capabilities)


@dataclass(frozen=True, kw_only=True)
class PrimeSparkAgentSensorEntityDescription(SensorEntityDescription):
    """Describes a sensor of one agent."""

    value_fn: Callable[[AgentInfo, AgentList], StateType]


AGENT_SENSORS: tuple[PrimeSparkAgentSensorEntityDescription, ...] = (
    PrimeSparkAgentSensorEntityDescription(
        key="agent_status",
        translation_key="agent_status",
        device_class=SensorDeviceClass.ENUM,
        options=AGENT_STATUSES,
        value_fn=_status,
    ),
    PrimeSparkAgentSensorEntityDescription(
        key="agent_load",
        translation_key="agent_load",
        native_unit_of_measurement=UNIT_TASKS,
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda agent, _: agent.load,
    ),
    PrimeSparkAgentSensorEntityDescription(
        key="agent_queue_depth",
        translation_key="agent_queue_depth",
        native_unit_of_measurement=UNIT_TASKS,
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=_queue_depth,
    ),
    PrimeSparkAgentSensorEntityDescription(
        key="agent_tasks_done",
        translation_key="agent_tasks_done",
        native_unit_of_measurement=UNIT_TASKS,
        state_class=SensorStateClass.TOTAL_INCREASING,
        value_fn=lambda agent, _: agent.done,
    ),
    PrimeSparkAgentSensorEntityDescription(
        key="agent_tasks_failed",
        translation_key="agent_tasks_failed",
        native_unit_of_measurement=UNIT_TASKS,
        state_class=SensorStateClass.TOTAL_INCREASING,
        value_fn=lambda agent, _: agent.failed,
    ),
    PrimeSparkAgentSensorEntityDescription(
        key="agent_last_error",
        translation_key="agent_last_error",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda agent, _: None if agent.last_error is None else agent.last_error[:255],
    ),
)

PENDING_TASKS = SensorEntityDescription(
    key="pending_tasks",
    translation_key="pending_tasks",
    native_unit_of_measurement=UNIT_TASKS,
    state_class=SensorStateClass.MEASUREMENT,
)


async def async_setup_agent_sensors(
    hass: HomeAssistant,
    entry: PrimeSparkConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Start following the cluster's agents; add entities as agents and capabilities appear."""
    coordinator = PrimeSparkAgentsCoordinator(hass, entry)
    await coordinator.async_refresh()
    known_agents: set[str] = set()
    known_capabilities: set[str] = set()

    @callback
    def _sync() -> None:
        if coordinator.data is None:
            return
        new_agents = [a for a in coordinator.data.agents.values() if a.name not in known_agents]
        new_capabilities = sorted(set(coordinator.data.pending) - known_capabilities)
        entities: list[SensorEntity] = [
            PrimeSparkAgentSensor(coordinator, agent, description)
            for agent in new_agents
            for description in AGENT_SENSORS
        ]
        entities.extend(PrimeSparkPendingTasksSensor(coordinator, c) for c in new_capabilities)
        known_agents.update(a.name for a in new_agents)
        known_capabilities.update(new_capabilities)
        # Removed devices take their entities along; an agent that comes back later is new.
        known_agents.difference_update(coordinator.async_remove_stale_devices())
        if entities:
            async_add_entities(entities)

    _sync()
    entry.async_on_unload(coordinator.async_add_listener(_sync))


class PrimeSparkAgentSensor(CoordinatorEntity[PrimeSparkAgentsCoordinator], SensorEntity):
    """A sensor of one agent (its own device, under the node)."""

    _attr_has_entity_name = True
    entity_description: PrimeSparkAgentSensorEntityDescription

    def __init__(
        self,
        coordinator: PrimeSparkAgentsCoordinator,
        agent: AgentInfo,
        description: PrimeSparkAgentSensorEntityDescription,
    ) -> None:
        """Initialize the sensor."""
        super().__init__(coordinator)
        self.entity_description = description
        self._agent_name = agent.name
        node_id = coordinator.node_id
        self._attr_unique_id = f"{node_id}_agent_{agent.name}_{description.key}"
        self._attr_device_info = DeviceInfo(
            identifiers={agent_device_identifier(node_id, agent.name)},
            manufacturer=MANUFACTURER,
            model=f"{', '.join(agent.capabilities)} agent ({agent.tier})",
            name=agent.name,
        )

    @property
    @override
    def available(self) -> bool:
        return super().available and self._agent_name in self.coordinator.data.agents

    @property
    @override
    def native_value(self) -> StateType:
        agent = self.coordinator.data.agents.get(self._agent_name)
        if agent is None:
            return None
        return self.entity_description.value_fn(agent, self.coordinator.data)


class PrimeSparkPendingTasksSensor(CoordinatorEntity[PrimeSparkAgentsCoordinator], SensorEntity):
    """Tasks waiting to run for one capability, across the cluster (on the node's device)."""

    _attr_has_entity_name = True
    entity_description = PENDING_TASKS

    def __init__(self, coordinator: PrimeSparkAgentsCoordinator, capability: str) -> None:
        """Initialize the sensor."""
        super().__init__(coordinator)
        self._capability = capability
        self._attr_unique_id = f"{coordinator.node_id}_pending_tasks_{capability}"
        self._attr_translation_placeholders = {"capability": capability}
        self._attr_device_info = DeviceInfo(identifiers={(DOMAIN, coordinator.node_id)})

    @property
    @override
    def native_value(self) -> int:
        return self.coordinator.data.pending.get(self._capability, 0)
