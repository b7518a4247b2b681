"""The one exception the chat layer raises for a client's mistake.

Everything in ``inference_server.chat`` validates what an OpenAI client sent (messages, tools,
``tool_choice``, ``response_format``) and the API layer turns this error into HTTP 400. The
message always starts with the offending field (``messages[2].role: ...``) because the person
reading it is debugging a request body they did not write by hand (an HA integration, an SDK).
"""

from __future__ import annotations


class ChatFormatError(ValueError):
    """A chat request is malformed; ``param`` names the field for OpenAI's ``error.param``."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(f"{param}: {message}" if param else message)
        self.param = param
        self.detail = message
