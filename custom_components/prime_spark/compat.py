"""Small bridges between the Home Assistant versions the integration supports (2025.4 and later).

Keep every version difference here, each with the version that introduced it, so dropping an old
version is deleting a branch. Where a feature is detected rather than a version compared, the
helper says what it looks for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from homeassistant.components import conversation
from homeassistant.helpers import intent, llm

if TYPE_CHECKING:
    import probatio as vol
else:
    try:
        # Home Assistant 2026.x validates with probatio, a voluptuous-compatible engine, and
        # types flow forms with it (it also aliases ``voluptuous`` to it at runtime).
        import probatio as vol
    except ImportError:  # pragma: no cover - Home Assistant 2025.x (its own test lane)
        import voluptuous as vol  # voluptuous itself

try:
    from probatio import to_openapi as _to_openapi
except ImportError:  # pragma: no cover - Home Assistant 2025.x
    _to_openapi = None  # type: ignore[assignment]

__all__ = [
    "LLM_API_MULTIPLE",
    "async_provide_llm_data",
    "result_from_chat_log",
    "tool_parameters_schema",
    "tool_result_data",
    "vol",
]

LLM_API_MULTIPLE: Final = hasattr(llm, "MergedAPI")
"""Whether a conversation agent may expose several LLM APIs at once (``llm.MergedAPI``, 2025.7).

Before that ``llm.async_get_api`` takes one API id: the options flow then offers a single
choice, and :func:`async_provide_llm_data` passes the first id only.
"""


def tool_parameters_schema(
    schema: Any, custom_serializer: Callable[[Any], Any] | None
) -> dict[str, Any]:
    """The JSON schema (OpenAPI 3.1 flavour) of an LLM tool's voluptuous ``parameters``.

    Home Assistant on probatio converts with ``probatio.to_openapi``; before it, with the
    ``voluptuous-openapi`` package Home Assistant shipped (what openai_conversation used).
    """
    if _to_openapi is None:  # pragma: no cover - Home Assistant 2025.x
        convert = importlib.import_module("voluptuous_openapi").convert
        converted: dict[str, Any] = convert(schema, custom_serializer=custom_serializer)
        return converted
    return _to_openapi(schema, custom_serializer=custom_serializer, openapi_version="3.1.0")


async def async_provide_llm_data(
    chat_log: conversation.ChatLog,
    user_input: conversation.ConversationInput,
    domain: str,
    llm_apis: list[str],
    prompt: str | None,
) -> None:
    """Render the system prompt into the chat log and attach the LLM API(s) and their tools.

    ``ChatLog.async_provide_llm_data`` (with an ``LLMContext``) replaced
    ``async_update_llm_data`` (with the conversation input) in 2025.8. Raises
    ``conversation.ConverseError`` like both of them (an unknown API, a broken template).
    """
    apis: str | list[str] | None
    if not llm_apis:
        apis = None
    elif LLM_API_MULTIPLE:
        apis = llm_apis
    else:  # pragma: no cover - Home Assistant 2025.4-2025.6
        apis = llm_apis[0]
    if hasattr(chat_log, "async_provide_llm_data"):
        await chat_log.async_provide_llm_data(
            user_input.as_llm_context(domain), apis, prompt, user_input.extra_system_prompt
        )
    else:  # pragma: no cover - Home Assistant 2025.x
        await chat_log.async_update_llm_data(domain, user_input, apis, prompt)


def tool_result_data(content: conversation.ToolResultContent) -> Any:
    """What a tool returned (an error is a result too: ``{"error": ...}``).

    ``ToolResultContent.result`` (an ``llm.ToolResult``) replaced ``tool_result`` in 2026.
    """
    if hasattr(content, "result"):
        return content.result.data
    return content.tool_result  # pragma: no cover - Home Assistant 2025.x


def result_from_chat_log(
    user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
) -> conversation.ConversationResult:
    """The conversation result for the chat log's last answer.

    Home Assistant's own helper (2025.6) also hands back the intent response of the last
    intent tool (what it did, to whom); before it, the answer's speech is all there is.
    """
    if not hasattr(conversation, "async_get_result_from_chat_log"):  # pragma: no cover - 2025.x
        response = intent.IntentResponse(language=user_input.language)
        last = chat_log.content[-1]
        response.async_set_speech(
            (last.content if isinstance(last, conversation.AssistantContent) else None) or ""
        )
        return conversation.ConversationResult(
            response=response,
            conversation_id=chat_log.conversation_id,
            continue_conversation=chat_log.continue_conversation,
        )
    return conversation.async_get_result_from_chat_log(user_input, chat_log)
