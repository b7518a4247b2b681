"""``llm``: chat with, or summarise through, the node's language model.

Payload: ``{"messages": [...]}`` (OpenAI chat messages) or ``{"prompt": "..."}``, or
``{"summarise": "long text"}``; optional ``max_tokens``, ``temperature``, ``model`` and
``private`` (true: the task never leaves the node, as the ``private`` field of an HTTP request).

The task is routed like ``POST /v1/chat/completions`` (see :mod:`inference_server.agents.engine`);
the result's ``route`` says where it ran and why.
"""

from __future__ import annotations

from typing import Any, ClassVar

import voluptuous as vol

from inference_server.agents import engine
from inference_server.agents.base import Agent, TaskRejectedError
from inference_server.api.validation import integer_range, number_range
from inference_server.backends.base import ModelNotFoundError, PromptTooLongError
from inference_server.chat import ChatFormatError
from inference_server.chat.messages import parse_messages
from inference_server.routing.router import RouteRefused

SUMMARY_INSTRUCTION = "Summarise the following text in a few short sentences."


def _one_input(payload: dict[str, Any]) -> dict[str, Any]:
    given = [key for key in ("messages", "prompt", "summarise") if key in payload]
    if len(given) != 1:
        raise vol.Invalid("give exactly one of messages, prompt or summarise")
    if "messages" in payload:
        try:
            parse_messages(payload["messages"])
        except ChatFormatError as err:
            raise vol.Invalid(str(err), path=["messages"]) from err
    return payload


class LlmAgent(Agent):
    capability: ClassVar[str] = "llm"
    default_capacity: ClassVar[int] = 1
    payload_schema: ClassVar[vol.Schema] = vol.Schema(
        vol.All(
            {
                vol.Optional("messages"): list,
                vol.Optional("prompt"): vol.All(str, vol.Length(min=1)),
                vol.Optional("summarise"): vol.All(str, vol.Length(min=1)),
                vol.Optional("max_tokens"): integer_range(1, 8192),
                vol.Optional("temperature"): number_range(0, 2),
                vol.Optional("model"): vol.All(str, vol.Length(min=1)),
                vol.Optional("private"): bool,
            },
            _one_input,
        )
    )

    async def run(self, payload: dict[str, Any]) -> Any:
        if "messages" in payload:
            messages = payload["messages"]
        elif "prompt" in payload:
            messages = [{"role": "user", "content": payload["prompt"]}]
        else:
            messages = [
                {"role": "user", "content": f"{SUMMARY_INSTRUCTION}\n\n{payload['summarise']}"}
            ]
        try:
            out = await engine.chat(
                self.context.node,
                messages,
                model=payload.get("model"),
                max_tokens=payload.get("max_tokens"),
                temperature=payload.get("temperature", 0.7),
                private=payload.get("private", False),
            )
        except (
            ChatFormatError,
            ModelNotFoundError,
            PromptTooLongError,
            engine.CloudRejectedError,
        ) as err:
            # Retrying cannot help: the payload itself is wrong for this node's model.
            raise TaskRejectedError(str(err)) from err
        except RouteRefused as err:
            if err.status < 500:  # private, and the model only on the cloud
                raise TaskRejectedError(str(err)) from err
            raise  # every serving peer cooling down: retry with backoff
        return {
            "text": out.text,
            "model": out.model,
            "finish_reason": out.finish_reason,
            "usage": {
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
            },
            "route": {"target": out.target, "peer": out.peer, "reason": out.reason},
        }


AGENT = LlmAgent
