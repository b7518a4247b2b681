"""OpenAI-style JSON errors, and the one place that maps failures to HTTP statuses.

Clients (the OpenAI SDKs, Home Assistant, curl users) branch on the status and read
``error.message``; a client mistake must never surface as a 500, so every engine and validation
exception is translated here rather than in each handler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from inference_server.backends.base import (
    BackendError,
    GenerationTimeoutError,
    InvalidGrammarError,
    ModelLoadError,
    ModelNotFoundError,
    PromptTooLongError,
    QueueFullError,
)

_LOGGER = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error with everything the response needs; raise it anywhere below a handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


def from_backend(err: BackendError) -> ApiError:
    """Translate an engine failure into the status a client can act on."""
    if isinstance(err, ModelNotFoundError):
        return ApiError(404, str(err), code="model_not_found", param="model")
    if isinstance(err, QueueFullError):
        retry = max(1, round(err.retry_after))
        return ApiError(
            429,
            f"{err} (retry after {retry} s)",
            type_="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(retry)},
        )
    if isinstance(err, PromptTooLongError):
        return ApiError(413, str(err), code="context_length_exceeded", param="messages")
    if isinstance(err, InvalidGrammarError):
        return ApiError(400, str(err), code="invalid_grammar", param="response_format")
    if isinstance(err, GenerationTimeoutError):
        return ApiError(504, str(err) or "The request timed out", type_="timeout", code="timeout")
    if isinstance(err, ModelLoadError):
        return ApiError(503, str(err), type_="server_error", code="model_unavailable")
    return ApiError(500, "The inference engine failed", type_="server_error", code="engine_error")


_HTTP_MESSAGES = {
    404: "No such route",
    405: "Method not allowed on this route",
    413: "The request body is too large",
}


def error_response(request: web.Request, err: Exception) -> web.Response | None:
    """The JSON error answer for a failure below the handler, or ``None`` to let it propagate.

    Every failure leaves as a JSON error body, including aiohttp's own 404/405/413; redirects
    (an ``HTTPException`` below 400) and unexpected exceptions propagate (aiohttp answers 500).
    Called by the application's one middleware
    (:func:`inference_server.middleware.request_middleware`).
    """
    if isinstance(err, ApiError):
        return err.response()
    if isinstance(err, BackendError):
        api_error = from_backend(err)
        if api_error.status >= 500:
            _LOGGER.error("Engine failure on %s: %s", request.path, err)
        return api_error.response()
    if isinstance(err, web.HTTPException):
        if err.status < 400:
            return None
        message = _HTTP_MESSAGES.get(err.status, err.reason)
        # Keep what the exception says about the resource (RFC 9110: a 405 lists ``Allow``).
        headers = {name: err.headers[name] for name in ("Allow",) if name in err.headers}
        code = err.reason.lower().replace(" ", "_")
        return ApiError(err.status, message, code=code, headers=headers).response()
    return None
