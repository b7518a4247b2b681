"""The Assist agent, against the real server and model: streaming, tools, errors, options."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from homeassistant.components import conversation
from homeassistant.components.conversation.trace import async_clear_traces, async_get_traces
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.const import CONF_LLM_HASS_API, STATE_OFF, STATE_ON
from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import chat_session, intent, llm
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark import conversation as agent_module
from custom_components.prime_spark.compat import LLM_API_MULTIPLE, tool_result_data, vol
from custom_components.prime_spark.const import (
    CONF_CHAT_MODEL,
    CONF_COMPACT_TOOLS,
    CONF_FORCE_TOOL_FIRST,
    CONF_MAX_HISTORY,
    CONF_MAX_TOKENS,
    CONF_PROMPT,
    CONF_SCAN_INTERVAL,
    CONF_TEMPERATURE,
)
from custom_components.prime_spark.conversation import (
    llm_api_ids,
    next_tool_choice,
    to_message,
    trim_history,
)
from tests.server.server_process import ServerProcess

from .conftest import real_sockets
from .const import NODE_ID
from .helpers import crash, entry_for, wait_for

AGENT = f"conversation.prime_spark_{NODE_ID}"
LIGHT = "input_boolean.kitchen_light"
LOGGER = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def assist_server(
    tmp_path_factory: pytest.TempPathFactory, model_section: dict[str, Any]
) -> Iterator[ServerProcess]:
    """A node with the server's default context (2048 tokens) for the Assist API's prompt.

    The session server's 1024 tokens per slot cannot hold Home Assistant's Assist prompt with
    its tools and an answer (see test_prompt_too_long).
    """
    with real_sockets():
        proc = ServerProcess(
            tmp_path_factory.mktemp("assist"),
            {
                "models": {**model_section, "context_size": 2048, "slots": 1},
                "server": {"node_id": NODE_ID},
            },
            name="assist",
        )
        proc.start()
    yield proc
    proc.stop()


async def _setup(
    hass: HomeAssistant, proc: ServerProcess, options: dict[str, Any]
) -> MockConfigEntry:
    entry = entry_for(proc)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, options=options)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def _kitchen_light(hass: HomeAssistant) -> None:
    """One entity exposed to Assist, off."""
    assert await async_setup_component(
        hass, "input_boolean", {"input_boolean": {"kitchen_light": {"name": "Kitchen light"}}}
    )
    await hass.async_block_till_done()
    async_expose_entity(hass, conversation.DOMAIN, LIGHT, True)
    assert hass.states.get(LIGHT).state == STATE_OFF


async def _converse(
    hass: HomeAssistant, text: str, deltas: list[dict[str, Any]] | None = None
) -> tuple[conversation.ConversationResult, conversation.ChatLog]:
    """Talk to the agent, keeping the chat log and (optionally) what streamed into it."""

    def listener(chat_log: conversation.ChatLog, delta: dict[str, Any]) -> None:
        if deltas is not None:
            deltas.append(delta)

    async_clear_traces()
    with (
        chat_session.async_get_chat_session(hass) as session,
        conversation.async_get_chat_log(
            hass, session, chat_log_delta_listener=listener
        ) as chat_log,
    ):
        result = await conversation.async_converse(
            hass, text, session.conversation_id, Context(), language="en", agent_id=AGENT
        )
    return result, chat_log


def _prompt_tokens() -> list[int]:
    """The prompt sizes the agent reported into the conversation trace, oldest first."""
    sizes: list[int] = []
    for trace in async_get_traces():
        for event in trace.as_dict()["events"]:
            if stats := (event.get("data") or {}).get("stats"):
                sizes.append(stats["prompt_tokens"])
    return sizes


def _speech(result: conversation.ConversationResult) -> str:
    speech = result.response.speech["plain"]["speech"]
    assert isinstance(speech, str)
    return speech


async def test_agent_streams_an_answer(hass: HomeAssistant, server: ServerProcess) -> None:
    entry = await _setup(hass, server, {CONF_MAX_TOKENS: 6, CONF_TEMPERATURE: 0})
    state = hass.states.get(AGENT)
    assert state is not None
    assert state.attributes["supported_features"] == 0
    assert conversation.async_get_agent_info(hass, AGENT) is not None
    assert conversation.async_get_conversation_languages(hass, AGENT) == "*"

    deltas: list[dict[str, Any]] = []
    result, chat_log = await _converse(hass, "Say hello.", deltas)

    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    speech = _speech(result)
    assert speech
    streamed = [delta["content"] for delta in deltas if delta.get("content")]
    # Token by token, not the whole answer at the end.
    assert len(streamed) >= 2
    assert "".join(streamed) == speech
    assert isinstance(chat_log.content[-1], conversation.AssistantContent)
    assert chat_log.content[-1].content == speech
    assert _prompt_tokens()[-1] > 0
    await hass.config_entries.async_unload(entry.entry_id)


async def test_agent_calls_an_assist_tool(
    hass: HomeAssistant, assist_server: ServerProcess
) -> None:
    """Home Assistant's Assist API: the forced first reply is a call, then an answer."""
    await _kitchen_light(hass)
    entry = await _setup(
        hass,
        assist_server,
        {
            CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
            CONF_FORCE_TOOL_FIRST: True,
            CONF_MAX_TOKENS: 16,
            CONF_TEMPERATURE: 0,
        },
    )
    assert hass.states.get(AGENT).attributes["supported_features"] == (
        conversation.ConversationEntityFeature.CONTROL
    )
    result, chat_log = await _converse(hass, "Turn on the kitchen light")

    calls = [
        content
        for content in chat_log.content
        if isinstance(content, conversation.AssistantContent) and content.tool_calls
    ]
    results = [c for c in chat_log.content if isinstance(c, conversation.ToolResultContent)]
    assert len(calls) == 1, (_speech(result), chat_log.content[1:])
    assert calls[0].tool_calls is not None
    (call,) = calls[0].tool_calls
    (tool_result,) = results
    assert tool_result.tool_call_id == call.id
    assert tool_result.tool_name == call.tool_name
    # Home Assistant ran the call and the model got its result. Which tool the 270M model
    # picks differs with the version's tool list (2026.10: GetLiveContext, the first; 2025.4:
    # HassTurnOn with an area that does not exist), so what the result says is not asserted:
    # test_agent_turns_on_the_light checks a call that acts.
    data = tool_result_data(tool_result)
    assert data
    # And the model answered from it.
    assert isinstance(chat_log.content[-1], conversation.AssistantContent)
    assert not chat_log.content[-1].tool_calls
    assert result.response.response_type is not intent.IntentResponseType.ERROR
    sizes = _prompt_tokens()
    LOGGER.info(
        "Assist API: %s(%s) -> %s; prompt tokens %s", call.tool_name, call.tool_args, data, sizes
    )
    assert len(sizes) == 2
    await hass.config_entries.async_unload(entry.entry_id)


