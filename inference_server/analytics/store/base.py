"""The contract both stores keep, and the rows they derive from an event envelope.

Every store keeps three kinds of table:

* ``analytics_events``: every event as received (id, type, version, time, node, JSON data),
  the record of truth, idempotent on ``event_id``;
* typed projections the queries read: ``analytics_inference`` and ``analytics_power`` (same
  primary key, filled in the same transaction, so a replay never double-counts);
* rollups ``analytics_inference_rollup`` per minute and per hour, recomputed by a job for
  exactly the buckets that received rows since its last run (late events from a spool replay
  are folded in), so long windows and Grafana read small tables.

Counting a forwarded request once: a node that forwards a request to a Prime Spark peer records
the client's request (side ``cloud``); the peer records the work it did, marked ``served_for``
the forwarding node (inference v2). When both write to one database, the summary counts the
request by the forwarding node's event and leaves the peer's out of requests, errors, tokens,
shares and latency percentiles, but keeps its decode tokens and time for the decode speed. A
``served_for`` event counts as a request when its forwarding node's events are not in the store
for the window (the peer's own database, or a forwarding node with analytics off). Rollups
count only events that are not ``served_for`` and give the others in their ``forwarded``
column.

The summary query is written once (:mod:`inference_server.analytics.summary`) over the
primitive reads declared here, so SQLite and PostgreSQL answer the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class StoreError(RuntimeError):
    """The store cannot be reached or refused a write; the caller keeps the events and retries."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RetentionPolicy:
    raw_days: float = 7.0
    minute_rollup_days: float = 30.0
    hour_rollup_days: float = 400.0


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowTotals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_ms: float = 0.0
    edge: int = 0
    cloud: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    forwarded: int = 0
    """Events of work done for another node whose own event of the request is in the store:
    left out of every count above (that node's event counts the request)."""
    decode_tokens: int = 0
    """Completion tokens of every event with decode time (forwarded work included): with
    ``generation_ms`` the decode speed of the nodes that did the work."""


@dataclass(frozen=True, slots=True)
class RollupRow:
    resolution: str
    bucket: float
    side: str
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    generation_ms: float
    latency_ms_sum: float
    latency_ms_max: float
    cache_hits: int
    cache_misses: int
    forwarded: int = 0
    """Requests served for another node (``served_for``): not in the other columns, which
    count requests where their client sent them."""


ROLLUPS = (("1m", 60), ("1h", 3600))

EVENT_COLUMNS = ("event_id", "type", "version", "occurred_at", "node_id", "data")
INFERENCE_COLUMNS = (
    "event_id",
    "occurred_at",
    "node_id",
    "model",
    "side",
    "route",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "generation_ms",
    "cache",
    "stream",
    "served_for",
)
POWER_COLUMNS = ("event_id", "occurred_at", "node_id", "kind", "mode", "watts")


def inference_row(event: dict[str, Any]) -> tuple[Any, ...]:
    d = event["data"]
    return (
        event["event_id"],
        event["occurred_at"],
        event["node_id"],
        d["model"],
        d["side"],
        d["route"],
        d["status"],
        d["prompt_tokens"],
        d["completion_tokens"],
        float(d["latency_ms"]),
        float(d["generation_ms"]),
        d["cache"],
        d["stream"],
        d.get("served_for"),  # v2; v1 events have none
    )


def power_row(event: dict[str, Any]) -> tuple[Any, ...]:
    d = event["data"]
    watts = d["watts"]
    return (
        event["event_id"],
        event["occurred_at"],
        event["node_id"],
        d["kind"],
        d["mode"],
        None if watts is None else float(watts),
    )


class Store(Protocol):
    """What the sink, the jobs and the query API need from a database."""

    @property
    def kind(self) -> str:
        """``sqlite``, ``postgresql``, ``timescaledb`` or ``timescaledb-apache`` (the licence)."""

    async def open(self) -> None:
        """Connect and apply pending migrations (versioned, recorded in a table)."""

    async def close(self) -> None: ...

    async def insert(self, events: list[dict[str, Any]]) -> int:
        """Store validated envelopes durably (committed on return); returns rows newly added."""

    async def rollup(self) -> dict[str, Any]:
        """Recompute rollup buckets that received rows since the last run."""

    async def retention(self, policy: RetentionPolicy, now: float) -> dict[str, Any]:
        """Delete (or drop chunks of) rows older than the policy keeps."""

    async def totals(self, since: float) -> WindowTotals: ...

    async def latency_at_rank(self, since: float, rank: int) -> float | None:
        """The ``rank``-th (1-based) smallest latency of successful requests since ``since``."""

    async def power_readings(self, since: float) -> list[tuple[float, float]]:
        """(time, watts) of power readings since ``since``, oldest first."""

    async def rollups(self, resolution: str, since: float) -> list[RollupRow]: ...

    async def count(self, table: str = "analytics_events") -> int: ...

    async def migrations(self) -> list[int]: ...
