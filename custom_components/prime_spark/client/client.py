"""Asynchronous client for the Prime Spark node's HTTP API."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack
from urllib.parse import quote

import aiohttp
from yarl import URL

from .analytics import AnalyticsSummary, AnalyticsWindow
from .exceptions import (
    PrimeSparkAuthenticationError,
    PrimeSparkConnectionError,
    PrimeSparkError,
    PrimeSparkInvalidResponseError,
    PrimeSparkPermissionError,
    PrimeSparkResponseError,
    PrimeSparkTimeoutError,
)
from .models import (
    ChatCompletion,
    ChatCompletionDelta,
    ModelInfo,
    ModelList,
    Power,
    Routing,
    ServerEvent,
    Status,
    parse_event,
)
from .sse import SSEDecoder, SSEMessage
from .vision import Detections, LinkStatus

DEFAULT_PORT = 8780
API_BASE = "/api/v1"
SUPPORTED_API_VERSION = "1"
"""The control-plane API version (``api_version`` in the status) this client speaks."""

EVENT_STREAM_IDLE_TIMEOUT = 45.0
"""The server sends a keep-alive every 15 s; three missed ones mean the stream is dead."""
RELOAD_TIMEOUT = 300.0
"""Reloading answers once the model is ready again: minutes for a large model on a Pi."""
CHAT_TIMEOUT = 120.0
DETECT_TIMEOUT = 60.0
"""Detection on a Pi's CPU takes a second or two; a busy node queues it."""


class ChatOptions(TypedDict, total=False):
    """Optional fields of an OpenAI chat completion request the server supports."""

    model: str
    max_tokens: int
    temperature: float
    top_p: float
    stop: str | list[str]
    seed: int
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    response_format: dict[str, Any]
    user: str
    private: bool
    """Serve on the node itself or fail: never sent to one of its cloud peers."""


