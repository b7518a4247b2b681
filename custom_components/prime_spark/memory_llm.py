"""An LLM API for Assist: "remember that the garage code is 4411", "what's the garage code?".

Registered once as "Prime Spark memory"; choose it (with or instead of Assist) in a conversation
agent's options. Every call works in the speaking user's own namespace (``user:<HA user id>``;
``shared`` when no user is known, e.g. a voice satellite without one), so one household
member's memories never answer another's questions.
"""

from __future__ import annotations

import re
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import llm
from homeassistant.util.json import JsonObjectType

from .compat import vol
from .const import DOMAIN
from .coordinator import PrimeSparkConfigEntry
from .helpers import translated_client_errors

MEMORY_API_ID = f"{DOMAIN}_memory"
MEMORY_API_PROMPT = (
    "You can keep memories for the user. When the user asks you to remember something, call "
    "remember with what it is about and the fact. When the user asks about something they may "
    "have told you before, call recall with their question and answer from what it returns."
)
RECALL_MIN_SCORE = 0.3


def user_namespace(llm_context: llm.LLMContext) -> str:
    """The speaking user's namespace; ``shared`` when the request carries no user."""
    context = llm_context.context
    if context is not None and context.user_id:
        return f"user:{context.user_id}"
    return "shared"


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:120] or "note"


def _entry(hass: HomeAssistant) -> PrimeSparkConfigEntry:
    entries: list[PrimeSparkConfigEntry] = hass.config_entries.async_loaded_entries(DOMAIN)
    if not entries:
        raise HomeAssistantError(translation_domain=DOMAIN, translation_key="no_config_entry")
    return entries[0]


class RememberTool(llm.Tool):
    """Store a fact in the speaking user's memory."""

    name = "remember"
    description = "Remember a fact for the user, e.g. a code, a date or a preference."
    parameters = vol.Schema(
        {
            vol.Required("about", description="What the fact is about, e.g. 'garage code'"): str,
            vol.Required("fact", description="The fact itself, in a full sentence"): str,
        }
    )
    integration = DOMAIN

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> JsonObjectType:
        """Store the fact under a key made from what it is about."""
        entry = _entry(hass)
        args: dict[str, Any] = tool_input.tool_args
        key = _slug(str(args["about"]))
        with translated_client_errors(hass, entry):
            item = await entry.runtime_data.client.memory_store(
                user_namespace(llm_context), key, str(args["fact"]), tags=["assist"]
            )
        return {"success": True, "remembered": item["value"], "key": key}


class RecallTool(llm.Tool):
    """Find what the speaking user told the assistant before."""

    name = "recall"
    description = "Look up facts the user asked you to remember, by meaning."
    parameters = vol.Schema(
        {vol.Required("question", description="What the user wants to know"): str}
    )
    integration = DOMAIN

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> JsonObjectType:
        """The best matching memories (at most three), best first."""
        entry = _entry(hass)
        with translated_client_errors(hass, entry):
            found = await entry.runtime_data.client.memory_search(
                user_namespace(llm_context),
                str(tool_input.tool_args["question"]),
                top_k=3,
                min_score=RECALL_MIN_SCORE,
            )
        return {
            "memories": [
                {"about": item["key"].replace("_", " "), "fact": item["value"]} for item in found
            ]
        }


class PrimeSparkMemoryAPI(llm.API):
    """The remember/recall tools for conversation agents."""

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        """The tools, bound to the request's user through ``llm_context``."""
        return llm.APIInstance(
            api=self,
            api_prompt=MEMORY_API_PROMPT,
            llm_context=llm_context,
            tools=[RememberTool(), RecallTool()],
        )


def async_register_memory_api(hass: HomeAssistant) -> None:
    """Offer the API to every conversation agent (once, at integration setup)."""
    llm.async_register_api(
        hass, PrimeSparkMemoryAPI(hass=hass, id=MEMORY_API_ID, name="Prime Spark memory")
    )
