"""The Assist agent of a Prime Spark node: its LLM, streamed, with Home Assistant's LLM tools."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, Literal, override

from homeassistant.components import conversation
from homeassistant.components.conversation.models import AbstractConversationAgent
from homeassistant.const import CONF_LLM_HASS_API, MATCH_ALL
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import intent, llm
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .client import ChatCompletionDelta, ChatOptions
from .compat import async_provide_llm_data, result_from_chat_log, tool_result_data
from .const import (
    CONF_CHAT_MODEL,
    CONF_COMPACT_TOOLS,
    CONF_FORCE_TOOL_FIRST,
    CONF_MAX_HISTORY,
    CONF_MAX_TOKENS,
    CONF_PROMPT,
    CONF_TEMPERATURE,
    DEFAULT_COMPACT_TOOLS,
    DEFAULT_FORCE_TOOL_FIRST,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DOMAIN,
    LOGGER,
    MAX_TOOL_ITERATIONS,
    MIN_TOOL_CALL_TOKENS,
)
from .coordinator import PrimeSparkConfigEntry, PrimeSparkStatusCoordinator
from .entity import PrimeSparkEntity
from .helpers import translated_client_errors
from .tool_calls import format_tool, parse_arguments, repair_arguments

PARALLEL_UPDATES = 0  # the node queues requests itself

CONVERSATION = EntityDescription(key="conversation", name=None)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PrimeSparkConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up the node's conversation agent."""
    async_add_entities([PrimeSparkConversationEntity(entry.runtime_data.status_coordinator)])


def llm_api_ids(options: Mapping[str, Any]) -> list[str]:
    """The LLM APIs the agent exposes (a single id from older options, too)."""
    value = options.get(CONF_LLM_HASS_API)
    if not value or value == "none":
        return []
    return [value] if isinstance(value, str) else list(value)


class PrimeSparkConversationEntity(
    conversation.ConversationEntity, AbstractConversationAgent, PrimeSparkEntity
):
    """Talks to the node's model; unavailable while the node is."""

    _attr_name = None
    _attr_supports_streaming = True  # read by Home Assistant 2025.7 and later

    def __init__(self, coordinator: PrimeSparkStatusCoordinator) -> None:
        """Initialize the agent."""
        super().__init__(coordinator, CONVERSATION)
        self._update_supported_features()

    def _update_supported_features(self) -> None:
        self._attr_supported_features = (
            conversation.ConversationEntityFeature.CONTROL
            if llm_api_ids(self.coordinator.config_entry.options)
            else conversation.ConversationEntityFeature(0)
        )

    @property
    @override
    def supported_languages(self) -> list[str] | Literal["*"]:
        """The model decides which languages it speaks."""
        return MATCH_ALL

    @override
    async def async_added_to_hass(self) -> None:
        """Register as the entry's agent; follow option changes without a reload."""
        await super().async_added_to_hass()
        entry = self.coordinator.config_entry
        conversation.async_set_agent(self.hass, entry, self)
        self.async_on_remove(entry.add_update_listener(self._async_options_updated))

    @override
    async def async_will_remove_from_hass(self) -> None:
        """Unregister the agent."""
        conversation.async_unset_agent(self.hass, self.coordinator.config_entry)
        await super().async_will_remove_from_hass()

    async def _async_options_updated(
        self, hass: HomeAssistant, entry: PrimeSparkConfigEntry
    ) -> None:
        self._update_supported_features()
        self.async_write_ha_state()

    @override
    async def _async_handle_message(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
    ) -> conversation.ConversationResult:
        """Answer one user message (with as many tool calls as it takes)."""
        options = self.coordinator.config_entry.options
        try:
            await async_provide_llm_data(
                chat_log, user_input, DOMAIN, llm_api_ids(options), options.get(CONF_PROMPT)
            )
        except conversation.ConverseError as err:
            return err.as_conversation_result()
        try:
            await self._async_handle_chat_log(chat_log, options)
            # Raises too when the model wrote nothing at all.
            return result_from_chat_log(user_input, chat_log)
        except HomeAssistantError as err:
            # Spoken to the user (a voice satellite has no other way to tell what went wrong).
            LOGGER.warning("%s could not answer: %s", self.entity_id, err)
            response = intent.IntentResponse(language=user_input.language)
            response.async_set_error(intent.IntentResponseErrorCode.UNKNOWN, str(err))
            return conversation.ConversationResult(
                response=response, conversation_id=chat_log.conversation_id
            )

    async def _async_handle_chat_log(
        self, chat_log: conversation.ChatLog, options: Mapping[str, Any]
    ) -> None:
        """Ask the model until it answers without a tool call (or the iterations run out).

        ``tool_choice`` per request: ``auto``; with "force a tool call first", ``required``
        for the first request and ``none`` after it (one call, then the answer from its
        result); and ``none`` once the model only repeats calls it already made for this
        message (small models, shown their own call, tend to make it again and again).
        """
        tools: list[dict[str, Any]] = []
        if chat_log.llm_api:
            compact = bool(options.get(CONF_COMPACT_TOOLS, DEFAULT_COMPACT_TOOLS))
            tools = [
                format_tool(tool, chat_log.llm_api.custom_serializer, compact=compact)
                for tool in chat_log.llm_api.tools
            ]
        schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in tools}
        messages = trim_history(
            [to_message(content) for content in chat_log.content],
            int(options.get(CONF_MAX_HISTORY, DEFAULT_MAX_HISTORY)),
        )
        force_first = bool(options.get(CONF_FORCE_TOOL_FIRST, DEFAULT_FORCE_TOOL_FIRST))
        max_tokens = int(options.get(CONF_MAX_TOKENS, DEFAULT_MAX_TOKENS))
        tool_choice: Literal["auto", "required", "none"] = "required" if force_first else "auto"
        calls_made: set[str] = set()
        client = self.coordinator.client
        with translated_client_errors(self.hass, self.coordinator.config_entry):
            for _ in range(MAX_TOOL_ITERATIONS):
                request: ChatOptions = {
                    "max_tokens": max_tokens,
                    "temperature": float(options.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE)),
                }
                if model := options.get(CONF_CHAT_MODEL):
                    request["model"] = model
                if tools:
                    request["tools"] = tools
                    request["tool_choice"] = tool_choice
                    if tool_choice != "none":
                        request["max_tokens"] = max(max_tokens, MIN_TOOL_CALL_TOKENS)
                async with aclosing(client.chat_completion_stream(messages, **request)) as stream:
                    added = [
                        to_message(content)
                        async for content in chat_log.async_add_delta_content_stream(
                            self.entity_id, self._transform_stream(chat_log, stream, schemas)
                        )
                    ]
                messages.extend(added)
                if not chat_log.unresponded_tool_results:
                    if tool_choice == "required":
                        # The node's grammar admits nothing but a call: this one ran out of
                        # tokens before it was complete (the reply holds its remains).
                        raise HomeAssistantError(
                            translation_domain=DOMAIN,
                            translation_key="tool_call_cut_off",
                            translation_placeholders={"max_tokens": str(request["max_tokens"])},
                        )
                    return
                tool_choice = next_tool_choice(added, calls_made, force_first=force_first)
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="too_many_tool_calls",
            translation_placeholders={"count": str(MAX_TOOL_ITERATIONS)},
        )

    async def _transform_stream(
        self,
        chat_log: conversation.ChatLog,
        stream: AsyncIterator[ChatCompletionDelta],
        schemas: Mapping[str, Mapping[str, Any]],
    ) -> AsyncGenerator[conversation.AssistantContentDeltaDict]:
        """The node's deltas as chat log deltas: text as it comes, each tool call once whole."""
        yield {"role": "assistant"}
        calls: dict[int, dict[str, str]] = {}
        async for delta in stream:
            if delta.content:
                yield {"content": delta.content}
            for piece in delta.tool_calls:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                call["name"] += piece.name or ""
                call["arguments"] += piece.arguments or ""
            if delta.usage is not None:
                # Shown in the conversation's debug trace: how much of the context it took.
                chat_log.async_trace(
                    {
                        "stats": {
                            "prompt_tokens": delta.usage.prompt_tokens,
                            "completion_tokens": delta.usage.completion_tokens,
                        }
                    }
                )
        if calls:
            yield {
                "tool_calls": [
                    _tool_input(call, schemas.get(call["name"], {}))
                    for _, call in sorted(calls.items())
                ]
            }


