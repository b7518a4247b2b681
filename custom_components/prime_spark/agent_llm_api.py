"""An LLM API for Assist: the conversation model can hand work to the cluster's agents.

Registered once as "Prime Spark agents"; a conversation agent (ours or another integration's)
that selects it gets two tools: ``agent_summarise`` (the ``llm`` agent, e.g. "summarise today's
events" with the events as text) and ``agent_memory`` (store / recall / forget a note). Tasks go
to the one loaded Prime Spark node (the first, when there are several), which picks the agent.
"""

from __future__ import annotations

from typing import Any, override

from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import llm
from homeassistant.util.json import JsonObjectType

from .client.agents import PrimeSparkAgents
from .compat import vol
from .const import DOMAIN
from .coordinator import PrimeSparkConfigEntry
from .helpers import translated_client_errors

API_ID = "prime_spark_agents"
TOOL_TIMEOUT = 60.0
API_PROMPT = (
    "Prime Spark agents can do work for you: use agent_summarise to summarise long text, "
    "and agent_memory to store, recall or forget a short note by key."
)


def _entry(hass: HomeAssistant) -> PrimeSparkConfigEntry:
    loaded: list[PrimeSparkConfigEntry] = hass.config_entries.async_loaded_entries(DOMAIN)
    if not loaded:
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="no_config_entry")
    return loaded[0]


async def _run(hass: HomeAssistant, capability: str, payload: dict[str, Any]) -> Any:
    entry = _entry(hass)
    with translated_client_errors(hass, entry):
        task = await PrimeSparkAgents(entry.runtime_data.client).run_task(
            capability, payload, priority="high", wait=TOOL_TIMEOUT
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
    return task.result


class SummariseTool(llm.Tool):
    """Summarise text with the cluster's ``llm`` agent."""

    name = "agent_summarise"
    description = "Summarise a long text (for example a list of today's events) in a few sentences."
    parameters = vol.Schema({vol.Required("text", description="The text to summarise"): str})

    @override
    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> JsonObjectType:
        result = await _run(hass, "llm", {"summarise": tool_input.tool_args["text"]})
        return {"summary": result["text"]}


class MemoryTool(llm.Tool):
    """Store, recall or forget a note with the cluster's ``memory`` agent."""

    name = "agent_memory"
    description = "Store, recall or forget a short note under a key (op: store, recall, forget)."
    parameters = vol.Schema(
        {
            vol.Required("op"): vol.In(["store", "recall", "forget"]),
            vol.Required("key", description="A short name for the note"): str,
            vol.Optional("value", description="The note, for store"): str,
        }
    )

    @override
    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> JsonObjectType:
        args = tool_input.tool_args
        payload: dict[str, Any] = {"op": args["op"], "key": args["key"]}
        if args["op"] == "store":
            payload["value"] = args.get("value", "")
        result: JsonObjectType = await _run(hass, "memory", payload)
        return result


class PrimeSparkAgentsAPI(llm.API):
    """The agents of the Prime Spark cluster, as tools for a conversation model."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Initialize the API."""
        super().__init__(hass=hass, id=API_ID, name="Prime Spark agents")

    @override
    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        return llm.APIInstance(
            api=self,
            api_prompt=API_PROMPT,
            llm_context=llm_context,
            tools=[SummariseTool(), MemoryTool()],
        )


@callback
def async_setup_agent_llm_api(hass: HomeAssistant) -> None:
    """Offer the agents to every conversation agent that uses LLM APIs."""
    llm.async_register_api(hass, PrimeSparkAgentsAPI(hass))
