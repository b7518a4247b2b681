"""One call from an OpenAI chat request body to what the engine needs, and one call back.

The API layer should not know about templates, grammars and tool formats; it calls
:func:`prepare_chat` (validation errors raise :class:`ChatFormatError` → HTTP 400), sends
``prompt``/``add_bos``/``stop``/``grammar`` to the engine, and hands the generated text to
:meth:`PreparedChat.parse_output` for the assistant message and finish reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inference_server.backends.base import FinishReason, TokenizerInfo
from inference_server.chat.grammar import (
    ResponseFormat,
    parse_response_format,
    response_format_grammar,
)
from inference_server.chat.messages import parse_messages
from inference_server.chat.template import TemplateKind, render_chat, select_template
from inference_server.chat.tools import (
    AssistantReply,
    ToolConfig,
    parse_tool_output,
    parse_tools,
    tool_grammar,
    tools_prompt,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class PreparedChat:
    """A rendered, constrained chat request, ready for ``GenerationRequest``."""

    prompt: str
    add_bos: bool
    """Whether the engine should put BOS in front (the model wants one and the template did
    not write it already)."""
    stop: tuple[str, ...]
    """Stop strings the chat format implies; add the client's own ``stop`` to these."""
    grammar: str | None
    tools: ToolConfig
    response_format: ResponseFormat
    template: TemplateKind

    @property
    def uses_tools(self) -> bool:
        """The output may be a tool call, so it must be parsed whole before it is streamed."""
        return self.tools.active

    def parse_reply(self, text: str, finish_reason: FinishReason) -> AssistantReply:
        return parse_tool_output(text, self.tools, finish_reason=finish_reason)

    def parse_output(self, text: str, finish_reason: FinishReason) -> tuple[dict[str, Any], str]:
        """``(choices[0].message, finish_reason)``; the reason is ``tool_calls`` when the
        model called tools."""
        reply = self.parse_reply(text, finish_reason)
        return reply.to_message(), reply.finish_reason


def prepare_chat(
    body: Mapping[str, Any],
    info: TokenizerInfo,
    *,
    template_override: str | None = None,
    architecture: str | None = None,
) -> PreparedChat:
    """Validate the chat fields of ``body`` and render the prompt and grammar.

    Reads ``messages``, ``tools``, ``tool_choice``, ``parallel_tool_calls`` and
    ``response_format``; other fields are the API layer's. ``info`` comes from the engine
    (BOS/EOS/EOT texts and the GGUF's template); ``architecture`` (GGUF
    ``general.architecture``) is optional and only sharpens the Gemma detection.
    """
    messages = parse_messages(body.get("messages"))
    tools = parse_tools(body.get("tools"), body.get("tool_choice"), body.get("parallel_tool_calls"))
    response_format = parse_response_format(body.get("response_format"))
    template = select_template(
        gguf_template=info.chat_template,
        override=template_override,
        architecture=architecture,
        bos_token=info.bos_token,
        eos_token=info.eos_token,
        eot_token=info.eot_token,
    )
    rendered = render_chat(messages, template, tools_prompt=tools_prompt(tools))
    grammar = (
        tool_grammar(tools, response_format)
        if tools.active
        else response_format_grammar(response_format)
    )
    return PreparedChat(
        prompt=rendered.text,
        add_bos=info.add_bos and not rendered.wrote_bos,
        stop=rendered.stop,
        grammar=grammar,
        tools=tools,
        response_format=response_format,
        template=rendered.kind,
    )
