"""The integration's HTTP client against the real server (and raw sockets for broken servers)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import aiohttp
import pytest

from custom_components.prime_spark.client import (
    ChatCompletion,
    ChatCompletionDelta,
    ModelInfo,
    PrimeSpark,
    PrimeSparkAuthenticationError,
    PrimeSparkConnectionError,
    PrimeSparkInvalidResponseError,
    PrimeSparkPermissionError,
    PrimeSparkResponseError,
    PrimeSparkTimeoutError,
    StateEvent,
    StatsEvent,
    Status,
)
from custom_components.prime_spark.client.models import parse_event
from custom_components.prime_spark.client.sse import SSEDecoder
from tests.server.server_process import TOKENS, ServerProcess, free_port

from .helpers import NODE_ID

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
async def session() -> AsyncGenerator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def client(server: ServerProcess, session: aiohttp.ClientSession) -> PrimeSpark:
    return PrimeSpark("127.0.0.1", port=server.port, token=TOKENS["operator"], session=session)


async def drain[T](iterator: AsyncGenerator[T], into: list[T] | None = None) -> list[T]:
    """Read an async generator to its end (closing it on errors too)."""
    items = [] if into is None else into
    async with aclosing(iterator):
        async for item in iterator:
            items.append(item)
    return items


Responder = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(respond: Responder) -> AsyncGenerator[int]:
    """A socket server on 127.0.0.1 that answers every connection with ``respond``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await respond(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def reply(status: str, content_type: str, body: bytes, extra: str = "") -> Responder:
    async def respond(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    return respond


async def test_status(client: PrimeSpark, model_section: dict[str, Any]) -> None:
    status = await client.status()
    assert isinstance(status, Status)
    assert status.node_id == NODE_ID
    assert status.api_version == "1"
    assert status.ready is True
    assert status.state == "ready"
    assert status.default_model == model_section["default"]
    assert model_section["default"] in status.loaded_models
    assert status.slots_total == 2
    assert status.queue_capacity >= 0
    assert status.started_at is not None
    assert status.as_dict()["started_at"] == status.started_at.isoformat()


async def test_models_and_health(client: PrimeSpark, model_section: dict[str, Any]) -> None:
    models = await client.models()
    assert models.default == model_section["default"]
    (ours,) = [m for m in models.models if m.id == model_section["default"]]
    assert ours.loaded is True
    assert ours.size_bytes > 100_000_000
    assert await client.health() is True


async def test_reload_model(client: PrimeSpark, model_section: dict[str, Any]) -> None:
    info = await client.reload_model(model_section["default"])
    assert isinstance(info, ModelInfo)
    assert info.loaded is True


async def test_reload_unknown_model(client: PrimeSpark) -> None:
    with pytest.raises(PrimeSparkResponseError) as err:
        await client.reload_model("no/such model")
    assert err.value.status == 404
    assert err.value.code == "model_not_found"


async def test_wrong_token(server: ServerProcess, session: aiohttp.ClientSession) -> None:
    client = PrimeSpark("127.0.0.1", port=server.port, token="wrong", session=session)
    with pytest.raises(PrimeSparkAuthenticationError):
        await client.status()
    with pytest.raises(PrimeSparkAuthenticationError):
        async with aclosing(client.events()) as events:
            await anext(events)


async def test_reader_token_cannot_reload(
    server: ServerProcess, session: aiohttp.ClientSession, model_section: dict[str, Any]
) -> None:
    client = PrimeSpark("127.0.0.1", port=server.port, token=TOKENS["reader"], session=session)
    assert (await client.status()).node_id == NODE_ID
    with pytest.raises(PrimeSparkPermissionError):
        await client.reload_model(model_section["default"])


async def test_closed_port() -> None:
    async with PrimeSpark("127.0.0.1", port=free_port(), token="x") as client:
        with pytest.raises(PrimeSparkConnectionError) as err:
            await client.status()
        assert not isinstance(err.value, PrimeSparkTimeoutError)
        with pytest.raises(PrimeSparkConnectionError):
            async with aclosing(client.events()) as events:
                await anext(events)
    assert client.session is None


async def test_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await reader.read()

    async with (
        raw_server(silent) as port,
        PrimeSpark("127.0.0.1", port=port, request_timeout=0.2) as client,
    ):
        with pytest.raises(PrimeSparkTimeoutError):
            await client.status()
        with pytest.raises(PrimeSparkTimeoutError):
            async with aclosing(client.events()) as events:
                await anext(events)


@pytest.mark.parametrize(
    ("responder", "error"),
    [
        (reply("200 OK", "text/html", b"<html></html>"), PrimeSparkInvalidResponseError),
        (reply("200 OK", "application/json", b"{nope"), PrimeSparkInvalidResponseError),
        (reply("200 OK", "application/json", b"[]"), PrimeSparkInvalidResponseError),
        (reply("502 Bad Gateway", "text/plain", b"upstream down"), PrimeSparkResponseError),
        (reply("500 Internal Server Error", "text/plain", b""), PrimeSparkResponseError),
    ],
)
async def test_broken_server(responder: Responder, error: type[Exception]) -> None:
    async with raw_server(responder) as port, PrimeSpark("127.0.0.1", port=port) as client:
        with pytest.raises(error):
            await client.status()


async def test_error_details() -> None:
    body = json.dumps({"error": {"message": "busy", "type": "x", "code": "queue_full"}}).encode()
    responder = reply("429 Too Many Requests", "application/json", body, "Retry-After: 3\r\n")
    async with raw_server(responder) as port, PrimeSpark("127.0.0.1", port=port) as client:
        with pytest.raises(PrimeSparkResponseError) as err:
            await client.models()
    assert (err.value.status, err.value.code, err.value.retry_after) == (429, "queue_full", 3.0)
    assert err.value.message == "busy"
    async with (
        raw_server(reply("503 Service Unavailable", "text/plain", b"")) as port,
        PrimeSpark("127.0.0.1", port=port) as client,
    ):
        assert await client.health() is False
    async with (
        raw_server(reply("404 Not Found", "text/plain", b"no")) as port,
        PrimeSpark("127.0.0.1", port=port) as client,
    ):
        with pytest.raises(PrimeSparkResponseError):
            await client.health()


async def test_events(client: PrimeSpark) -> None:
    async with aclosing(client.events()) as events:
        first = await anext(events)
        second = await anext(events)
    assert isinstance(first, StateEvent)
    assert first.resync is False
    assert first.state.ready is True
    assert first.state.slots_total == 2
    assert isinstance(second, StatsEvent)
    assert second.stats.requests_total >= 0


async def test_events_idle_timeout(client: PrimeSpark) -> None:
    """The server goes quiet between keep-alives: a short idle timeout notices the silence."""
    with pytest.raises(PrimeSparkTimeoutError):
        await drain(client.events(idle_timeout=0.5))


async def test_events_not_a_stream() -> None:
    async with (
        raw_server(reply("200 OK", "application/json", b"{}")) as port,
        PrimeSpark("127.0.0.1", port=port) as client,
    ):
        with pytest.raises(PrimeSparkInvalidResponseError):
            async with aclosing(client.events()) as events:
                await anext(events)


async def test_events_end_and_unknown_types() -> None:
    body = (
        b"retry: 2000\n\n: comment\n\nevent: future\ndata: {}\n\n"
        b'id: 7\nevent: resync\ndata: {"ready":false,"state":"loading","reason":"x",'
        b'"loaded_models":[],"slots_busy":0,"slots_total":1,"queue_depth":0}\n\n'
    )
    async with (
        raw_server(reply("200 OK", "text/event-stream", body)) as port,
        PrimeSpark("127.0.0.1", port=port) as client,
    ):
        received = [event async for event in client.events()]
    assert len(received) == 1
    assert isinstance(received[0], StateEvent)
    assert (received[0].id, received[0].resync, received[0].state.state) == (7, True, "loading")


async def test_events_invalid_json() -> None:
    body = b"event: state\ndata: {not json\n\n"
    async with (
        raw_server(reply("200 OK", "text/event-stream", body)) as port,
        PrimeSpark("127.0.0.1", port=port) as client,
    ):
        with pytest.raises(PrimeSparkInvalidResponseError):
            await drain(client.events())


async def test_events_error_body_cut_short() -> None:
    async def cut(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\nshort")
        await writer.drain()

    async with raw_server(cut) as port, PrimeSpark("127.0.0.1", port=port) as client:
        with pytest.raises(PrimeSparkConnectionError):
            await drain(client.events())


async def test_events_broken_stream() -> None:
    async def broken(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\n: hi\n\r\nzz"
        )
        await writer.drain()

    async with raw_server(broken) as port, PrimeSpark("127.0.0.1", port=port) as client:
        with pytest.raises(PrimeSparkConnectionError):
            await drain(client.events())


async def test_chat_completion(client: PrimeSpark) -> None:
    completion = await client.chat_completion(
        [{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0.0, seed=1
    )
    assert completion.message.role == "assistant"
    assert completion.message.content
    assert completion.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0
    assert completion.system_fingerprint


async def test_chat_completion_stream(client: PrimeSpark) -> None:
    deltas: list[ChatCompletionDelta] = [
        delta
        async for delta in client.chat_completion_stream(
            [{"role": "user", "content": "Count to five."}], max_tokens=16, temperature=0.0
        )
    ]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas)
    assert any(d.finish_reason for d in deltas)
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.completion_tokens > 0


async def test_chat_tool_call(client: PrimeSpark) -> None:
    completion = await client.chat_completion(
        QUESTION, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=48, temperature=0.0
    )
    assert completion.finish_reason == "tool_calls"
    (call,) = completion.message.tool_calls
    assert call.name == "get_weather"
    assert isinstance(json.loads(call.arguments), dict)


async def test_chat_tool_call_stream(client: PrimeSpark) -> None:
    deltas = [
        delta
        async for delta in client.chat_completion_stream(
            QUESTION, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=48, temperature=0.0
        )
    ]
    calls = [call for delta in deltas for call in delta.tool_calls]
    assert [(c.index, c.name) for c in calls] == [(0, "get_weather")]
    assert calls[0].id
    assert isinstance(json.loads(calls[0].arguments or ""), dict)
    assert deltas[-1].usage is not None


async def test_chat_errors(client: PrimeSpark) -> None:
    with pytest.raises(PrimeSparkResponseError) as err:
        await client.chat_completion([{"role": "nobody", "content": "x"}])
    assert err.value.status == 400
    with pytest.raises(PrimeSparkResponseError) as err:
        await drain(client.chat_completion_stream(QUESTION, model="missing"))
    assert err.value.status == 404


async def test_chat_error_mid_stream() -> None:
    body = (
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
        b'"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"engine failed","type":"server_error","code":"engine_error"}}'
        b"\n\n"
    )
    async with (
        raw_server(reply("200 OK", "text/event-stream", body)) as port,
        PrimeSpark("127.0.0.1", port=port) as client,
    ):
        received: list[ChatCompletionDelta] = []
        with pytest.raises(PrimeSparkResponseError) as err:
            await drain(client.chat_completion_stream(QUESTION), received)
    assert [d.content for d in received] == ["Hi"]
    assert err.value.code == "engine_error"


def test_sse_decoder() -> None:
    decoder = SSEDecoder()
    chunks = [b"retry: 1500\r", b"\nid: 3\r\nevent: st", b"ate\ndata: a\ndata: b\n", b"\n"]
    messages = [m for chunk in chunks for m in decoder.feed(chunk)]
    assert [(m.event, m.data, m.id) for m in messages] == [("state", "a\nb", "3")]
    assert decoder.retry_ms == 1500
    assert list(decoder.feed(b"event: x\n\n: keep-alive\n\ndata\n\n")) == [
        type(messages[0])(event="message", data="", id="3")
    ]


@pytest.mark.parametrize(
    "broken",
    [
        {"node_id": 1},
        {"slots": {"total": True, "busy": 0}},
        {"state": "exploded"},
        {"models": [{"id": "m"}]},
        {"stats": None},
        "not an object",
    ],
)
def test_status_validation(broken: Any) -> None:
    status: dict[str, Any] = {
        "node_id": "n",
        "version": "1",
        "api_version": "1",
        "uptime_seconds": 1,
        "ready": True,
        "state": "ready",
        "models": [],
        "slots": {"total": 1, "busy": 0},
        "queue": {"depth": 0, "capacity": 1},
        "stats": {
            "requests_per_minute": 0,
            "errors_per_minute": 0,
            "latency_p50_ms": None,
            "latency_p95_ms": 1,
            "tokens_per_second": None,
            "generated_tokens_total": 0,
            "requests_total": 0,
        },
    }
    parsed = Status.from_dict(status)
    assert parsed.started_at is None
    assert parsed.stats.latency_p95_ms == 1.0
    with pytest.raises(PrimeSparkInvalidResponseError):
        Status.from_dict(broken if isinstance(broken, str) else {**status, **broken})


def test_chat_and_event_validation() -> None:
    with pytest.raises(PrimeSparkInvalidResponseError):
        ChatCompletion.from_dict({"id": "x", "model": "m", "choices": []})
    with pytest.raises(PrimeSparkInvalidResponseError):
        parse_event("state", None, {"ready": True, "state": "ready", "loaded_models": [1]})
    assert parse_event("future", None, {}) is None
    assert ChatCompletionDelta.from_dict({"id": "x", "choices": [{"index": 0}]}) == (
        ChatCompletionDelta()
    )
