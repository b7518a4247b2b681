"""The ``remote`` backend: any OpenAI-compatible upstream (a cloud Prime Spark node, Ollama, vLLM).

Why this is not a :class:`~inference_server.backends.base.TextBackend`: that contract takes a
prompt already rendered through the *local* model's chat template, which is meaningless for a
model the edge does not have. A peer renders its own template, so the remote backend works one
level up: it forwards the OpenAI request body (``messages``, ``tools``...) and passes the answer
back untouched, usage included. Streams are passed through byte for byte.

The failure split is what the router needs: :class:`UpstreamError` (connection refused, timeout,
5xx, a stream cut short) counts against the peer's circuit breaker and may fall back to the edge
before the first byte reached the client; :class:`UpstreamBusy` (429) falls back without
counting as a failure; :class:`UpstreamRejected` (any other 4xx) is the client's own mistake and
is returned as the peer wrote it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from inference_server.config import PeerSettings

FORWARDED_HEADER: Final = "X-Prime-Spark-Forwarded"
"""Set on requests a node forwards, to the forwarding node's id: the receiving node serves them
itself (no routing loops) and records them as served for that node (no double counting)."""
FORWARDED_MAX_LENGTH: Final = 64
"""A node id's longest (the analytics schemas' ``node_id``)."""

_ERROR_BODY_LIMIT = 64 * 1024


class UpstreamError(Exception):
    """The peer failed (unreachable, timed out, 5xx, cut mid-stream): a breaker failure."""

    def __init__(self, peer: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"The cloud peer '{peer}' {message}")
        self.peer = peer
        self.status = status


class UpstreamBusy(UpstreamError):
    """The peer answered 429: try elsewhere, but the peer is healthy."""


class UpstreamRejected(Exception):
    """The peer refused the request itself (4xx other than 429): the client's mistake."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body


@dataclass(frozen=True, kw_only=True, slots=True)
class Probe:
    """One health check: how long ``GET /v1/models`` took and what the peer serves."""

    latency: float
    models: tuple[str, ...]
    slots_total: int | None = None
    """Only Prime Spark peers report these (``/api/v1/status``); None elsewhere."""
    slots_busy: int | None = None
    queue_depth: int | None = None


class RemoteStream:
    """An upstream SSE response that has produced its first bytes.

    The router opens the stream and waits for the first chunk *before* answering the client, so
    a peer that fails to start still lets the request fall back to the edge.

    Every line is looked at on its way through, for the inference record: the peer's ``usage``
    chunk (the router asks OpenAI-compatible peers for one with ``stream_options``), the model
    that answered, and, for a peer that sends no usage, how many chunks carried text, one token
    each in every server we know; that count is the fallback (it undercounts a peer that packs
    several tokens into one chunk, and knows nothing of the prompt).
    """

    def __init__(
        self, peer: str, response: aiohttp.ClientResponse, first: bytes, first_byte_seconds: float
    ) -> None:
        self._peer = peer
        self._response = response
        self.first = first
        self.first_byte_seconds = first_byte_seconds
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.text_chunks = 0
        """Chunks (choices, with ``n`` > 1) that carried text or a tool call."""
        self.usage_only = False
        """The line just yielded is the usage chunk (no choices) or the blank line ending it:
        a client that did not ask for usage must not see it."""
        self.finished = False
        """True once ``data: [DONE]`` went through: the stream was complete."""

    async def chunks(self) -> AsyncIterator[bytes]:
        """The first line, then every further line as it arrives (SSE framing kept)."""
        try:
            line = self.first
            while line:
                self._inspect(line)
                yield line
                line = await self._response.content.readline()
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as err:
            raise UpstreamError(self._peer, f"cut the stream short ({_describe(err)})") from err
        finally:
            self._response.release()
        if not self.finished:
            raise UpstreamError(self._peer, "ended the stream before it was complete")

    def _inspect(self, line: bytes) -> None:
        if not line.startswith(b"data: "):
            # The blank line that ends an SSE event goes (or not) with its data line.
            self.usage_only = self.usage_only and not line.strip()
            return
        self.usage_only = False
        if line.startswith(b"data: [DONE]"):
            self.finished = True
            return
        try:
            chunk = json.loads(line[6:])
        except ValueError:
            return
        if not isinstance(chunk, dict):
            return
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        if not choices and isinstance(usage, dict):
            self.usage_only = True
        for choice in choices:
            if isinstance(choice, dict) and _carries_text(choice):
                self.text_chunks += 1

    def close(self) -> None:
        self._response.close()


def _carries_text(choice: dict[str, Any]) -> bool:
    """A chat ``delta`` with content or tool calls, or a completion ``text``."""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("tool_calls"))
    return bool(choice.get("text"))


