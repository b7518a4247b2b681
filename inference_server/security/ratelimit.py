"""Per-caller request limits, so one runaway automation cannot starve the node.

aiolimiter's leaky bucket does the accounting; the server rejects instead of waiting (a queued
HTTP request would hold a connection and still time out), answering 429 with ``Retry-After``.
"""

from __future__ import annotations

import math

from aiolimiter import AsyncLimiter


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._limiters: dict[str, AsyncLimiter] = {}

    @property
    def enabled(self) -> bool:
        return self._per_minute > 0

    async def check(self, key: str) -> float | None:
        """Take one request from ``key``'s budget; ``None`` if allowed, else seconds to wait."""
        if not self.enabled:
            return None
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = AsyncLimiter(self._per_minute, 60)
        if not limiter.has_capacity():
            return max(1.0, math.ceil(60 / self._per_minute))
        await limiter.acquire()  # returns at once: has_capacity() just said so
        return None
