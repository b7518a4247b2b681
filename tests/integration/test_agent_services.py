"""The prime_spark.run_agent_task action against the real server (its in-process agents)."""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.agent_services import SERVICE_RUN_AGENT_TASK
from custom_components.prime_spark.compat import vol
from custom_components.prime_spark.const import DOMAIN

from .const import NODE_ID


async def _run(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    response = await hass.services.async_call(
        DOMAIN, SERVICE_RUN_AGENT_TASK, data, blocking=True, return_response=True
    )
    assert isinstance(response, dict)
    return response


async def test_memory_store_and_recall(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    stored = await _run(
        hass,
        capability="memory",
        payload={"op": "store", "key": "ha-test", "value": {"room": "kitchen"}},
    )
    assert stored["result"]["stored"] is True
    assert stored["result"]["namespace"] == "agent:memory"
    assert stored["agent"] == f"{NODE_ID}.memory"
    assert stored["attempts"] == 1
    recalled = await _run(
        hass,
        config_entry_id=init_integration.entry_id,
        capability="memory",
        payload={"op": "recall", "key": "ha-test"},
        priority="high",
        timeout=30,
    )
    assert recalled["result"]["value"] == {"room": "kitchen"}


async def test_llm_summarise(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    response = await _run(
        hass,
        capability="llm",
        payload={
            "summarise": "The door opened at 8. The lights went off at 9.",
            "max_tokens": 12,
            "temperature": 0,
        },
    )
    assert response["agent"] == f"{NODE_ID}.llm"
    assert response["result"]["text"]


async def test_no_agent_for_capability(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    with pytest.raises(ServiceValidationError) as err:
        await _run(hass, capability="sonar", payload={})
    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == "no_agent"
    assert err.value.translation_placeholders == {"capability": "sonar"}


async def test_payload_refused_by_the_node(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    with pytest.raises(ServiceValidationError) as err:
        await _run(hass, capability="memory", payload={"op": "shred"})
    assert err.value.translation_key == "invalid_agent_task"
    assert "op" in str(err.value)


async def test_failed_task_is_a_translated_error(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """An unknown model cannot be retried away: the task is dead-lettered, the action says so."""
    with pytest.raises(HomeAssistantError) as err:
        await _run(hass, capability="llm", payload={"prompt": "hi", "model": "no-such-model"})
    assert err.value.translation_key == "agent_task_failed"
    assert err.value.translation_placeholders["state"] == "dead"
    assert "no-such-model" in err.value.translation_placeholders["error"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({}, id="no capability"),
        pytest.param({"capability": "LLM!"}, id="bad capability"),
        pytest.param({"capability": "llm", "payload": "hi"}, id="payload not an object"),
        pytest.param({"capability": "llm", "priority": "urgent"}, id="bad priority"),
        pytest.param({"capability": "llm", "timeout": 0}, id="timeout too small"),
        pytest.param({"capability": "llm", "timeout": 301}, id="timeout too large"),
    ],
)
async def test_invalid_input(
    hass: HomeAssistant, init_integration: MockConfigEntry, data: dict[str, Any]
) -> None:
    with pytest.raises(vol.Invalid):
        await _run(hass, **data)
