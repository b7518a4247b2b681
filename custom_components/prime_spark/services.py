"""Actions of Prime Spark: ``generate``, ``set_routing_mode`` and ``set_power_mode``."""

from __future__ import annotations

from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv

from .client import ChatOptions
from .client.models import POWER_MODES, ROUTING_MODES
from .compat import vol
from .const import (
    ATTR_CONFIG_ENTRY_ID,
    ATTR_MAX_TOKENS,
    ATTR_MESSAGES,
    ATTR_MODE,
    ATTR_MODEL,
    ATTR_PRIVATE,
    ATTR_PROMPT,
    ATTR_SYSTEM_PROMPT,
    ATTR_TEMPERATURE,
    DOMAIN,
    MAX_MAX_TOKENS,
    SERVICE_GENERATE,
    SERVICE_SET_POWER_MODE,
    SERVICE_SET_ROUTING_MODE,
)
from .coordinator import PrimeSparkConfigEntry
from .helpers import translated_client_errors
from .memory_services import async_setup_memory_services

MESSAGE_ROLES = ("system", "user", "assistant")

MESSAGE_SCHEMA = vol.Schema(
    {
        vol.Required("role"): vol.In(MESSAGE_ROLES),
        vol.Required("content"): cv.string,
    }
)

GENERATE_SCHEMA = vol.All(
    vol.Schema(
        {
            vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
            vol.Exclusive(ATTR_PROMPT, "input"): vol.All(cv.string, vol.Length(min=1)),
            vol.Exclusive(ATTR_MESSAGES, "input"): vol.All(
                cv.ensure_list, vol.Length(min=1), [MESSAGE_SCHEMA]
            ),
            vol.Optional(ATTR_SYSTEM_PROMPT): cv.string,
            vol.Optional(ATTR_MODEL): vol.All(cv.string, vol.Length(min=1)),
            vol.Optional(ATTR_MAX_TOKENS): vol.All(
                vol.Coerce(int), vol.Range(min=1, max=MAX_MAX_TOKENS)
            ),
            vol.Optional(ATTR_TEMPERATURE): vol.All(vol.Coerce(float), vol.Range(min=0, max=2)),
            vol.Optional(ATTR_PRIVATE): cv.boolean,
        }
    ),
    cv.has_at_least_one_key(ATTR_PROMPT, ATTR_MESSAGES),
)

ROUTING_MODE_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        vol.Required(ATTR_MODE): vol.In(ROUTING_MODES),
    }
)
POWER_MODE_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        vol.Required(ATTR_MODE): vol.In(POWER_MODES),
    }
)


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the actions (once, for every node: ``config_entry_id`` picks one)."""
    async_setup_memory_services(hass, _loaded_entry)
    hass.services.async_register(
        DOMAIN,
        SERVICE_GENERATE,
        _async_generate,
        schema=GENERATE_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )
    hass.services.async_register(
        DOMAIN, SERVICE_SET_ROUTING_MODE, _async_set_routing_mode, schema=ROUTING_MODE_SCHEMA
    )
    hass.services.async_register(
        DOMAIN, SERVICE_SET_POWER_MODE, _async_set_power_mode, schema=POWER_MODE_SCHEMA
    )


def _loaded_entry(hass: HomeAssistant, entry_id: str | None) -> PrimeSparkConfigEntry:
    """The node an action is for: the one named, or the only one there is."""
    if entry_id is not None:
        entry: PrimeSparkConfigEntry | None = hass.config_entries.async_get_entry(entry_id)
        if entry is None or entry.domain != DOMAIN:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="config_entry_not_found",
                translation_placeholders={"config_entry_id": entry_id},
            )
        if entry.state is not ConfigEntryState.LOADED:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="config_entry_not_loaded",
                translation_placeholders={"name": entry.title},
            )
        return entry
    loaded: list[PrimeSparkConfigEntry] = hass.config_entries.async_loaded_entries(DOMAIN)
    if not loaded:
        raise ServiceValidationError(translation_domain=DOMAIN, translation_key="no_config_entry")
    if len(loaded) > 1:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="config_entry_required",
            translation_placeholders={"names": ", ".join(sorted(e.title for e in loaded))},
        )
    return loaded[0]


loaded_entry = _loaded_entry
"""The entry lookup, for the actions defined in other modules (``detect``)."""


async def _async_generate(call: ServiceCall) -> ServiceResponse:
    """Generate text with the node's model: one completion, not streamed."""
    entry = _loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID))
    messages: list[dict[str, Any]] = []
    if system_prompt := call.data.get(ATTR_SYSTEM_PROMPT):
        messages.append({"role": "system", "content": system_prompt})
    if ATTR_PROMPT in call.data:
        messages.append({"role": "user", "content": call.data[ATTR_PROMPT]})
    else:
        messages.extend(dict(message) for message in call.data[ATTR_MESSAGES])
    options: ChatOptions = {}
    if ATTR_MODEL in call.data:
        options["model"] = call.data[ATTR_MODEL]
    if ATTR_MAX_TOKENS in call.data:
        options["max_tokens"] = call.data[ATTR_MAX_TOKENS]
    if ATTR_TEMPERATURE in call.data:
        options["temperature"] = call.data[ATTR_TEMPERATURE]
    if ATTR_PRIVATE in call.data:
        options["private"] = call.data[ATTR_PRIVATE]

    runtime = entry.runtime_data
    with translated_client_errors(call.hass, entry):
        completion = await runtime.client.chat_completion(messages, **options)
    usage = completion.usage
    return {
        "text": completion.message.content or "",
        "usage": None
        if usage is None
        else {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "model": completion.model,
        "node": runtime.status_coordinator.data.node_id,
        "finish_reason": completion.finish_reason,
    }


async def _async_set_routing_mode(call: ServiceCall) -> None:
    """Change where the node runs requests: edge first, cloud first or balanced."""
    entry = _loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID))
    with translated_client_errors(call.hass, entry):
        await entry.runtime_data.status_coordinator.async_set_routing_mode(call.data[ATTR_MODE])


async def _async_set_power_mode(call: ServiceCall) -> None:
    """Change the node's power mode (threads, slots, answer length, routing bias)."""
    entry = _loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID))
    with translated_client_errors(call.hass, entry):
        await entry.runtime_data.status_coordinator.async_set_power_mode(call.data[ATTR_MODE])