def next_tool_choice(
    added: list[dict[str, Any]], calls_made: set[str], *, force_first: bool
) -> Literal["auto", "none"]:
    """``tool_choice`` after a reply with tool calls (``added``, as messages).

    ``none`` (answer now) after a forced call, or when every call of the reply was made
    before for this message (the model is going round in circles); ``auto`` otherwise.
    ``calls_made`` collects the calls.
    """
    calls = {
        json.dumps(call["function"], sort_keys=True)
        for message in added
        for call in message.get("tool_calls", ())
    }
    repeated = calls <= calls_made
    calls_made |= calls
    return "none" if force_first or repeated else "auto"


def _tool_input(call: Mapping[str, str], schema: Mapping[str, Any]) -> llm.ToolInput:
    arguments = repair_arguments(parse_arguments(call["arguments"]), schema)
    if call["id"]:
        return llm.ToolInput(id=call["id"], tool_name=call["name"], tool_args=arguments)
    return llm.ToolInput(tool_name=call["name"], tool_args=arguments)


def to_message(content: conversation.Content) -> dict[str, Any]:
    """One chat log entry as an OpenAI chat message."""
    if isinstance(content, conversation.ToolResultContent):
        return {
            "role": "tool",
            "tool_call_id": content.tool_call_id,
            "content": json.dumps(tool_result_data(content), ensure_ascii=False, default=str),
        }
    if isinstance(content, conversation.AssistantContent):
        message: dict[str, Any] = {"role": "assistant", "content": content.content or ""}
        if content.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.tool_name,
                        "arguments": json.dumps(call.tool_args, ensure_ascii=False),
                    },
                }
                for call in content.tool_calls
            ]
        return message
    return {"role": content.role, "content": content.content}


def trim_history(messages: list[dict[str, Any]], max_history: int) -> list[dict[str, Any]]:
    """The system prompt, the last ``max_history`` earlier turns and the current one.

    A turn starts with a user message and runs up to the next one (answers, tool calls and
    their results included). ``0`` keeps everything.
    """
    if max_history < 1:
        return messages
    starts = [i for i, message in enumerate(messages) if message["role"] == "user"]
    if len(starts) <= max_history + 1:
        return messages
    first_kept = starts[-(max_history + 1)]
    head = [m for m in messages[:1] if m["role"] == "system"]
    return [*head, *messages[first_kept:]]
