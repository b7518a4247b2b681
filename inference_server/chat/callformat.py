"""The text form of tool calls and tool results inside prompts and model output.

One format everywhere: the tool prompt teaches it, the grammar forces it, the parser reads it,
and the chat templates render earlier calls in it, so the model always sees its own past calls in
the shape it must produce. It is the Hermes/Qwen form (``<tool_call>`` + a JSON object with
``name`` and ``arguments``), which many GGUF models already know natively.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from inference_server.chat.messages import ToolCall

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


def render_tool_calls(calls: Sequence[ToolCall]) -> str:
    """Earlier assistant calls, exactly as the grammar would have produced them."""
    return "\n".join(
        f"{TOOL_CALL_OPEN}\n"
        + json.dumps(
            {"name": call.name, "arguments": call.arguments_object()},
            ensure_ascii=False,
        )
        + f"\n{TOOL_CALL_CLOSE}"
        for call in calls
    )


def render_tool_result(name: str | None, content: str) -> str:
    """A tool's result, readable for small models and unambiguous about which tool spoke."""
    attribute = f' name="{name}"' if name else ""
    return f"<tool_response{attribute}>\n{content.strip()}\n</tool_response>"
