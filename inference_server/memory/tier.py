"""The contract every tier implements; the tiered store and the mover only speak this."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from inference_server.memory.record import TierName


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    items: int
    bytes: int


class Tier(Protocol):
    name: TierName
    durable: bool
    """Whether an item survives a crash of this process (the in-process hot tier does not)."""

    async def get_raw(self, namespace: str, key: str) -> str | None:
        """The stored canonical text, or ``None``. Raises TierUnavailableError when down."""

    async def put_raw(
        self, namespace: str, key: str, text: str, *, only_if_absent: bool = False
    ) -> bool:
        """Store (idempotent). With ``only_if_absent`` an existing item wins; returns stored."""

    async def delete(self, namespace: str, key: str, *, if_text: str | None = None) -> bool:
        """Remove; with ``if_text`` only while the tier still holds exactly that text."""

    def scan(self, namespace: str | None = None) -> AsyncIterator[tuple[str, str, str]]:
        """Every (namespace, key, text) held, optionally of one namespace."""

    async def coldest(self, limit: int, idle_before: float | None) -> list[tuple[str, str]]:
        """Least recently used items first; with ``idle_before`` only those idle since then."""

    async def touch(self, namespace: str, key: str, now: float) -> None:
        """Record a read (the idle clock of the demotion policy)."""

    async def usage(self) -> Usage: ...

    async def ping(self) -> bool:
        """Reachable and usable right now."""

    async def close(self) -> None: ...
