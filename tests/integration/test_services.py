"""The prime_spark.generate action, against the real server and model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.compat import vol
from custom_components.prime_spark.const import (
    DOMAIN,
    SERVICE_GENERATE,
    SERVICE_SET_POWER_MODE,
    SERVICE_SET_ROUTING_MODE,
)
from custom_components.prime_spark.detect import SERVICE_DETECT
from tests.server.server_process import TOKENS, ServerProcess

from .const import NODE_ID, OTHER_NODE_ID
from .helpers import crash, entry_for, wait_for

PACKAGE = Path(__file__).parents[2] / "custom_components" / "prime_spark"


async def _generate(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    response = await hass.services.async_call(
        DOMAIN, SERVICE_GENERATE, data, blocking=True, return_response=True
    )
    assert isinstance(response, dict)
    return response


async def _setup(hass: HomeAssistant, entry: MockConfigEntry) -> MockConfigEntry:
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


def _assert_usage(response: dict[str, Any], *, max_completion: int) -> None:
    usage = response["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= max_completion
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_generate_prompt(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    response = await _generate(
        hass,
        prompt="Name a colour.",
        system_prompt="Answer with one word.",
        max_tokens=4,
        temperature=0,
    )
    status = init_integration.runtime_data.status_coordinator.data
    assert set(response) == {"text", "usage", "model", "node", "finish_reason"}
    assert isinstance(response["text"], str)
    assert response["text"].strip()
    assert response["model"] == status.default_model
    assert response["node"] == NODE_ID
    assert response["finish_reason"] in ("stop", "length")
    _assert_usage(response, max_completion=4)


async def test_generate_messages(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    status = init_integration.runtime_data.status_coordinator.data
    response = await _generate(
        hass,
        config_entry_id=init_integration.entry_id,
        messages=[
            {"role": "system", "content": "You count."},
            {"role": "user", "content": "One, two,"},
            {"role": "assistant", "content": "three,"},
            {"role": "user", "content": "go on"},
        ],
        model=status.default_model,
        max_tokens=3,
    )
    assert response["node"] == NODE_ID
    _assert_usage(response, max_completion=3)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({}, id="neither prompt nor messages"),
        pytest.param({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, id="both"),
        pytest.param({"prompt": ""}, id="empty prompt"),
        pytest.param({"messages": []}, id="no messages"),
        pytest.param({"messages": [{"role": "tool", "content": "x"}]}, id="unknown role"),
        pytest.param({"messages": [{"role": "user"}]}, id="no content"),
        pytest.param({"prompt": "hi", "max_tokens": 0}, id="max_tokens too small"),
        pytest.param({"prompt": "hi", "max_tokens": 100000}, id="max_tokens too large"),
        pytest.param({"prompt": "hi", "temperature": 2.5}, id="temperature too high"),
        pytest.param({"prompt": "hi", "temperature": "warm"}, id="temperature not a number"),
        pytest.param({"prompt": "hi", "model": ""}, id="empty model"),
        pytest.param({"prompt": "hi", "private": "perhaps"}, id="private not a boolean"),
        pytest.param({"prompt": "hi", "stream": True}, id="unknown field"),
    ],
)
async def test_generate_invalid_input(
    hass: HomeAssistant, init_integration: MockConfigEntry, data: dict[str, Any]
) -> None:
    """Rejected by the schema before anything reaches the node."""
    with pytest.raises(vol.Invalid):
        await _generate(hass, **data)


async def test_generate_unknown_model(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    with pytest.raises(HomeAssistantError) as err:
        await _generate(hass, prompt="hi", model="no-such-model", max_tokens=1)
    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == "server_error"
    assert "no-such-model" in str(err.value)


async def test_generate_prompt_too_long(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """The node's 413 (context_length_exceeded) becomes its own translated error."""
    with pytest.raises(HomeAssistantError) as err:
        await _generate(hass, prompt="lamp " * 1500, max_tokens=1)
    assert err.value.translation_key == "context_length_exceeded"
    assert err.value.translation_placeholders is not None
    assert "1024" in err.value.translation_placeholders["error"]
    assert str(err.value).startswith("The conversation does not fit")


