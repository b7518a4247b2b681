"""A small decoder for server-sent events (the ``text/event-stream`` format).

Used for both streams the server offers: the control plane's ``/api/v1/events`` (named events,
ids, comments as keep-alives) and OpenAI-style streamed completions (``data:`` lines only).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class SSEMessage:
    """One dispatched event."""

    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Feed bytes as they arrive; complete events come out.

    Follows the WHATWG rules that matter here: lines end in LF, CRLF or CR; ``:`` starts a
    comment; ``data`` lines are joined with LF; a blank line dispatches; an event without data is
    dropped; the event type defaults to ``message``.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.retry_ms: int | None = None
        """The server's last ``retry`` hint, in milliseconds."""

    def feed(self, chunk: bytes) -> Iterator[SSEMessage]:
        text = chunk.decode("utf-8", errors="replace")
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across two chunks
        self._pending_cr = text.endswith("\r")
        self._buffer += text
        lines = self._buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buffer = lines.pop()
        for line in lines:
            if (message := self._line(line)) is not None:
                yield message

    def _line(self, line: str) -> SSEMessage | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            self._id = value
        elif field == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        if not self._data:
            self._event = ""
            return None
        message = SSEMessage(
            event=self._event or "message", data="\n".join(self._data), id=self._id
        )
        self._event = ""
        self._data = []
        return message
