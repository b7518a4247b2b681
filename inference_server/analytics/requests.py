"""The inference event of each OpenAI-surface request, emitted by a middleware.

The middleware knows what only the outside of a request knows (route, final status, latency
to the last byte, including streams and errors); the generation code knows model, tokens and
decode time and writes them into the request's :class:`InferenceRecord` through
:func:`note_generation`. A context variable joins the two, so the OpenAI handlers need one call
and no new parameters; routing and the response cache set ``side`` and ``cache`` on the same
record. A request another node forwarded here is marked ``served_for`` that node (see
:func:`forwarded_by`), so a shared database counts the client's request once.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from inference_server.analytics.events import CacheResult, InferenceEvent, Side
from inference_server.analytics.service import ANALYTICS_KEY, Analytics
from inference_server.backends.remote import FORWARDED_HEADER, FORWARDED_MAX_LENGTH

_LOGGER = logging.getLogger(__name__)

INFERENCE_PREFIX = "/v1/"


@dataclass(kw_only=True, slots=True)
class InferenceRecord:
    model: str | None = None
    side: Side = "edge"
    peer: str | None = None
    cache: CacheResult = "none"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    served_for: str | None = None


_CURRENT: contextvars.ContextVar[InferenceRecord | None] = contextvars.ContextVar(
    "prime_spark_inference_record", default=None
)

Started = tuple[Analytics, InferenceRecord, contextvars.Token[InferenceRecord | None]]
"""What :func:`start_record` hands to :func:`finish_record`."""


def current_record() -> InferenceRecord | None:
    """The record of the request being handled (``None`` outside an inference request)."""
    return _CURRENT.get()


def note_generation(
    model: str, prompt_tokens: int, completion_tokens: int = 0, generation_seconds: float = 0.0
) -> None:
    """Called where a generation (or embedding) finishes; a no-op outside a request."""
    record = _CURRENT.get()
    if record is not None:
        record.model = model
        record.prompt_tokens += prompt_tokens
        record.completion_tokens += completion_tokens
        record.generation_seconds += generation_seconds


def start_record(request: web.Request) -> Started | None:
    """The record of an inference request (``POST /v1/...`` with analytics on), made current.

    The caller must call :func:`finish_record` whatever happens to the request. Used by the
    application's one middleware (:func:`inference_server.middleware.request_middleware`).
    """
    if request.method != "POST" or not request.path.startswith(INFERENCE_PREFIX):
        return None
    analytics = request.app.get(ANALYTICS_KEY)
    if analytics is None:
        return None
    record = InferenceRecord(served_for=forwarded_by(request))
    return analytics, record, _CURRENT.set(record)


def finish_record(
    request: web.Request,
    started: Started,
    *,
    status: int,
    stream: bool,
    elapsed: float,
) -> None:
    """Leave the request's record and emit its event (not for a refused caller: 401/403)."""
    analytics, record, token = started
    _CURRENT.reset(token)
    if status not in UNAUTHENTICATED:
        _emit(analytics, request, record=record, status=status, stream=stream, elapsed=elapsed)


def forwarded_by(request: web.Request) -> str | None:
    """The node that forwarded this request here (its ``X-Prime-Spark-Forwarded`` header).

    That node records the client's request itself, so the event here is marked ``served_for``
    it and the summaries count the request once. ``None`` for a value that is not a node id
    (empty or longer than the schema allows); routing answers such a request 400.
    """
    value = request.headers.get(FORWARDED_HEADER, "").strip()
    return value if 0 < len(value) <= FORWARDED_MAX_LENGTH else None


UNAUTHENTICATED = frozenset({401, 403})
"""Refused before any inference: not recorded, so callers without a token cannot write events."""


def _emit(
    analytics: Analytics,
    request: web.Request,
    *,
    record: InferenceRecord,
    status: int,
    stream: bool,
    elapsed: float,
) -> None:
    """One inference event; a schema bug must never fail the request it describes."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        analytics.emit_data(
            InferenceEvent,
            inference_data(
                record,
                model=record.model or analytics.default_model,
                route=route,
                status=status,
                stream=stream,
                elapsed=elapsed,
            ),
        )
    except ValueError:  # a schema bug must never fail the request it describes
        _LOGGER.exception("Inference analytics event rejected")


def inference_data(
    record: InferenceRecord, *, model: str, route: str, status: int, stream: bool, elapsed: float
) -> dict[str, Any]:
    """The ``data`` of the request's :class:`InferenceEvent`, built as a dict directly.

    Exactly ``InferenceEvent(...).data()`` for the same values (same fields, same order: see
    tests/server/analytics/test_events.py), without making the dataclass first: this runs on
    every request, response-cache hits included.
    """
    return {
        "model": model,
        "side": record.side,
        "route": route,
        "status": status,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "latency_ms": _ms(elapsed),
        "generation_ms": _ms(record.generation_seconds),
        "cache": record.cache,
        "stream": stream,
        "peer": record.peer,
        "served_for": record.served_for,
    }


def _ms(seconds: float) -> float:
    """Milliseconds to the microsecond, as ``round(seconds * 1000, 3)`` gives them (the nearest
    float to the same decimal) in a third of its time: ``round`` with digits formats the number,
    0.25 µs, twice per request. What is not a plain duration (NaN, an infinity, a negative or
    huge value) goes through ``round`` and on to the schema check, which refuses it."""
    if 0 <= seconds < 1e9:
        return int(seconds * 1e6 + 0.5) / 1000
    return round(seconds * 1000, 3)