class TurnOnAPI(llm.API):
    """One tool: Home Assistant's own HassTurnOn intent, its ``name`` narrowed to the choices.

    Home Assistant's schema leaves every argument optional, and the 270M test model, free to
    choose, sends ``{}`` (observed): the intent then has no target. With ``name`` required and
    an enum of the exposed names, the node's grammar makes the call deterministic, and what is
    tested is the whole path: tool sent, call generated, parsed, run by the chat log, the
    entity switched.
    """

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> llm.APIInstance:
        assist = await llm.async_get_api(self.hass, llm.LLM_API_ASSIST, llm_context)
        handler = next(h for h in intent.async_get(self.hass) if h.intent_type == "HassTurnOn")
        tool = llm.IntentTool("HassTurnOn", handler)
        tool.parameters = vol.Schema({vol.Required("name"): vol.In(["Kitchen light"])})
        return llm.APIInstance(
            api=self,
            api_prompt=assist.api_prompt,
            llm_context=llm_context,
            tools=[tool],
            custom_serializer=assist.custom_serializer,
        )


async def test_agent_turns_on_the_light(hass: HomeAssistant, assist_server: ServerProcess) -> None:
    """A tool that acts: the model's call turns the exposed entity on."""
    await _kitchen_light(hass)
    llm.async_register_api(hass, TurnOnAPI(hass=hass, id="turn_on", name="Turn on"))
    entry = await _setup(
        hass,
        assist_server,
        {
            CONF_LLM_HASS_API: ["turn_on"],
            CONF_FORCE_TOOL_FIRST: True,
            CONF_MAX_TOKENS: 16,
            CONF_TEMPERATURE: 0,
        },
    )
    result, chat_log = await _converse(hass, "Turn on the kitchen light")
    (call,) = [
        tool_call
        for content in chat_log.content
        if isinstance(content, conversation.AssistantContent)
        for tool_call in content.tool_calls or ()
    ]
    assert call.tool_name == "HassTurnOn"
    assert call.tool_args == {"name": "Kitchen light"}
    assert hass.states.get(LIGHT).state == STATE_ON
    assert result.response.response_type is not intent.IntentResponseType.ERROR
    await hass.config_entries.async_unload(entry.entry_id)


