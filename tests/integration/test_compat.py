"""The compatibility helpers, on whichever Home Assistant version this lane runs.

Each helper has one branch per version; the lane of each version runs its branch here (and
through the conversation tests).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from homeassistant.components import conversation
from homeassistant.const import MAJOR_VERSION, MINOR_VERSION
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import llm
from homeassistant.setup import async_setup_component

from custom_components.prime_spark.compat import (
    LLM_API_MULTIPLE,
    async_provide_llm_data,
    result_from_chat_log,
    tool_parameters_schema,
    tool_result_data,
    vol,
)
from custom_components.prime_spark.const import DOMAIN

HA_VERSION = (MAJOR_VERSION, MINOR_VERSION)


def _user_input(text: str = "hello") -> conversation.ConversationInput:
    """A conversation input with the fields this version has (satellite_id came in 2025.5)."""
    fields = {field.name for field in dataclasses.fields(conversation.ConversationInput)}
    values: dict[str, Any] = {
        "text": text,
        "context": Context(),
        "conversation_id": None,
        "device_id": None,
        "satellite_id": None,
        "language": "en",
        "agent_id": "conversation.prime_spark_edge",
        "extra_system_prompt": "Extra rules.",
    }
    return conversation.ConversationInput(**{k: v for k, v in values.items() if k in fields})


def test_multiple_llm_apis() -> None:
    assert LLM_API_MULTIPLE is (HA_VERSION >= (2025, 7))


def test_tool_parameters_schema() -> None:
    schema = vol.Schema(
        {
            vol.Required("name"): str,
            vol.Optional("level"): vol.All(vol.Coerce(int), vol.Range(min=0, max=100)),
            vol.Optional("domain"): [str],
        }
    )
    converted = tool_parameters_schema(schema, None)
    assert converted["type"] == "object"
    assert converted["required"] == ["name"]
    assert converted["properties"]["name"]["type"] == "string"
    assert converted["properties"]["level"]["type"] == "integer"
    assert converted["properties"]["domain"]["type"] == "array"


async def test_provide_llm_data(hass: HomeAssistant) -> None:
    assert await async_setup_component(hass, "conversation", {})
    chat_log = conversation.ChatLog(hass, "test")
    await async_provide_llm_data(
        chat_log, _user_input(), DOMAIN, [llm.LLM_API_ASSIST], "Speak like {{ ha_name }}."
    )
    assert chat_log.llm_api is not None
    prompt = chat_log.content[0].content
    assert f"Speak like {hass.config.location_name}." in prompt
    assert "Extra rules." in prompt

    chat_log = conversation.ChatLog(hass, "test")
    await async_provide_llm_data(chat_log, _user_input(), DOMAIN, [], None)
    assert chat_log.llm_api is None

    with pytest.raises(conversation.ConverseError):
        await async_provide_llm_data(chat_log, _user_input(), DOMAIN, ["no_such_api"], None)


def test_tool_result_data() -> None:
    fields = {field.name for field in dataclasses.fields(conversation.ToolResultContent)}
    data = {"success": True}
    content = conversation.ToolResultContent(
        agent_id="conversation.prime_spark_edge",
        tool_call_id="c1",
        tool_name="HassTurnOn",
        **({"result": llm.ToolResult(data=data)} if "result" in fields else {"tool_result": data}),
    )
    assert tool_result_data(content) == data


async def test_result_from_chat_log(hass: HomeAssistant) -> None:
    chat_log = conversation.ChatLog(hass, "test")
    chat_log.async_add_user_content(conversation.UserContent(content="hello"))
    chat_log.async_add_assistant_content_without_tools(
        conversation.AssistantContent(agent_id="conversation.prime_spark_edge", content="Hi?")
    )
    if hasattr(chat_log, "llm_input_provided_index"):
        chat_log.llm_input_provided_index = 1
    result = result_from_chat_log(_user_input(), chat_log)
    assert result.response.speech["plain"]["speech"] == "Hi?"
    assert result.conversation_id == "test"
    assert result.continue_conversation
