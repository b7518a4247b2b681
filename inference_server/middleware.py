"""The application's one middleware: metrics, inference events, JSON errors and auth in a layer.

They were four aiohttp middlewares; each layer costs a partial, a coroutine and its frames on
every request (a few µs of a response-cache hit: too little to show on its own in the A/B of
bench/RESULTS.md, "Memory" (b), but fewer calls on the hottest path). The order and what each
one saw are kept, from the outside in:

1. metrics: every response under its route template, with the status the client got (an
   exception that escapes is counted as a 500, an ``HTTPException`` under its status);
2. inference events (``POST /v1/...`` with analytics on): the request's
   :class:`~inference_server.analytics.requests.InferenceRecord` is current while the handler
   runs, and its event is emitted with the final status (not for 401/403);
3. JSON errors: :class:`~inference_server.api.errors.ApiError`, engine errors and aiohttp's own
   4xx/5xx become OpenAI-style JSON bodies (:func:`~inference_server.api.errors.error_response`);
4. auth: the role each route declares, then the per-caller rate limit, before the handler.
"""

from __future__ import annotations

import time

from aiohttp import web

from inference_server.analytics.requests import finish_record, start_record
from inference_server.api.errors import Handler, error_response
from inference_server.metrics import observe_response
from inference_server.security.middleware import (
    PRINCIPAL_KEY,
    RATE_LIMITER_KEY,
    authorize,
    check_rate,
)

_EVENT_STREAM = "text/event-stream"


def _is_event_stream(response: web.StreamResponse) -> bool:
    """``response.content_type == "text/event-stream"`` without aiohttp's full header parse
    (an email-style parser: several µs on every inference request): the media type is what
    comes before any parameter, case-insensitive."""
    raw = response.headers.get("Content-Type")
    return raw is not None and raw.partition(";")[0].strip().lower() == _EVENT_STREAM


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    stream = False
    started = start_record(request)
    try:
        try:
            principal = authorize(request)
            if principal is not None:
                limiter = request.app[RATE_LIMITER_KEY]
                if limiter.enabled:
                    await check_rate(request, principal, limiter)
                request[PRINCIPAL_KEY] = principal
            response = await handler(request)
        except Exception as err:
            answer = error_response(request, err)
            if answer is None:
                raise
            response = answer
        status = response.status
        if started is not None:
            stream = _is_event_stream(response)
        return response
    except web.HTTPException as err:
        status = err.status
        raise
    finally:
        if started is not None:
            finish_record(
                request, started, status=status, stream=stream, elapsed=time.perf_counter() - start
            )
        observe_response(request, status, time.perf_counter() - start)
