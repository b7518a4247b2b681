"""The node's event stream (``GET /api/v1/events``, server-sent events) that Home Assistant follows.

Push instead of poll: a watcher samples the node's observable state a few times a second and
publishes an event only when something changed, so an HA entity follows the server within a
fraction of a second while an idle node sends nothing but keep-alives. Each subscriber has a
bounded queue; one that cannot keep up loses old events and is told to resync (``resync``
event), never blocking the server or other subscribers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_LOGGER = logging.getLogger(__name__)

QUEUE_SIZE = 256


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    id: int
    type: str
    data: dict[str, Any]
    at: float = field(default_factory=time.time)


SHUTDOWN = "shutdown"


class Subscription:
    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False

    def offer(self, event: Event) -> None:
        if self.queue.full():
            self.overflowed = True
            self.queue.get_nowait()
        self.queue.put_nowait(event)

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._ids = itertools.count(1)

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def shutdown(self) -> None:
        """Wake every open stream with a ``shutdown`` event so its handler returns.

        Without this, a server stop waits for each long-lived event stream (HA keeps one
        open) until aiohttp's shutdown timeout, and an add-on restart hangs.
        """
        self.publish(SHUTDOWN, {})
        self._subscribers.clear()

    def publish(self, type_: str, data: dict[str, Any]) -> Event:
        event = Event(id=next(self._ids), type=type_, data=data)
        for sub in list(self._subscribers):
            sub.offer(event)
        return event


class StateWatcher:
    """Publishes ``state`` events when the sampled state changes, ``stats`` periodically."""

    def __init__(
        self,
        bus: EventBus,
        sample_state: Callable[[], dict[str, Any]],
        sample_stats: Callable[[], dict[str, Any]],
        *,
        interval: float = 0.2,
        stats_interval: float = 10.0,
    ) -> None:
        self._bus = bus
        self._sample_state = sample_state
        self._sample_stats = sample_stats
        self._interval = interval
        self._stats_interval = stats_interval
        self.last_state: dict[str, Any] | None = None

    async def run(self) -> None:
        last_stats = 0.0
        while True:
            try:
                state = self._sample_state()
                if state != self.last_state:
                    self.last_state = state
                    self._bus.publish("state", state)
                now = time.monotonic()
                if now - last_stats >= self._stats_interval and self._bus.subscriber_count:
                    last_stats = now
                    self._bus.publish("stats", self._sample_stats())
            except Exception:  # a sampling bug must not silence the stream for good
                _LOGGER.exception("Event watcher failed to sample the node state")
            await asyncio.sleep(self._interval)