async def test_tool_loop_is_bounded(
    hass: HomeAssistant, assist_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that is still calling tools when the requests run out: a spoken error."""
    monkeypatch.setattr(agent_module, "MAX_TOOL_ITERATIONS", 1)
    await _kitchen_light(hass)
    entry = await _setup(
        hass,
        assist_server,
        {CONF_LLM_HASS_API: [llm.LLM_API_ASSIST], CONF_FORCE_TOOL_FIRST: True},
    )
    result, _ = await _converse(hass, "Is the kitchen light on")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert _speech(result).startswith("The model did not answer within 1 requests")
    await hass.config_entries.async_unload(entry.entry_id)


async def test_forced_tool_call_cut_off(
    hass: HomeAssistant, server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forced call that runs out of tokens is no call: the user is told what to change."""
    monkeypatch.setattr(agent_module, "MIN_TOOL_CALL_TOKENS", 4)
    await _kitchen_light(hass)
    entry = await _setup(
        hass,
        server,
        {CONF_LLM_HASS_API: [llm.LLM_API_ASSIST], CONF_FORCE_TOOL_FIRST: True, CONF_MAX_TOKENS: 4},
    )
    result, _ = await _converse(hass, "Turn on the kitchen light")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert _speech(result).startswith("The model's tool call was cut off at 4 tokens")
    await hass.config_entries.async_unload(entry.entry_id)


async def test_prompt_too_long(hass: HomeAssistant, server: ServerProcess) -> None:
    """Instructions the 1024-token context cannot hold: the node's 413, told to the user.

    (With Home Assistant 2026.10's Assist API and one exposed entity, the full tool
    descriptions alone overflow it: 1065 tokens; compact ones take 911.)
    """
    entry = await _setup(hass, server, {CONF_PROMPT: "Always be helpful. " * 300})
    result, _ = await _converse(hass, "Turn on the kitchen light")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    speech = _speech(result)
    assert speech.startswith("The conversation does not fit into the model's context")
    assert "1024" in speech
    await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({CONF_LLM_HASS_API: ["no_such_api"]}, id="unknown LLM API"),
        pytest.param({CONF_PROMPT: "{{ broken"}, id="broken template"),
    ],
)
async def test_agent_setup_errors(
    hass: HomeAssistant, server: ServerProcess, options: dict[str, Any]
) -> None:
    """Home Assistant's own errors before the model is asked come back as results."""
    entry = await _setup(hass, server, options)
    result, _ = await _converse(hass, "Hello")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    await hass.config_entries.async_unload(entry.entry_id)


async def test_agent_unknown_model(hass: HomeAssistant, server: ServerProcess) -> None:
    entry = await _setup(hass, server, {CONF_CHAT_MODEL: "no-such-model"})
    result, _ = await _converse(hass, "Hello")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert _speech(result).startswith("The Prime Spark node reported an error")
    await hass.config_entries.async_unload(entry.entry_id)


async def test_agent_node_gone(hass: HomeAssistant, own_server: ServerProcess) -> None:
    await hass.async_add_executor_job(own_server.start)
    entry = await _setup(hass, own_server, {})
    await wait_for(lambda: entry.runtime_data.status_coordinator.stream_connected)
    await hass.async_add_executor_job(crash, own_server)
    result, _ = await _converse(hass, "Hello")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert _speech(result).startswith("An error occurred while communicating")

    # The options still open, without models to choose from.
    flow = await hass.config_entries.options.async_init(entry.entry_id)
    assert flow["type"] is FlowResultType.FORM
    (assist_key,) = [key for key in flow["data_schema"].schema if str(key) == "assist"]
    fields = {str(k): v for k, v in flow["data_schema"].schema[assist_key].schema.schema.items()}
    assert fields[CONF_CHAT_MODEL].config["options"] == []
    await hass.config_entries.async_unload(entry.entry_id)


