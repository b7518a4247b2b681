"""A cloud peer that refuses ``stream_options`` (a strict OpenAI-compatible server).

The router asks peers for their usage chunk so streamed cloud answers are counted; a peer that
answers 400 to the unknown field must still serve the stream the client asked for. The peer is a
small aiohttp server on loopback (in a thread), the edge a real server process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.server.api.conftest import MakeServer
from tests.server.server_process import (
    TOKENS,
    ServerProcess,
    first_peer_reachable,
    free_port,
    until,
)


class StrictPeer:
    """Serves ``/v1/models`` and streamed chat; a body with ``stream_options`` is a 400."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "strict", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if "stream_options" in body:
            error = {"message": "Unrecognized request argument: stream_options"}
            return web.json_response({"error": error}, status=400)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for text in ("Hel", "lo"):
            chunk = {"object": "chat.completion.chunk", "model": "strict",
                     "choices": [{"index": 0, "delta": {"content": text}}]}  # fmt: skip
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> StrictPeer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def strict_peer() -> Iterator[StrictPeer]:
    peer = StrictPeer().start()
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def edge(make_server: MakeServer, strict_peer: StrictPeer) -> Iterator[ServerProcess]:
    proc = make_server(
        {
            "memory": {"cache_enabled": False},
            "routing": {
                "mode": "cloud_first",
                "peers": [{"name": "strict", "url": strict_peer.url}],
                "health_interval": 0.5,
            },
        },
        name="edge-strict",
    ).start()
    until(lambda: first_peer_reachable(proc), "the strict peer's first health check")
    yield proc
    proc.stop()


def test_a_peer_refusing_stream_options_still_streams(
    edge: ServerProcess, strict_peer: StrictPeer
) -> None:
    body = {
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 4,
        "stream": True,
    }
    request = urllib.request.Request(
        edge.url + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {TOKENS['operator']}")
    strict_peer.bodies.clear()
    with urllib.request.urlopen(request, timeout=60) as response:
        route = response.headers["x-prime-spark-route"]
        lines = [line for line in response if line.startswith(b"data: ")]
    assert route == "cloud: cloud first"
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "") for line in lines[:-1]
    )
    assert text == "Hello"
    assert lines[-1] == b"data: [DONE]\n"
    # Asked with the usage option first, then again exactly as the client asked.
    assert ["stream_options" in b for b in strict_peer.bodies] == [True, False]