class RemoteBackend:
    """Talks to one peer over a shared :class:`aiohttp.ClientSession`."""

    def __init__(self, peer: PeerSettings, session: aiohttp.ClientSession, node_id: str) -> None:
        self.peer = peer
        self._session = session
        self._node_id = node_id

    @property
    def name(self) -> str:
        return self.peer.name

    def _headers(self) -> dict[str, str]:
        headers = {FORWARDED_HEADER: self._node_id}
        if self.peer.token:
            headers["Authorization"] = f"Bearer {self.peer.token}"
        return headers

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.peer.timeout, sock_connect=self.peer.connect_timeout
        )

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming call: chat completions, completions or embeddings."""
        try:
            async with self._session.post(
                self.peer.url + path, json=body, headers=self._headers(), timeout=self._timeout()
            ) as response:
                await self._check(response)
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as err:
            raise UpstreamError(self.name, f"did not answer ({_describe(err)})") from err
        except ValueError as err:
            raise UpstreamError(self.name, "answered with invalid JSON") from err
        if not isinstance(data, dict):
            raise UpstreamError(self.name, "answered with something other than a JSON object")
        return data

    async def post_bytes(self, path: str, data: bytes, *, params: dict[str, str]) -> dict[str, Any]:
        """A raw body (an image for the peer's vision route) in, a JSON object out."""
        headers = {**self._headers(), "Content-Type": "application/octet-stream"}
        try:
            async with self._session.post(
                self.peer.url + path,
                data=data,
                params=params,
                headers=headers,
                timeout=self._timeout(),
            ) as response:
                await self._check(response)
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as err:
            raise UpstreamError(self.name, f"did not answer ({_describe(err)})") from err
        except ValueError as err:
            raise UpstreamError(self.name, "answered with invalid JSON") from err
        if not isinstance(body, dict):
            raise UpstreamError(self.name, "answered with something other than a JSON object")
        return body

    async def stream(self, path: str, body: dict[str, Any]) -> RemoteStream:
        """Open a streamed call and read its first line (bounded by ``first_byte_timeout``)."""
        started = time.monotonic()
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(self.peer.first_byte_timeout):
                response = await self._session.post(
                    self.peer.url + path,
                    json=body,
                    headers=self._headers(),
                    timeout=self._timeout(),
                )
                await self._check(response)
                first = await response.content.readline()
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as err:
            if response is not None:
                response.close()
            raise UpstreamError(self.name, f"did not start the stream ({_describe(err)})") from err
        except BaseException:
            if response is not None:
                response.close()
            raise
        if not first:
            response.close()
            raise UpstreamError(self.name, "closed the stream before its first byte")
        return RemoteStream(self.name, response, first, time.monotonic() - started)

    async def _check(self, response: aiohttp.ClientResponse) -> None:
        if response.status < 400:
            return
        text = (await response.content.read(_ERROR_BODY_LIMIT)).decode("utf-8", "replace")
        response.release()
        if response.status == 429:
            raise UpstreamBusy(self.name, "is busy (429)", status=429)
        if response.status >= 500:
            raise UpstreamError(
                self.name, f"failed with HTTP {response.status}", status=response.status
            )
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if not isinstance(body, dict) or "error" not in body:
            body = {
                "error": {
                    "message": text.strip() or response.reason or "rejected by the cloud peer",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "upstream_rejected",
                }
            }
        if response.status in (401, 403):
            # Our token for the peer is wrong: that is an operator's problem, not the client's.
            raise UpstreamError(
                self.name, f"refused our token (HTTP {response.status})", status=response.status
            )
        raise UpstreamRejected(response.status, body)

    async def probe(self) -> Probe:
        """``GET /v1/models`` (every OpenAI-compatible server has it), then Prime Spark's status."""
        timeout = aiohttp.ClientTimeout(
            total=self.peer.connect_timeout + 5, sock_connect=self.peer.connect_timeout
        )
        started = time.monotonic()
        try:
            async with self._session.get(
                self.peer.url + "/v1/models", headers=self._headers(), timeout=timeout
            ) as response:
                await self._check(response)
                data = await response.json(content_type=None)
            latency = time.monotonic() - started
            models = tuple(
                str(m["id"])
                for m in (data.get("data") or [])
                if isinstance(m, dict) and isinstance(m.get("id"), str)
            )
            async with self._session.get(
                self.peer.url + "/api/v1/status", headers=self._headers(), timeout=timeout
            ) as response:
                status = await response.json(content_type=None) if response.status == 200 else {}
        except UpstreamRejected as err:
            raise UpstreamError(
                self.name, f"refused the health check (HTTP {err.status})", status=err.status
            ) from err
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as err:
            raise UpstreamError(self.name, f"is unreachable ({_describe(err)})") from err
        except (ValueError, AttributeError) as err:
            raise UpstreamError(self.name, "answered the health check with invalid JSON") from err
        slots = status.get("slots") if isinstance(status, dict) else None
        queue = status.get("queue") if isinstance(status, dict) else None
        return Probe(
            latency=latency,
            models=models,
            slots_total=_int_or_none(slots, "total"),
            slots_busy=_int_or_none(slots, "busy"),
            queue_depth=_int_or_none(queue, "depth"),
        )


def _int_or_none(block: Any, key: str) -> int | None:
    if isinstance(block, dict) and isinstance(block.get(key), int):
        return int(block[key])
    return None


def _describe(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timed out"
    text = str(err) or type(err).__name__
    return text if len(text) < 200 else text[:197] + "..."
