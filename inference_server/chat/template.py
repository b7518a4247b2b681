"""Messages → prompt text, through the right chat template for the model.

Which template, in order (the first that applies wins):

1. the GGUF's own Jinja template (``tokenizer.chat_template``): the model was trained on it;
2. the configured override (``models.chat_template``), for GGUFs that ship none;
3. the built-in Gemma format for Gemma models without a template (our bundled Gemma 3 270M is
   a base model whose GGUF has none), written in Python to match Google's template exactly;
4. a plain ``User:`` / ``Assistant:`` transcript for any other template-less (base) model.

Jinja templates run in a sandbox configured like Hugging Face's ``apply_chat_template``
(``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, ``tojson`` without ASCII escaping,
``raise_exception``, ``strftime_now``), because that is what GGUF templates are written against.

Tool calls use one format for every model (see :mod:`inference_server.chat.callformat`): earlier
assistant calls are rendered as that text and the tool description goes into the system prompt,
so the prompt, the grammar and the parser always agree, whatever the template knows about tools.

The result also says whether the text already begins with BOS (then the engine must not add a
second one) and which stop strings the format implies (``<end_of_turn>``, ``<|im_end|>``, ...).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, NoReturn

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from inference_server.chat.callformat import render_tool_calls, render_tool_result
from inference_server.chat.errors import ChatFormatError
from inference_server.chat.messages import ChatMessage

_LOGGER = logging.getLogger(__name__)

TemplateKind = Literal["gguf", "override", "gemma", "plain"]

GEMMA_STOP = ("<end_of_turn>", "<start_of_turn>")
PLAIN_STOP = ("\nUser:", "\nSystem:")
_END_MARKERS = (
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|END_OF_TURN_TOKEN|>",
    "<|return|>",
    "</s>",
)
"""End-of-turn markers we recognise in a Jinja template's text and add as stop strings, so a
model whose EOG token list is incomplete still stops at the end of its turn."""


class ChatTemplateError(ValueError):
    """A Jinja chat template does not compile (a model's metadata or the settings are wrong)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ChatTemplate:
    """The chosen template for one model, plus the token texts templates refer to."""

    kind: TemplateKind
    source: str | None = None
    """The Jinja text, for ``gguf`` and ``override``."""
    bos_token: str = ""
    eos_token: str = ""
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class RenderedPrompt:
    text: str
    wrote_bos: bool
    """The text starts with the BOS token's text: the engine must not add another BOS."""
    stop: tuple[str, ...]
    kind: TemplateKind


def is_gemma(architecture: str | None, eot_token: str | None = None) -> bool:
    """Gemma by GGUF architecture (``gemma``, ``gemma2``, ``gemma3``, ...), or by its
    vocabulary's end-of-turn token when the architecture is unknown."""
    if architecture:
        return architecture.lower().startswith("gemma")
    return eot_token == GEMMA_STOP[0]


def select_template(
    *,
    gguf_template: str | None,
    override: str | None = None,
    architecture: str | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
    eot_token: str | None = None,
) -> ChatTemplate:
    """Pick the template for a model (see the module docstring for the order).

    A GGUF template or override that does not compile is logged and skipped, so one broken
    model file never takes chat down; :func:`check_template` reports the error up front.
    """
    bos = bos_token or ""
    eos = eos_token or ""
    for kind, source in (("gguf", gguf_template), ("override", override)):
        if not source:
            continue
        try:
            _compile(source)
        except ChatTemplateError as err:
            _LOGGER.error("Ignoring the %s chat template: %s", kind, err)
            continue
        stops = [marker for marker in _END_MARKERS if marker in source]
        stops.extend(token for token in (eot_token, eos) if token and token not in stops)
        return ChatTemplate(
            kind="gguf" if kind == "gguf" else "override",
            source=source,
            bos_token=bos,
            eos_token=eos,
            stop=tuple(stops),
        )
    if is_gemma(architecture, eot_token):
        return ChatTemplate(kind="gemma", bos_token=bos, eos_token=eos, stop=GEMMA_STOP)
    return ChatTemplate(kind="plain", bos_token=bos, eos_token=eos, stop=PLAIN_STOP)


def check_template(source: str) -> None:
    """Raise :class:`ChatTemplateError` (with the line) when ``source`` is not valid Jinja;
    for validating the ``models.chat_template`` setting at start-up."""
    _compile(source)


def render_chat(
    messages: Sequence[ChatMessage],
    template: ChatTemplate,
    *,
    tools_prompt: str | None = None,
    add_generation_prompt: bool = True,
) -> RenderedPrompt:
    """Render ``messages`` (plus the tool description, when tools are on) as prompt text."""
    if template.kind == "gemma":
        text = render_gemma(
            messages, tools_prompt=tools_prompt, add_generation_prompt=add_generation_prompt
        )
    elif template.kind == "plain":
        text = render_plain(
            messages, tools_prompt=tools_prompt, add_generation_prompt=add_generation_prompt
        )
    else:
        assert template.source is not None  # nosec B101: type narrowing of an invariant, not a runtime check
        text = render_jinja(
            template.source,
            jinja_messages(
                messages, tools_prompt=tools_prompt, tool_role=_knows_tool_role(template.source)
            ),
            bos_token=template.bos_token,
            eos_token=template.eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    wrote_bos = bool(template.bos_token) and text.startswith(template.bos_token)
    return RenderedPrompt(text=text, wrote_bos=wrote_bos, stop=template.stop, kind=template.kind)


# --------------------------------------------------------------------------- Gemma and plain


def _assistant_text(message: ChatMessage) -> str:
    parts = [message.content.strip()] if message.content and message.content.strip() else []
    if message.tool_calls:
        parts.append(render_tool_calls(message.tool_calls))
    return "\n".join(parts)


def _turns(
    messages: Sequence[ChatMessage], tools_prompt: str | None
) -> tuple[str | None, list[tuple[Literal["user", "assistant"], list[str]]]]:
    """System text (system + developer messages + tool description) and the conversation as
    alternating user/assistant turns: tool results count as the user side, and consecutive
    messages of one side merge, because Gemma's format only knows two alternating roles."""
    system_parts = [
        m.content.strip()
        for m in messages
        if m.role in ("system", "developer") and m.content and m.content.strip()
    ]
    if tools_prompt:
        system_parts.append(tools_prompt.strip())
    turns: list[tuple[Literal["user", "assistant"], list[str]]] = []
    for message in messages:
        side: Literal["user", "assistant"]
        if message.role in ("system", "developer"):
            continue
        if message.role == "assistant":
            side, text = "assistant", _assistant_text(message)
        elif message.role == "tool":
            side, text = "user", render_tool_result(message.name, message.content or "")
        else:
            side, text = "user", (message.content or "").strip()
        if turns and turns[-1][0] == side:
            if text:
                turns[-1][1].append(text)
        else:
            turns.append((side, [text] if text else []))
    return ("\n\n".join(system_parts) if system_parts else None), turns


def render_gemma(
    messages: Sequence[ChatMessage],
    *,
    tools_prompt: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Google's Gemma chat format: ``<start_of_turn>user|model\\n...<end_of_turn>\\n``, the
    system prompt folded into the first user turn (as Gemma's own template does), BOS left to
    the engine."""
    system, turns = _turns(messages, tools_prompt)
    if system:
        if turns and turns[0][0] == "user":
            turns[0][1].insert(0, system)
        else:
            turns.insert(0, ("user", [system]))
    out = [
        f"<start_of_turn>{'model' if side == 'assistant' else 'user'}\n"
        + "\n\n".join(chunks)
        + "<end_of_turn>\n"
        for side, chunks in turns
    ]
    if add_generation_prompt:
        out.append("<start_of_turn>model\n")
    return "".join(out)


def render_plain(
    messages: Sequence[ChatMessage],
    *,
    tools_prompt: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """A transcript any base model continues sensibly; stops at the next ``User:`` line."""
    system, turns = _turns(messages, tools_prompt)
    out = [f"System: {system}\n\n"] if system else []
    out.extend(
        f"{'Assistant' if side == 'assistant' else 'User'}: " + "\n\n".join(chunks) + "\n\n"
        for side, chunks in turns
    )
    if add_generation_prompt:
        out.append("Assistant:")
    return "".join(out)


# --------------------------------------------------------------------------- Jinja


class _IgnoreGenerationTag(jinja2.ext.Extension):
    """HF's ``{% generation %}`` marks assistant text for training masks; render it as-is."""

    tags = {"generation"}  # noqa: RUF012 (the type jinja2 declares)

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _TemplateRaised(Exception):
    """``raise_exception(...)`` was called by the template."""


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_IgnoreGenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise ChatTemplateError(f"line {err.lineno}: {err.message}") from err


def _knows_tool_role(source: str) -> bool:
    """Whether the template handles ``role == "tool"`` messages itself."""
    return "'tool'" in source or '"tool"' in source


def jinja_messages(
    messages: Sequence[ChatMessage],
    *,
    tools_prompt: str | None = None,
    tool_role: bool = True,
) -> list[dict[str, Any]]:
    """Messages as the dicts HF templates expect. ``developer`` becomes ``system``; assistant
    tool calls become our call text in ``content``; tool results stay ``tool`` messages when
    the template knows that role, else become user messages, and consecutive user messages
    then merge, so templates that insist on alternation still render."""
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any]
        if message.role in ("system", "developer"):
            item = {"role": "system", "content": message.content or ""}
        elif message.role == "assistant":
            item = {"role": "assistant", "content": _assistant_text(message)}
        elif message.role == "tool":
            if tool_role:
                item = {
                    "role": "tool",
                    "content": message.content or "",
                    "tool_call_id": message.tool_call_id,
                }
                if message.name:
                    item["name"] = message.name
            else:
                item = {
                    "role": "user",
                    "content": render_tool_result(message.name, message.content or ""),
                }
        else:
            item = {"role": "user", "content": message.content or ""}
        if message.name and message.role in ("user", "assistant"):
            item["name"] = message.name
        if (
            not tool_role
            and item["role"] == "user"
            and out
            and out[-1]["role"] == "user"
            and "name" not in item
            and "name" not in out[-1]
        ):
            out[-1]["content"] = f"{out[-1]['content']}\n\n{item['content']}"
            continue
        out.append(item)
    if tools_prompt:
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content'].rstrip()}\n\n{tools_prompt}".lstrip()
        else:
            out.insert(0, {"role": "system", "content": tools_prompt})
    return out


def render_jinja(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    **extra: Any,
) -> str:
    """Render a HF-style chat template. A template's ``raise_exception`` (roles must
    alternate, unsupported role) and any rendering failure on these messages become
    :class:`ChatFormatError`: the request, not the server, is what the template rejected."""
    template = _compile(source)
    try:
        return template.render(
            messages=list(messages),
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            tools=list(tools) if tools is not None else None,
            **extra,
        )
    except _TemplateRaised as err:
        raise ChatFormatError(
            f"the model's chat template rejected the conversation: {err}", param="messages"
        ) from err
    except (
        jinja2.TemplateError,
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
    ) as err:
        raise ChatFormatError(
            f"the model's chat template could not render the conversation: {err}",
            param="messages",
        ) from err
