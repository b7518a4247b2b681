"""Prompt rendering: Gemma's format exactly, HF-style Jinja templates, the plain fallback."""

from __future__ import annotations

import logging

import pytest

from inference_server.backends.base import TokenizerInfo
from inference_server.chat import (
    ChatFormatError,
    ChatTemplateError,
    check_template,
    parse_messages,
    prepare_chat,
    render_chat,
    select_template,
)
from inference_server.chat.template import jinja_messages, render_jinja

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
GEMMA_INFO = TokenizerInfo(
    add_bos=True,
    bos_token="<bos>",
    eos_token="<eos>",
    eot_token="<end_of_turn>",
    chat_template=None,
)

TOOL_HISTORY = [
    {"role": "system", "content": "You control the home."},
    {"role": "user", "content": "Kitchen light to 40%"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": "set_light",
                    "arguments": '{"entity_id":"light.kitchen","brightness":40}',
                },
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"success": true}'},
]


def test_gemma_is_chosen_for_template_less_gemma_models() -> None:
    assert select_template(gguf_template=None, architecture="gemma3").kind == "gemma"
    assert select_template(gguf_template=None, eot_token="<end_of_turn>").kind == "gemma"
    assert select_template(gguf_template=None, architecture="llama").kind == "plain"


def test_gemma_exact_rendering_folds_the_system_prompt() -> None:
    template = select_template(gguf_template=None, architecture="gemma3", bos_token="<bos>")
    rendered = render_chat(
        parse_messages(
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hi!  "},
                {"role": "assistant", "content": "Hello. How can I help?"},
                {"role": "user", "content": "Name a colour."},
            ]
        ),
        template,
    )
    assert rendered.text == (
        "<start_of_turn>user\nYou are a helpful assistant.\n\nHi!<end_of_turn>\n"
        "<start_of_turn>model\nHello. How can I help?<end_of_turn>\n"
        "<start_of_turn>user\nName a colour.<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert rendered.wrote_bos is False
    assert "<end_of_turn>" in rendered.stop
    assert rendered.kind == "gemma"


def test_gemma_renders_tool_calls_and_results_readably() -> None:
    template = select_template(gguf_template=None, architecture="gemma3")
    rendered = render_chat(parse_messages(TOOL_HISTORY), template)
    assert rendered.text == (
        "<start_of_turn>user\nYou control the home.\n\nKitchen light to 40%<end_of_turn>\n"
        "<start_of_turn>model\n<tool_call>\n"
        '{"name": "set_light", "arguments": {"entity_id": "light.kitchen", "brightness": 40}}\n'
        "</tool_call><end_of_turn>\n"
        '<start_of_turn>user\n<tool_response name="set_light">\n{"success": true}\n'
        "</tool_response><end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_gemma_without_a_leading_user_turn_gets_one_for_the_system_prompt() -> None:
    template = select_template(gguf_template=None, architecture="gemma")
    rendered = render_chat(
        parse_messages([{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}]),
        template,
        tools_prompt="TOOLS",
        add_generation_prompt=False,
    )
    assert rendered.text == (
        "<start_of_turn>user\nS\n\nTOOLS<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
    )


def test_plain_fallback() -> None:
    template = select_template(gguf_template=None, architecture="llama")
    rendered = render_chat(
        parse_messages([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]),
        template,
    )
    assert rendered.text == "System: S\n\nUser: Hi\n\nAssistant:"
    assert "\nUser:" in rendered.stop


def test_gguf_chatml_template() -> None:
    template = select_template(
        gguf_template=CHATML, architecture="qwen2", bos_token=None, eos_token="<|endoftext|>"
    )
    assert template.kind == "gguf"
    rendered = render_chat(
        parse_messages([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]),
        template,
    )
    assert rendered.text == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert rendered.stop == ("<|im_end|>", "<|endoftext|>")
    assert rendered.wrote_bos is False


def test_gguf_template_wins_over_override_and_override_over_gemma() -> None:
    assert select_template(gguf_template=CHATML, override="{{ 'x' }}").kind == "gguf"
    override = select_template(gguf_template=None, override=CHATML, architecture="gemma3")
    assert override.kind == "override"


def test_jinja_tool_history_uses_our_call_format_and_tool_results_as_user_turns() -> None:
    template = select_template(gguf_template=CHATML)
    rendered = render_chat(
        parse_messages([*TOOL_HISTORY, {"role": "user", "content": "And the bedroom?"}]),
        template,
        tools_prompt="TOOLS",
    )
    assert rendered.text == (
        "<|im_start|>system\nYou control the home.\n\nTOOLS<|im_end|>\n"
        "<|im_start|>user\nKitchen light to 40%<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "set_light", "arguments": {"entity_id": "light.kitchen", "brightness": 40}}\n'
        "</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response name="set_light">\n{"success": true}\n</tool_response>'
        "\n\nAnd the bedroom?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_jinja_tool_role_is_kept_when_the_template_knows_it() -> None:
    items = jinja_messages(parse_messages(TOOL_HISTORY), tool_role=True, tools_prompt=None)
    assert items[-1] == {
        "role": "tool",
        "content": '{"success": true}',
        "tool_call_id": "call_1",
        "name": "set_light",
    }


def test_jinja_tools_prompt_becomes_a_system_message_when_there_is_none() -> None:
    items = jinja_messages(parse_messages([{"role": "user", "content": "Hi"}]), tools_prompt="T")
    assert items == [{"role": "system", "content": "T"}, {"role": "user", "content": "Hi"}]


def test_bos_written_by_the_template_is_not_added_again() -> None:
    source = "{{ bos_token }}" + CHATML
    info = TokenizerInfo(
        add_bos=True, bos_token="<s>", eos_token="</s>", eot_token=None, chat_template=source
    )
    prepared = prepare_chat({"messages": [{"role": "user", "content": "Hi"}]}, info)
    assert prepared.prompt.startswith("<s><|im_start|>user")
    assert prepared.add_bos is False
    assert prepared.template == "gguf"

    gemma = prepare_chat({"messages": [{"role": "user", "content": "Hi"}]}, GEMMA_INFO)
    assert gemma.add_bos is True
    assert gemma.template == "gemma"


def test_hf_helpers_raise_exception_tojson_generation_tag() -> None:
    source = (
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('first must be user') }}{% endif %}"
        "{% for m in messages %}{% generation %}{{ m['content'] | tojson }}{% endgeneration %}"
        "{% endfor %}{{ tools | tojson }}"
    )
    text = render_jinja(
        source,
        [{"role": "user", "content": "Grüße"}],
        tools=[{"type": "function", "function": {"name": "f"}}],
    )
    assert text == '"Grüße"[{"type": "function", "function": {"name": "f"}}]'
    with pytest.raises(ChatFormatError, match="first must be user") as info:
        render_jinja(source, [{"role": "system", "content": "x"}])
    assert info.value.param == "messages"


def test_template_runtime_failure_is_a_format_error() -> None:
    with pytest.raises(ChatFormatError, match="could not render"):
        render_jinja("{{ messages[0]['content'] + 1 }}", [{"role": "user", "content": "x"}])


def test_broken_templates_are_reported_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ChatTemplateError, match="line 1"):
        check_template("{% for %}")
    with caplog.at_level(logging.ERROR):
        template = select_template(gguf_template="{% for %}", architecture="gemma3")
    assert template.kind == "gemma"
    assert "Ignoring the gguf chat template" in caplog.text
