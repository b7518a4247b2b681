"""What the remote backend reads from a peer's stream for the inference record, over real HTTP.

The two-node tests (tests/server/api/test_analytics_emitters.py) cover a Prime Spark peer, which
honours ``stream_options.include_usage``. Other OpenAI-compatible servers may not (older Ollama
builds, some proxies), so this test serves the streams such peers send, from a small aiohttp
server on loopback: one with no usage chunk at all (the fallback counts text-bearing chunks) and
one whose usage chunk must be recognised so a client that did not ask for it never sees it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from inference_server.backends.remote import RemoteBackend
from inference_server.config import PeerSettings


def _sse(chunks: list[dict[str, Any]]) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + b"data: [DONE]\n\n"


def _chat_chunk(content: str | None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    chunk: dict[str, Any] = {
        "object": "chat.completion.chunk",
        "model": "llama3",
        "choices": choices,
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


NO_USAGE = [_chat_chunk(""), _chat_chunk("Hel"), _chat_chunk("lo"), _chat_chunk("!")]
WITH_USAGE = [
    *NO_USAGE,
    _chat_chunk(None, {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}),
]


@pytest.fixture
async def peer() -> AsyncIterator[Callable[[list[dict[str, Any]]], RemoteBackend]]:
    """A peer that streams whichever chunks the test names (the last one made)."""
    served: list[list[dict[str, Any]]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_sse(served[-1]))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    session = aiohttp.ClientSession()

    def make(chunks: list[dict[str, Any]]) -> RemoteBackend:
        served.append(chunks)
        return RemoteBackend(
            PeerSettings(name="ollama", url=f"http://127.0.0.1:{port}"), session, "edge-1"
        )

    yield make
    await session.close()
    await runner.cleanup()


async def _read(backend: RemoteBackend) -> tuple[Any, list[bytes]]:
    stream = await backend.stream("/v1/chat/completions", {"messages": [], "stream": True})
    visible = [line async for line in stream.chunks() if not stream.usage_only]
    return stream, visible


async def test_a_peer_without_usage_is_counted_by_text_chunks(
    peer: Callable[[list[dict[str, Any]]], RemoteBackend],
) -> None:
    stream, visible = await _read(peer(NO_USAGE))
    assert stream.finished
    assert stream.usage is None
    assert stream.text_chunks == 3  # the empty first delta carries no text
    assert stream.model == "llama3"
    assert visible[-2:] == [b"data: [DONE]\n", b"\n"]
    assert len([line for line in visible if line.startswith(b"data: ")]) == 5


async def test_the_usage_chunk_is_read_and_can_be_kept_from_the_client(
    peer: Callable[[list[dict[str, Any]]], RemoteBackend],
) -> None:
    stream, visible = await _read(peer(WITH_USAGE))
    assert stream.usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert stream.text_chunks == 3
    assert not any(b'"usage"' in line for line in visible)
    # Its data line and the blank line after it both go: the frames stay well-formed.
    assert b"".join(visible) == _sse(NO_USAGE)
