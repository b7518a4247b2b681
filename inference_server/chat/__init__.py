"""Chat requests → prompt text, stop strings and a grammar; generated text → OpenAI messages.

The API layer needs only :func:`prepare_chat` and :meth:`PreparedChat.parse_output`; the
modules below are the parts, usable on their own:

* :mod:`.messages` — validated, typed OpenAI messages;
* :mod:`.template` — the model's Jinja template, the configured one, Gemma's, or plain;
* :mod:`.grammar` — ``response_format`` (JSON object / JSON schema) as GBNF;
* :mod:`.tools` — tools and ``tool_choice``: prompt text, call grammar, parsing calls back.
"""

from inference_server.chat.errors import ChatFormatError
from inference_server.chat.grammar import (
    ResponseFormat,
    parse_response_format,
    response_format_grammar,
)
from inference_server.chat.messages import ChatMessage, ToolCall, parse_messages
from inference_server.chat.prepare import PreparedChat, prepare_chat
from inference_server.chat.template import (
    ChatTemplate,
    ChatTemplateError,
    RenderedPrompt,
    check_template,
    render_chat,
    select_template,
)
from inference_server.chat.tools import (
    AssistantReply,
    ToolConfig,
    ToolFunction,
    parse_tool_output,
    parse_tools,
    tool_grammar,
    tools_prompt,
)

__all__ = [
    "AssistantReply",
    "ChatFormatError",
    "ChatMessage",
    "ChatTemplate",
    "ChatTemplateError",
    "PreparedChat",
    "RenderedPrompt",
    "ResponseFormat",
    "ToolCall",
    "ToolConfig",
    "ToolFunction",
    "check_template",
    "parse_messages",
    "parse_response_format",
    "parse_tool_output",
    "parse_tools",
    "prepare_chat",
    "render_chat",
    "response_format_grammar",
    "select_template",
    "tool_grammar",
    "tools_prompt",
]
