"""The "Prime Spark agents" LLM API: the tools Assist uses to hand work to agents."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import llm
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.agent_llm_api import API_ID


def _llm_context() -> llm.LLMContext:
    """An LLMContext on every supported HA version (``user_prompt`` went away in 2025.x)."""
    extra: dict[str, Any] = {}
    if "user_prompt" in inspect.signature(llm.LLMContext).parameters:
        extra["user_prompt"] = None
    return llm.LLMContext(
        platform="test",
        context=None,
        language="en",
        assistant="conversation",
        device_id=None,
        **extra,
    )


async def _call(hass: HomeAssistant, tool: str, **args: Any) -> Any:
    api = await llm.async_get_api(hass, API_ID, _llm_context())
    result = await api.async_call_tool(llm.ToolInput(tool_name=tool, tool_args=args))
    # Newer HA wraps a tool's answer in llm.ToolResult; 2025.4 returns it as is.
    return getattr(result, "data", result)


async def test_api_is_offered_with_its_tools(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    assert API_ID in {api.id for api in llm.async_get_apis(hass)}
    api = await llm.async_get_api(hass, API_ID, _llm_context())
    assert {tool.name for tool in api.tools} == {"agent_summarise", "agent_memory"}
    assert "agent_summarise" in api.api_prompt


async def test_memory_and_summarise_tools(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    stored = await _call(hass, "agent_memory", op="store", key="parcel", value="at the door")
    assert stored["key"] == "parcel"
    assert stored["stored"] is True
    recalled = await _call(hass, "agent_memory", op="recall", key="parcel")
    assert recalled["value"] == "at the door"
    summary = await _call(
        hass, "agent_summarise", text="08:00 door opened. 09:00 lights off. 12:00 parcel came."
    )
    # The tool samples (temperature 0.7): the tiny test model may say little, but it answers.
    assert isinstance(summary["summary"], str)


async def test_tools_need_a_loaded_node(hass: HomeAssistant) -> None:
    from homeassistant.setup import async_setup_component

    from custom_components.prime_spark.const import DOMAIN

    assert await async_setup_component(hass, DOMAIN, {})
    with pytest.raises(HomeAssistantError) as err:
        await _call(hass, "agent_memory", op="recall", key="x")
    assert err.value.translation_key == "no_config_entry"