@dataclass
class PrimeSpark:
    """Talks to one Prime Spark node: status, models, the event stream and chat completions.

    Pass Home Assistant's shared ``aiohttp`` session as ``session``; without one the client
    creates its own and closes it in :meth:`close` (or when used as an async context manager).
    """

    host: str
    port: int = DEFAULT_PORT
    token: str | None = field(default=None, repr=False)
    request_timeout: float = 10.0
    session: aiohttp.ClientSession | None = None

    _close_session: bool = field(default=False, init=False, repr=False)

    @property
    def base_url(self) -> URL:
        """The node's root URL."""
        return URL.build(scheme="http", host=self.host, port=self.port)

    def _url(self, *segments: str) -> URL:
        """The URL of ``segments`` joined as a path, each segment percent-encoded."""
        path = "/".join(quote(segment, safe="") for segment in segments)
        return self.base_url.with_path(f"/{path}", encoded=True)

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession()
            self._close_session = True
        return self.session

    async def _request(
        self,
        method: str,
        url: URL,
        *,
        body: Mapping[str, Any] | None = None,
        request_timeout: float | None = None,
        data: bytes | None = None,
    ) -> Any:
        """One request; returns the decoded JSON body or raises the matching client error."""
        session = self._get_session()
        try:
            async with asyncio.timeout(request_timeout or self.request_timeout):
                async with session.request(
                    method,
                    url,
                    json=body,
                    data=data,
                    headers=self._headers("application/json"),
                ) as response:
                    data = await _read_body(response)
                    if response.status >= 400:
                        raise _error_from(response.status, data, response.headers)
                    return data
        except TimeoutError as err:
            raise PrimeSparkTimeoutError(f"Timeout while talking to {url}") from err
        except (aiohttp.ClientError, socket.gaierror) as err:
            raise PrimeSparkConnectionError(f"Error while talking to {url}: {err}") from err

    async def _stream(
        self,
        method: str,
        url: URL,
        *,
        body: Mapping[str, Any] | None = None,
        open_timeout: float,
        idle_timeout: float,
    ) -> AsyncGenerator[SSEMessage]:
        """Open an event stream and yield its messages until the server ends it.

        ``open_timeout`` bounds the wait for the response to start, ``idle_timeout`` the silence
        between two chunks. Leaving early (``aclosing`` or cancellation) closes the connection.
        """
        session = self._get_session()
        try:
            async with asyncio.timeout(open_timeout):
                response = await session.request(
                    method,
                    url,
                    json=body,
                    headers=self._headers("text/event-stream"),
                    timeout=aiohttp.ClientTimeout(total=None),
                )
        except TimeoutError as err:
            raise PrimeSparkTimeoutError(f"Timeout while opening {url}") from err
        except (aiohttp.ClientError, socket.gaierror) as err:
            raise PrimeSparkConnectionError(f"Error while opening {url}: {err}") from err
        try:
            if response.status >= 400:
                try:
                    async with asyncio.timeout(open_timeout):
                        data = await _read_body(response)
                except (TimeoutError, aiohttp.ClientError) as err:
                    raise PrimeSparkConnectionError(f"Error while reading {url}: {err}") from err
                raise _error_from(response.status, data, response.headers)
            if response.content_type != "text/event-stream":
                raise PrimeSparkInvalidResponseError(
                    f"{url} answered {response.content_type}, not an event stream",
                    status=response.status,
                )
            decoder = SSEDecoder()
            chunks = response.content.iter_any()
            while True:
                try:
                    async with asyncio.timeout(idle_timeout):
                        chunk = await anext(chunks, None)
                except TimeoutError as err:
                    raise PrimeSparkTimeoutError(
                        f"No data from {url} for {idle_timeout:.0f} s"
                    ) from err
                except aiohttp.ClientError as err:
                    raise PrimeSparkConnectionError(f"Stream {url} broke: {err}") from err
                if chunk is None:
                    return
                for message in decoder.feed(chunk):
                    yield message
        finally:
            response.close()

    async def health(self) -> bool:
        """``GET /health`` (no token needed): ready to serve, or still loading."""
        try:
            await self._request("GET", self._url("health"))
        except PrimeSparkResponseError as err:
            if err.status == 503:
                return False
            raise
        return True

    async def status(self) -> Status:
        """``GET /api/v1/status``: identity, state, models, slots, queue and statistics."""
        return Status.from_dict(await self._request("GET", self._url("api", "v1", "status")))

    async def analytics_summary(self, window: AnalyticsWindow = "1h") -> AnalyticsSummary:
        """``GET /api/v1/analytics/summary``: one window's analytics and the pipeline's health."""
        url = self._url("api", "v1", "analytics", "summary").with_query(window=window)
        return AnalyticsSummary.from_dict(await self._request("GET", url))

    async def models(self) -> ModelList:
        """``GET /api/v1/models``: every model the node knows."""
        return ModelList.from_dict(await self._request("GET", self._url("api", "v1", "models")))

    async def reload_model(
        self, model_id: str, *, request_timeout: float = RELOAD_TIMEOUT
    ) -> ModelInfo:
        """Load a model, or unload and load it again; returns once it is ready (operator role)."""
        url = self._url("api", "v1", "models", model_id, "reload")
        return ModelInfo.from_dict(
            await self._request("POST", url, request_timeout=request_timeout)
        )

    async def routing(self) -> Routing:
        """``GET /api/v1/routing``: the routing mode, the cloud peers and the last decision."""
        return Routing.from_dict(await self._request("GET", self._url("api", "v1", "routing")))

    async def set_routing_mode(self, mode: str) -> Routing:
        """``PUT /api/v1/routing``: edge_first, cloud_first or balanced (operator role)."""
        url = self._url("api", "v1", "routing")
        return Routing.from_dict(await self._request("PUT", url, body={"mode": mode}))

    async def power(self) -> Power:
        """``GET /api/v1/power``: the power mode, its limits and the power draw."""
        return Power.from_dict(await self._request("GET", self._url("api", "v1", "power")))

    async def set_power_mode(self, mode: str) -> Power:
        """``PUT /api/v1/power``: performance, balanced, power_save or critical (operator role)."""
        url = self._url("api", "v1", "power")
        return Power.from_dict(await self._request("PUT", url, body={"mode": mode}))

    async def events(
        self, *, idle_timeout: float = EVENT_STREAM_IDLE_TIMEOUT
    ) -> AsyncGenerator[ServerEvent]:
        """Follow ``GET /api/v1/events``: a state snapshot at once, then every change.

        Ends when the server closes the stream; raises :class:`PrimeSparkTimeoutError` when it
        goes silent (no keep-alive) for ``idle_timeout`` seconds.
        """
        url = self._url("api", "v1", "events")
        async for message in self._stream(
            "GET", url, open_timeout=self.request_timeout, idle_timeout=idle_timeout
        ):
            event_id = int(message.id) if message.id and message.id.isdigit() else None
            if (event := parse_event(message.event, event_id, _json(message.data))) is not None:
                yield event

    async def chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        request_timeout: float = CHAT_TIMEOUT,
        **options: Unpack[ChatOptions],
    ) -> ChatCompletion:
        """``POST /v1/chat/completions``: the whole answer at once (operator role)."""
        body = _chat_body(messages, options, stream=False)
        data = await self._request(
            "POST",
            self._url("v1", "chat", "completions"),
            body=body,
            request_timeout=request_timeout,
        )
        return ChatCompletion.from_dict(data)

    async def chat_completion_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        request_timeout: float = CHAT_TIMEOUT,
        **options: Unpack[ChatOptions],
    ) -> AsyncGenerator[ChatCompletionDelta]:
        """``POST /v1/chat/completions`` with ``stream``: content and tool-call deltas as they come.

        The last deltas carry the ``finish_reason`` and the ``usage``. An error the server reports
        after the stream started is raised as :class:`PrimeSparkResponseError`.
        """
        body = _chat_body(messages, options, stream=True)
        url = self._url("v1", "chat", "completions")
        async for message in self._stream(
            "POST", url, body=body, open_timeout=request_timeout, idle_timeout=request_timeout
        ):
            if message.data == "[DONE]":
                return
            data = _json(message.data)
            if isinstance(data, dict) and "error" in data:
                raise _error_from(200, data, {})
            yield ChatCompletionDelta.from_dict(data)

    async def detect(
        self,
        image: bytes,
        *,
        min_score: float | None = None,
        request_timeout: float = DETECT_TIMEOUT,
    ) -> Detections:
        """``POST /api/v1/vision/detect``: objects in a JPEG/PNG image (operator role)."""
        url = self._url("api", "v1", "vision", "detect")
        if min_score is not None:
            url = url.with_query(min_score=str(min_score))
        return Detections.from_dict(
            await self._request("POST", url, data=image, request_timeout=request_timeout)
        )

    async def link(self) -> LinkStatus:
        """``GET /api/v1/link``: the WireGuard link to the cloud peers."""
        return LinkStatus.from_dict(await self._request("GET", self._url("api", "v1", "link")))

    # ------------------------------------------------------------------ memory

    async def memory_status(self) -> dict[str, Any]:
        """``GET /api/v1/memory/status``: the tiers, the mover and the response cache."""
        data: dict[str, Any] = await self._request(
            "GET", self._url("api", "v1", "memory", "status")
        )
        return data

    async def memory_store(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        ttl_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Store an item (operator role); returns it with the tier it landed in."""
        body: dict[str, Any] = {"value": value, "tags": list(tags)}
        body["metadata"] = dict(metadata or {})
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        url = self._url("api", "v1", "memory", "items", namespace, key)
        data: dict[str, Any] = await self._request("PUT", url, body=body)
        return data

    async def memory_get(self, namespace: str, key: str) -> dict[str, Any] | None:
        """One item, or ``None`` when the namespace has no such key."""
        url = self._url("api", "v1", "memory", "items", namespace, key)
        try:
            data: dict[str, Any] = await self._request("GET", url)
        except PrimeSparkResponseError as err:
            if err.status == 404:
                return None
            raise
        return data

    async def memory_search(
        self, namespace: str, query: str, *, top_k: int = 5, min_score: float = 0.0
    ) -> list[dict[str, Any]]:
        """Items of a namespace by meaning, best first, each with its ``score``."""
        body = {"namespace": namespace, "query": query, "top_k": top_k, "min_score": min_score}
        data = await self._request("POST", self._url("api", "v1", "memory", "search"), body=body)
        results: list[dict[str, Any]] = data["results"]
        return results

    async def memory_forget(self, namespace: str, key: str) -> bool:
        """Delete an item from every tier; ``False`` when there was none (operator role)."""
        url = self._url("api", "v1", "memory", "items", namespace, key)
        try:
            await self._request("DELETE", url)
        except PrimeSparkResponseError as err:
            if err.status == 404:
                return False
            raise
        return True

    async def flush_response_cache(self) -> int:
        """Empty the node's response cache (operator role); returns the entries dropped."""
        data = await self._request("DELETE", self._url("api", "v1", "memory", "cache"))
        return int(data["flushed"])

    async def close(self) -> None:
        """Close the session if the client created it."""
        if self.session is not None and self._close_session:
            await self.session.close()
            self.session = None
            self._close_session = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _chat_body(
    messages: Sequence[Mapping[str, Any]], options: ChatOptions, *, stream: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [dict(m) for m in messages]}
    body.update({key: value for key, value in options.items() if value is not None})
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise PrimeSparkInvalidResponseError(f"Invalid JSON from the server: {err}") from err


async def _read_body(response: aiohttp.ClientResponse) -> Any:
    """The JSON body, or the text when the server did not send JSON (proxies, errors)."""
    text = await response.text()
    if response.content_type == "application/json":
        try:
            return json.loads(text)
        except ValueError as err:
            raise PrimeSparkInvalidResponseError(
                f"Invalid JSON from the server: {err}", status=response.status
            ) from err
    if response.status < 400:
        raise PrimeSparkInvalidResponseError(
            f"Expected JSON, got {response.content_type}", status=response.status
        )
    return text


def _error_from(status: int, data: Any, headers: Mapping[str, str]) -> PrimeSparkError:
    """The client error for an error answer (OpenAI's ``{"error": {...}}`` shape)."""
    message, code = f"HTTP {status}", None
    if isinstance(data, dict) and isinstance(error := data.get("error"), dict):
        message = str(error.get("message") or message)
        code = error.get("code") if isinstance(error.get("code"), str) else None
    elif isinstance(data, str) and data.strip():
        message = data.strip()[:200]
    if status == 401:
        return PrimeSparkAuthenticationError(message)
    if status == 403:
        return PrimeSparkPermissionError(message)
    retry_after = headers.get("Retry-After")
    return PrimeSparkResponseError(
        message,
        status=status,
        code=code,
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )
