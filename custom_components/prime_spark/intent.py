"""Intents of Prime Spark: "what is the AI status", "set AI routing to cloud first", "set AI
power mode to power save" through Assist's default agent, with a spoken answer.

The intent handler is registered through Home Assistant's intent platform
(``async_setup_intents``). A custom integration cannot add sentences to the default agent's
intent files, so the sentences are a conversation *trigger* (the public mechanism behind
sentence-triggered automations, the same on every supported Home Assistant version) whose
action runs the intent and speaks its answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import intent
from homeassistant.helpers.script import ScriptRunResult
from homeassistant.helpers.trigger import (
    async_initialize_triggers,
    async_validate_trigger_config,
)

from .client import PrimeSparkError
from .client.models import POWER_MODES, ROUTING_MODES
from .compat import vol
from .const import (
    DOMAIN,
    INTENT_SET_POWER_MODE,
    INTENT_SET_ROUTING_MODE,
    INTENT_STATUS,
    LOGGER,
    MODE_WORDS,
    POWER_SENTENCES,
    ROUTING_SENTENCES,
    STATUS_SENTENCES,
)
from .coordinator import PrimeSparkConfigEntry, PrimeSparkStatusCoordinator

STATE_PHRASES = {"loading": "is loading", "error": "has an error"}


async def async_setup_intents(hass: HomeAssistant) -> None:
    """Register the intents (called by Home Assistant's intent integration)."""
    intent.async_register(hass, StatusIntentHandler())
    intent.async_register(
        hass,
        SetModeIntentHandler(
            INTENT_SET_ROUTING_MODE,
            ROUTING_MODES,
            what="AI routing",
            setter=lambda coordinator, mode: coordinator.async_set_routing_mode(mode),
        ),
    )
    intent.async_register(
        hass,
        SetModeIntentHandler(
            INTENT_SET_POWER_MODE,
            POWER_MODES,
            what="AI power mode",
            setter=lambda coordinator, mode: coordinator.async_set_power_mode(mode),
        ),
    )


async def async_setup_mode_sentences(hass: HomeAssistant) -> None:
    """ "set AI routing to cloud first" and friends, one conversation trigger per mode."""
    for intent_type, modes, patterns in (
        (INTENT_SET_ROUTING_MODE, ROUTING_MODES, ROUTING_SENTENCES),
        (INTENT_SET_POWER_MODE, POWER_MODES, POWER_SENTENCES),
    ):
        for mode in modes:
            sentences = [p.format(mode=MODE_WORDS[mode]) for p in patterns]
            config = await async_validate_trigger_config(
                hass, [{"platform": "conversation", "command": sentences}]
            )
            await async_initialize_triggers(
                hass,
                config,
                _intent_runner(hass, intent_type, {"mode": {"value": mode}}),
                DOMAIN,
                f"{intent_type} {mode}",
                LOGGER.log,
            )


def _intent_runner(
    hass: HomeAssistant, intent_type: str, slots: dict[str, Any]
) -> Callable[..., Awaitable[ScriptRunResult]]:
    """A trigger action that runs ``intent_type`` and speaks its answer."""

    async def answer(
        run_variables: dict[str, Any], context: Context | None = None
    ) -> ScriptRunResult:
        trigger = run_variables["trigger"]
        user_input = trigger.get("user_input") or {}
        response = await intent.async_handle(
            hass,
            DOMAIN,
            intent_type,
            slots=slots,
            text_input=trigger.get("sentence"),
            context=context or Context(),
            language=user_input.get("language") or hass.config.language,
        )
        speech = response.speech.get("plain", {}).get("speech", "")
        return ScriptRunResult(conversation_response=speech, service_response=None, variables={})

    return answer


async def async_setup_status_sentences(hass: HomeAssistant) -> None:
    """Let the default agent answer the status sentences with :class:`StatusIntentHandler`."""

    async def answer(
        run_variables: dict[str, Any], context: Context | None = None
    ) -> ScriptRunResult:
        trigger = run_variables["trigger"]
        user_input = trigger.get("user_input") or {}
        response = await intent.async_handle(
            hass,
            DOMAIN,
            INTENT_STATUS,
            text_input=trigger.get("sentence"),
            context=context or Context(),
            language=user_input.get("language") or hass.config.language,
        )
        speech = response.speech.get("plain", {}).get("speech", "")
        return ScriptRunResult(conversation_response=speech, service_response=None, variables={})

    config = await async_validate_trigger_config(
        hass, [{"platform": "conversation", "command": list(STATUS_SENTENCES)}]
    )
    await async_initialize_triggers(hass, config, answer, DOMAIN, "AI status", LOGGER.log)


class StatusIntentHandler(intent.IntentHandler):
    """Speaks the state of every Prime Spark node: ready, model, queue and slots."""

    intent_type = INTENT_STATUS
    description = "Reports whether the Prime Spark AI nodes are ready, their model and queue"

    def __init__(self) -> None:
        """Initialize the handler."""
        # Only Prime Spark's own sentences run it; it is not offered to LLMs as an Assist
        # tool (no entity has this domain), which keeps a small model's tool list short.
        self.platforms = {DOMAIN}

    async def async_handle(self, intent_obj: intent.Intent) -> intent.IntentResponse:
        """Answer with one sentence or two per node."""
        entries: list[PrimeSparkConfigEntry] = intent_obj.hass.config_entries.async_entries(DOMAIN)
        response = intent_obj.create_response()
        response.response_type = intent.IntentResponseType.QUERY_ANSWER
        response.async_set_speech(
            " ".join(status_speech(entry) for entry in entries) or "No Prime Spark node is set up."
        )
        return response


def status_speech(entry: PrimeSparkConfigEntry) -> str:
    """What Assist says about one node."""
    if entry.state is not ConfigEntryState.LOADED:
        return f"{entry.title} is not connected."
    coordinator = entry.runtime_data.status_coordinator
    if not coordinator.last_update_success:
        return f"{entry.title} is not reachable."
    status = coordinator.data
    if status.ready:
        models = ", ".join(status.loaded_models) or "no model"
        state = f"{entry.title} is ready with {models} loaded."
    else:
        state = f"{entry.title} {STATE_PHRASES.get(status.state, f'is {status.state}')}"
        state += f": {status.reason}." if status.reason else "."
    waiting = "1 request is" if status.queue_depth == 1 else f"{status.queue_depth} requests are"
    return f"{state} {waiting} waiting, {status.slots_busy} of {status.slots_total} slots are busy."


class SetModeIntentHandler(intent.IntentHandler):
    """Sets the routing or power mode of every loaded Prime Spark node, and says so."""

    def __init__(
        self,
        intent_type: str,
        modes: tuple[str, ...],
        *,
        what: str,
        setter: Callable[[PrimeSparkStatusCoordinator, str], Awaitable[None]],
    ) -> None:
        """Initialize the handler."""
        self.intent_type = intent_type
        self.description = f"Sets the {what} of the Prime Spark nodes"
        self.platforms = {DOMAIN}
        self._what = what
        self._setter = setter
        self._modes = modes

    @property
    def slot_schema(self) -> dict[Any, Any]:
        """The mode to set (one of the mode keys)."""
        return {vol.Required("mode"): vol.In(self._modes)}

    async def async_handle(self, intent_obj: intent.Intent) -> intent.IntentResponse:
        """Set the mode on each node; one sentence for the outcome."""
        mode: str = self.async_validate_slots(intent_obj.slots)["mode"]["value"]
        entries: list[PrimeSparkConfigEntry] = intent_obj.hass.config_entries.async_loaded_entries(
            DOMAIN
        )
        response = intent_obj.create_response()
        response.response_type = intent.IntentResponseType.ACTION_DONE
        if not entries:
            response.async_set_speech("No Prime Spark node is set up.")
            return response
        failed: list[str] = []
        for entry in entries:
            try:
                await self._setter(entry.runtime_data.status_coordinator, mode)
            except PrimeSparkError as err:
                LOGGER.warning("Setting the %s of %s failed: %s", self._what, entry.title, err)
                failed.append(entry.title)
        words = MODE_WORDS[mode]
        if failed:
            response.async_set_speech(
                f"Could not set the {self._what} of {', '.join(failed)} to {words}."
            )
        else:
            response.async_set_speech(f"{self._what} is now {words}.")
        return response
