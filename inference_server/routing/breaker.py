"""A circuit breaker per upstream: closed → open after failures → half-open probe → closed.

LiteLLM's most reported routing problem is that a deployment with a single upstream is never
cooled down, so during an outage every request waits for the timeout. Here even a lone peer is
taken out of rotation after ``failure_threshold`` consecutive failures: requests go to the edge at
once (reason ``edge: cloud breaker open``) until ``cooldown`` has passed. Then exactly one call -
a real request or the background health check, whichever comes first - is let through
(half-open); its success closes the breaker, its failure opens it again for another cooldown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        """The state as a caller would find it now (open turns half-open once cooled down)."""
        if self._state == "open" and self._clock() - self._opened_at >= self._cooldown:
            self._set("half_open")
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self._cooldown - (self._clock() - self._opened_at))

    def available(self) -> bool:
        """Whether a request may be sent without taking the half-open probe."""
        return self.state == "closed"

    def probe_free(self) -> bool:
        return self.state == "half_open" and not self._probing

    def try_acquire_probe(self) -> bool:
        """In half-open, the first caller gets the single probe; everyone else is refused."""
        if self.state != "half_open" or self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        self.last_error = None
        if self._state != "closed":
            self._set("closed")

    def record_failure(self, error: str) -> None:
        self._failures += 1
        self._probing = False
        self.last_error = error
        state = self.state
        # A late failure of a call sent before the breaker opened does not extend the cooldown.
        if state == "half_open" or (state == "closed" and self._failures >= self._threshold):
            self._opened_at = self._clock()
            self._set("open")

    def release_probe(self) -> None:
        """The probe ended without a verdict (the client left): let another one through."""
        self._probing = False

    def _set(self, state: BreakerState) -> None:
        old, self._state = self._state, state
        if old != state and self._on_change is not None:
            self._on_change(old, state)