async def test_generate_needs_operator(hass: HomeAssistant, server: ServerProcess) -> None:
    """A reader token may not generate (403): a translated error, and reauth starts."""
    entry = await _setup(hass, entry_for(server, token=TOKENS["reader"]))
    with pytest.raises(HomeAssistantError) as err:
        await _generate(hass, prompt="hi", max_tokens=1)
    assert err.value.translation_key == "authentication_error"
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == [SOURCE_REAUTH]
    await hass.config_entries.async_unload(entry.entry_id)


async def test_generate_node_down(hass: HomeAssistant, own_server: ServerProcess) -> None:
    await hass.async_add_executor_job(own_server.start)
    entry = await _setup(hass, entry_for(own_server))
    await wait_for(lambda: entry.runtime_data.status_coordinator.stream_connected)
    await hass.async_add_executor_job(crash, own_server)

    with pytest.raises(HomeAssistantError) as err:
        await _generate(hass, prompt="hi", max_tokens=1)
    assert err.value.translation_key == "communication_error"
    await hass.config_entries.async_unload(entry.entry_id)


async def test_generate_without_a_node(hass: HomeAssistant) -> None:
    """The action exists as soon as the integration is (action-setup), entry or not."""
    assert await async_setup_component(hass, DOMAIN, {})
    assert hass.services.has_service(DOMAIN, SERVICE_GENERATE)
    with pytest.raises(ServiceValidationError) as err:
        await _generate(hass, prompt="hi")
    assert err.value.translation_key == "no_config_entry"

    with pytest.raises(ServiceValidationError) as err:
        await _generate(hass, prompt="hi", config_entry_id="nope")
    assert err.value.translation_key == "config_entry_not_found"
    assert err.value.translation_placeholders == {"config_entry_id": "nope"}

    other = MockConfigEntry(domain="other_domain")
    other.add_to_hass(hass)
    with pytest.raises(ServiceValidationError) as err:
        await _generate(hass, prompt="hi", config_entry_id=other.entry_id)
    assert err.value.translation_key == "config_entry_not_found"


async def test_generate_entry_not_loaded(hass: HomeAssistant, server: ServerProcess) -> None:
    entry = entry_for(server)
    entry.add_to_hass(hass)
    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()
    await hass.config_entries.async_unload(entry.entry_id)
    assert entry.state is ConfigEntryState.NOT_LOADED
    with pytest.raises(ServiceValidationError) as err:
        await _generate(hass, prompt="hi", config_entry_id=entry.entry_id)
    assert err.value.translation_key == "config_entry_not_loaded"


async def test_generate_picks_the_node(
    hass: HomeAssistant, server: ServerProcess, other_node: ServerProcess
) -> None:
    """With two nodes the action needs config_entry_id, and answers from the one named."""
    await _setup(hass, entry_for(server))
    other = MockConfigEntry(
        domain=DOMAIN,
        title=f"Prime Spark {OTHER_NODE_ID}",
        unique_id=OTHER_NODE_ID,
        data={**entry_for(other_node).data},
    )
    await _setup(hass, other)

    with pytest.raises(ServiceValidationError) as err:
        await _generate(hass, prompt="hi", max_tokens=1)
    assert err.value.translation_key == "config_entry_required"

    response = await _generate(hass, prompt="hi", max_tokens=1, config_entry_id=other.entry_id)
    assert response["node"] == OTHER_NODE_ID
    for entry in hass.config_entries.async_entries(DOMAIN):
        await hass.config_entries.async_unload(entry.entry_id)


def test_services_yaml_matches_strings_and_icons() -> None:
    services = yaml.safe_load((PACKAGE / "services.yaml").read_text(encoding="utf-8"))
    strings = json.loads((PACKAGE / "strings.json").read_text(encoding="utf-8"))["services"]
    icons = json.loads((PACKAGE / "icons.json").read_text(encoding="utf-8"))["services"]
    assert (
        set(services)
        == set(strings)
        == set(icons)
        == {
            SERVICE_GENERATE,
            SERVICE_DETECT,
            SERVICE_SET_ROUTING_MODE,
            SERVICE_SET_POWER_MODE,
            "memory_store",
            "memory_recall",
            "memory_forget",
            "run_agent_task",
        }
    )
    for service in services:
        assert set(services[service]["fields"]) == set(strings[service]["fields"]), service
