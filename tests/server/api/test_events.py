"""The event stream HA follows: a snapshot at once, then changes within a fraction of a second."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.server.api.conftest import MakeServer
from tests.server.server_process import TOKENS, ServerProcess


async def _next_event(response: aiohttp.ClientResponse) -> tuple[str, dict[str, Any]]:
    event_type = ""
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            event_type = line[7:]
        elif line.startswith("data: "):
            return event_type, json.loads(line[6:])


async def test_state_snapshot_then_changes(server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['reader']}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + "/api/v1/events", headers=headers) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        kind, state = await _next_event(response)
        assert kind == "state"
        assert state["ready"] is True
        assert state["slots_total"] == 4
        kind, stats = await _next_event(response)
        assert kind == "stats"
        assert "requests_per_minute" in stats

        # A generation elsewhere makes a slot busy: the change arrives quickly.
        started = time.monotonic()
        worker = threading.Thread(
            target=server.request,
            args=("POST", "/v1/completions", {"prompt": "Tell a story.", "max_tokens": 48}),
        )
        worker.start()
        busy_seen = None
        while time.monotonic() - started < 10:
            kind, data = await _next_event(response)
            if kind == "state" and data["slots_busy"] >= 1:
                busy_seen = time.monotonic() - started
                break
        worker.join()
        assert busy_seen is not None and busy_seen < 1.0
        while True:  # and goes back to idle when it is done
            kind, data = await _next_event(response)
            if kind == "state" and data["slots_busy"] == 0:
                break


async def test_events_need_a_token(server: ServerProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + "/api/v1/events") as response,
    ):
        assert response.status == 401
        body = await response.json()
        assert body["error"]["code"] == "invalid_api_key"


async def test_stop_with_an_open_stream_is_prompt(make_server: MakeServer) -> None:
    """HA keeps a stream open all the time; a server stop must not wait for it to go away."""
    proc = await asyncio.to_thread(make_server({}, name="events-stop").start)
    headers = {"Authorization": f"Bearer {TOKENS['reader']}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(proc.url + "/api/v1/events", headers=headers) as response,
    ):
        assert (await _next_event(response))[0] == "state"
        started = time.monotonic()
        await asyncio.to_thread(proc.stop)
        elapsed = time.monotonic() - started
    assert proc.process is not None
    assert proc.process.returncode == 0, proc.log()
    assert elapsed < 10, f"stop took {elapsed:.1f} s"


def test_the_document_names_every_event_type_the_stream_sends() -> None:
    """Each ``publish("<type>", ...)`` in the server reaches /api/v1/events; the OpenAPI enum is
    what clients (and schemathesis) hold the stream to. The fuzzer found agent_task missing."""
    package = Path(__file__).resolve().parents[3] / "inference_server"
    published = {
        match
        for path in package.rglob("*.py")
        for match in re.findall(r'\.publish\(\s*"([a-z_]+)"', path.read_text(encoding="utf-8"))
    }
    document = json.loads((package / "api" / "openapi.json").read_text(encoding="utf-8"))
    stream = document["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]
    documented = set(stream["text/event-stream"]["schema"]["properties"]["event"]["enum"])
    assert published <= documented, published - documented
    assert documented == published | {"resync"}  # resync is written by the route itself
