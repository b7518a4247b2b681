"""Assist's default agent answers "what is the AI status" from the node's live status."""

from __future__ import annotations

from dataclasses import replace

import pytest
from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import intent
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.const import DOMAIN, INTENT_STATUS
from tests.server.server_process import ServerProcess

from .const import TITLE
from .helpers import crash, entry_for, wait_for

DEFAULT_AGENT = "conversation.home_assistant"


async def _ask(hass: HomeAssistant, text: str = "what is the AI status") -> str:
    result = await conversation.async_converse(
        hass, text, None, Context(), language="en", agent_id=DEFAULT_AGENT
    )
    speech = result.response.speech["plain"]["speech"]
    assert isinstance(speech, str)
    return speech


@pytest.mark.parametrize(
    "text", ["what is the AI status", "What's the AI status?", "AI status", "how is the AI doing"]
)
async def test_status_sentences(
    hass: HomeAssistant, init_integration: MockConfigEntry, text: str
) -> None:
    status = init_integration.runtime_data.status_coordinator.data
    assert status.ready
    assert await _ask(hass, text) == (
        f"{TITLE} is ready with {', '.join(status.loaded_models)} loaded. "
        f"0 requests are waiting, 0 of {status.slots_total} slots are busy."
    )
    assert status.default_model in status.loaded_models


async def test_status_while_loading(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    """Whatever the node pushes next is what Assist says (here: a state set by hand)."""
    coordinator = init_integration.runtime_data.status_coordinator
    status = coordinator.data
    coordinator.async_set_updated_data(
        replace(status, ready=False, state="loading", reason="loading the model", queue_depth=1)
    )
    assert await _ask(hass) == (
        f"{TITLE} is loading: loading the model. "
        f"1 request is waiting, 0 of {status.slots_total} slots are busy."
    )
    coordinator.async_set_updated_data(
        replace(status, ready=False, state="error", reason=None, queue_depth=3, slots_busy=2)
    )
    assert await _ask(hass) == (
        f"{TITLE} has an error. 3 requests are waiting, 2 of {status.slots_total} slots are busy."
    )
    coordinator.async_set_updated_data(replace(status, models=()))
    assert await _ask(hass) == (
        f"{TITLE} is ready with no model loaded. "
        f"0 requests are waiting, 0 of {status.slots_total} slots are busy."
    )


async def test_status_without_a_node(hass: HomeAssistant) -> None:
    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()
    assert await _ask(hass) == "No Prime Spark node is set up."


async def test_status_of_an_unloaded_node(hass: HomeAssistant, server: ServerProcess) -> None:
    entry = entry_for(server)
    entry.add_to_hass(hass)
    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()
    await hass.config_entries.async_unload(entry.entry_id)
    assert await _ask(hass) == f"{TITLE} is not connected."


async def test_status_of_a_node_gone(hass: HomeAssistant, own_server: ServerProcess) -> None:
    await hass.async_add_executor_job(own_server.start)
    entry = entry_for(own_server)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    coordinator = entry.runtime_data.status_coordinator
    await wait_for(lambda: coordinator.stream_connected)
    await hass.async_add_executor_job(crash, own_server)
    await wait_for(lambda: not coordinator.last_update_success)
    assert await _ask(hass) == f"{TITLE} is not reachable."
    await hass.config_entries.async_unload(entry.entry_id)


async def test_status_intent(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    """The intent itself, as intent_script or another integration would run it."""
    response = await intent.async_handle(hass, DOMAIN, INTENT_STATUS)
    assert response.response_type is intent.IntentResponseType.QUERY_ANSWER
    assert response.speech["plain"]["speech"].startswith(f"{TITLE} is ready")
