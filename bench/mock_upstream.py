"""A fast, deterministic mock OpenAI upstream: the far end of the gateway benchmark.

    scripts/shell python -m bench.mock_upstream --port 18000 [--workers 1]

Raw asyncio protocol (uvloop when installed), HTTP/1.1 keep-alive, no framework: it answers
``GET /v1/models`` and ``POST /v1/chat/completions`` (a fixed completion; ``"stream": true``
gives the same as three SSE chunks and ``[DONE]``) and 404 for anything else. ``--workers N``
starts N processes sharing the port with SO_REUSEPORT. It parses only the request line,
Content-Length and the ``"stream": true`` flag, so it stays far faster than any gateway in
front of it; bench/gateway.py measures its direct capacity first to prove that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
from typing import Final, cast

MODEL: Final = "mock-model"
_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The kitchen light is on."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
).encode()
_MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "mock"}]}
).encode()


def _chunk(delta: dict[str, str], finish: str | None) -> bytes:
    body = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


_STREAM = (
    _chunk({"role": "assistant", "content": "The kitchen "}, None)
    + _chunk({"content": "light is on."}, None)
    + _chunk({}, "stop")
    + b"data: [DONE]\n\n"
)


def _response(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\nConnection: keep-alive\r\n\r\n" + body
    )  # fmt: skip


_OK = _response(b"200 OK", _COMPLETION)
_OK_STREAM = _response(b"200 OK", _STREAM, b"text/event-stream")
_OK_MODELS = _response(b"200 OK", _MODELS)
_NOT_FOUND = _response(b"404 Not Found", b'{"error": {"message": "not found"}}')


class _Http(asyncio.Protocol):
    """One connection: parse pipelined requests from a buffer, answer each at once."""

    def __init__(self) -> None:
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buf[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                line_end = lower.find(b"\r\n", at)
                length = int(lower[at + 15 : line_end if line_end >= 0 else None])
            if len(self._buf) < end + 4 + length:
                return
            body = self._buf[end + 4 : end + 4 + length]
            self._buf = self._buf[end + 4 + length :]
            assert self._transport is not None
            self._transport.write(self._answer(head, body))

    @staticmethod
    def _answer(head: bytes, body: bytes) -> bytes:
        line = head.split(b"\r\n", 1)[0]
        if line.startswith(b"POST /v1/chat/completions"):
            compact = body.replace(b" ", b"")
            return _OK_STREAM if b'"stream":true' in compact else _OK
        if line.startswith(b"GET /v1/models"):
            return _OK_MODELS
        return _NOT_FOUND


def _serve(port: int) -> None:
    try:
        import uvloop  # noqa: PLC0415

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(4096)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Http, sock=sock)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.workers <= 1:
        _serve(args.port)
        return
    procs = [
        multiprocessing.Process(target=_serve, args=(args.port,), daemon=True)
        for _ in range(args.workers)
    ]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()


if __name__ == "__main__":
    main()
