"""The application's one middleware: what it reads from a response is what aiohttp would say."""

from __future__ import annotations

import pytest
from aiohttp import web

from inference_server.middleware import _is_event_stream


@pytest.mark.parametrize(
    "response",
    [
        web.Response(text="x"),
        web.Response(body=b"{}", content_type="application/json", charset="utf-8"),
        web.StreamResponse(headers={"Content-Type": "text/event-stream"}),
        web.StreamResponse(headers={"Content-Type": "Text/Event-Stream; charset=utf-8"}),
        web.StreamResponse(headers={"Content-Type": " text/event-stream ;x=1"}),
        web.StreamResponse(headers={"Content-Type": "text/event-streams"}),
        web.StreamResponse(),
    ],
)
def test_event_stream_check_agrees_with_aiohttp(response: web.StreamResponse) -> None:
    """The inference event's ``stream`` column: the cheap check and aiohttp's parse agree."""
    assert _is_event_stream(response) == (response.content_type == "text/event-stream")