async def test_options_apply_without_reload(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Choosing an LLM API in the options flow makes the agent a controlling one at once."""
    coordinator = init_integration.runtime_data.status_coordinator
    status = coordinator.data
    result = await hass.config_entries.options.async_init(init_integration.entry_id)
    assert result["type"] is FlowResultType.FORM
    schema = result["data_schema"].schema
    (assist_key,) = [key for key in schema if str(key) == "assist"]
    fields = {str(key): value for key, value in schema[assist_key].schema.schema.items()}
    models = fields[CONF_CHAT_MODEL].config["options"]
    assert [model["value"] for model in models] == [m.id for m in status.models]
    assert "tokens of context" in models[0]["label"]

    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            CONF_SCAN_INTERVAL: 60,
            "assist": {
                CONF_LLM_HASS_API: [llm.LLM_API_ASSIST] if LLM_API_MULTIPLE else llm.LLM_API_ASSIST,
                CONF_PROMPT: "  Be brief.  ",
                CONF_CHAT_MODEL: status.default_model,
                CONF_MAX_TOKENS: 100,
                CONF_TEMPERATURE: 0.2,
                CONF_MAX_HISTORY: 2,
                CONF_COMPACT_TOOLS: False,
                CONF_FORCE_TOOL_FIRST: True,
            },
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert init_integration.options == {
        CONF_SCAN_INTERVAL: 60,
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_PROMPT: "Be brief.",
        CONF_CHAT_MODEL: status.default_model,
        CONF_MAX_TOKENS: 100,
        CONF_TEMPERATURE: 0.2,
        CONF_MAX_HISTORY: 2,
        CONF_COMPACT_TOOLS: False,
        CONF_FORCE_TOOL_FIRST: True,
    }
    await hass.async_block_till_done()
    assert coordinator is init_integration.runtime_data.status_coordinator
    assert hass.states.get(AGENT).attributes["supported_features"] == (
        conversation.ConversationEntityFeature.CONTROL
    )

    # Emptied fields fall back to the defaults (not stored).
    result = await hass.config_entries.options.async_init(init_integration.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {CONF_SCAN_INTERVAL: 60, "assist": {CONF_PROMPT: " ", CONF_CHAT_MODEL: ""}},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert CONF_LLM_HASS_API not in init_integration.options
    assert CONF_PROMPT not in init_integration.options
    assert CONF_CHAT_MODEL not in init_integration.options
    await hass.async_block_till_done()
    assert hass.states.get(AGENT).attributes["supported_features"] == 0


async def test_options_flow_without_the_node(hass: HomeAssistant, server: ServerProcess) -> None:
    """The form still opens while the node is unreachable (no models to offer then)."""
    entry = await _setup(hass, server, {})
    await hass.config_entries.async_unload(entry.entry_id)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM


def test_llm_api_ids() -> None:
    assert llm_api_ids({}) == []
    assert llm_api_ids({CONF_LLM_HASS_API: "none"}) == []
    assert llm_api_ids({CONF_LLM_HASS_API: "assist"}) == ["assist"]  # 2025.4-style option
    assert llm_api_ids({CONF_LLM_HASS_API: ["assist", "other"]}) == ["assist", "other"]


def test_trim_history() -> None:
    def turn(n: int) -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": f"q{n}"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": f"c{n}"}]},
            {"role": "tool", "tool_call_id": f"c{n}", "content": "{}"},
            {"role": "assistant", "content": f"a{n}"},
        ]

    system = {"role": "system", "content": "be nice"}
    messages = [system, *turn(1), *turn(2), *turn(3), {"role": "user", "content": "now"}]
    assert trim_history(messages, 0) == messages
    assert trim_history(messages, 3) == messages
    assert trim_history(messages, 1) == [system, *turn(3), {"role": "user", "content": "now"}]
    assert trim_history(messages[1:], 1) == [*turn(3), {"role": "user", "content": "now"}]


def test_to_message() -> None:
    call = llm.ToolInput(id="c1", tool_name="HassTurnOn", tool_args={"name": "Küche"})
    assert to_message(
        conversation.AssistantContent(agent_id=AGENT, content=None, tool_calls=[call])
    ) == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "HassTurnOn", "arguments": '{"name": "Küche"}'},
            }
        ],
    }
    assert to_message(conversation.UserContent(content="hi")) == {"role": "user", "content": "hi"}
    assert to_message(conversation.SystemContent(content="sys")) == {
        "role": "system",
        "content": "sys",
    }


def test_tool_input_without_an_id() -> None:
    """OpenAI clients may leave the id out; Home Assistant then makes one up."""
    tool_input = agent_module._tool_input(
        {"id": "", "name": "HassTurnOn", "arguments": "{'name': 'Kitchen'}"},
        {"type": "object", "properties": {"name": {"type": "string"}}},
    )
    assert tool_input.tool_name == "HassTurnOn"
    assert tool_input.tool_args == {"name": "Kitchen"}
    assert tool_input.id


def test_next_tool_choice() -> None:
    def reply(*calls: tuple[str, str]) -> list[dict[str, Any]]:
        return [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "x", "type": "function", "function": {"name": n, "arguments": a}}
                    for n, a in calls
                ],
            },
            {"role": "tool", "tool_call_id": "x", "content": "{}"},
        ]

    made: set[str] = set()
    assert next_tool_choice(reply(("GetLiveContext", "{}")), made, force_first=False) == "auto"
    # The same call again: answer from what is there.
    assert next_tool_choice(reply(("GetLiveContext", "{}")), made, force_first=False) == "none"
    # Something new besides it: go on.
    assert (
        next_tool_choice(
            reply(("GetLiveContext", "{}"), ("HassTurnOn", '{"name": "Kitchen"}')),
            made,
            force_first=False,
        )
        == "auto"
    )
    # After a forced call the answer comes next, whatever the call.
    assert next_tool_choice(reply(("HassTurnOff", "{}")), set(), force_first=True) == "none"
