"""The ``prime_spark.run_agent_task`` action: hand work to an agent of the cluster, get the result.

The node picks the agent (any node's, by capability and free capacity); the action waits up to
``timeout`` seconds and returns the agent's result as response data. A task that failed, expired
or did not finish in time raises a translated error naming why.
"""

from __future__ import annotations

from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv

from .client import PrimeSparkResponseError
from .client.agents import PrimeSparkAgents
from .compat import vol
from .const import ATTR_CONFIG_ENTRY_ID, DOMAIN
from .helpers import translated_client_errors
from .services import _loaded_entry

SERVICE_RUN_AGENT_TASK = "run_agent_task"
ATTR_CAPABILITY = "capability"
ATTR_PAYLOAD = "payload"
ATTR_PRIORITY = "priority"
ATTR_TIMEOUT = "timeout"
MAX_TIMEOUT = 300

RUN_AGENT_TASK_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        vol.Required(ATTR_CAPABILITY): vol.All(cv.string, vol.Match(r"^[a-z][a-z0-9_.-]{0,63}$")),
        vol.Optional(ATTR_PAYLOAD, default={}): dict,
        vol.Optional(ATTR_PRIORITY, default="normal"): vol.In(("high", "normal", "low")),
        vol.Optional(ATTR_TIMEOUT, default=60): vol.All(
            vol.Coerce(float), vol.Range(min=1, max=MAX_TIMEOUT)
        ),
    }
)


@callback
def async_setup_agent_services(hass: HomeAssistant) -> None:
    """Register the agents action (once, for every node: ``config_entry_id`` picks one)."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_RUN_AGENT_TASK,
        _async_run_agent_task,
        schema=RUN_AGENT_TASK_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )


async def _async_run_agent_task(call: ServiceCall) -> ServiceResponse:
    entry = _loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID))
    capability: str = call.data[ATTR_CAPABILITY]
    agents = PrimeSparkAgents(entry.runtime_data.client)
    with translated_client_errors(call.hass, entry):
        try:
            task = await agents.run_task(
                capability,
                call.data[ATTR_PAYLOAD],
                priority=call.data[ATTR_PRIORITY],
                wait=call.data[ATTR_TIMEOUT],
            )
        except PrimeSparkResponseError as err:
            if err.status == 404 and err.code == "no_agent":
                raise ServiceValidationError(
                    translation_domain=DOMAIN,
                    translation_key="no_agent",
                    translation_placeholders={"capability": capability},
                ) from err
            if err.status == 400:
                raise ServiceValidationError(
                    translation_domain=DOMAIN,
                    translation_key="invalid_agent_task",
                    translation_placeholders={"error": err.message},
                ) from err
            raise
    if not task.final:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="agent_task_timeout",
            translation_placeholders={
                "capability": capability,
                "timeout": f"{call.data[ATTR_TIMEOUT]:g}",
                "task_id": task.id,
            },
        )
    if task.state != "succeeded":
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="agent_task_failed",
            translation_placeholders={
                "capability": capability,
                "state": task.state,
                "error": task.error or "-",
            },
        )
    return {
        "task_id": task.id,
        "agent": task.agent,
        "attempts": task.attempts,
        "result": task.result,
    }
