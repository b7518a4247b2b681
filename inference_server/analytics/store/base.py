"""The contract both stores keep, and the rows they derive from an event envelope.

Every store keeps every event once, in the table of its type, and three kinds of table:

* typed tables for the events the queries read, ``analytics_inference`` and
  ``analytics_power``: one column per field of the event's ``data`` (every field its schema
  allows: the row is the whole event, nothing is kept beside it);
* ``analytics_events`` for the other types: id, type, version, time, node and the ``data`` as
  JSON, as received;
* rollups ``analytics_inference_rollup`` per minute and per hour, recomputed by a job for
  exactly the buckets that received rows since its last run (late events from a spool replay
  are folded in), so long windows and Grafana read small tables.

All raw tables are idempotent on ``event_id`` (a replay never double-counts), and the view
``analytics_all_events`` gives every event in the envelope's shape (``data`` rebuilt from the
typed columns: an inference event's ``peer`` reads as ``null`` when it had none, its
``served_for`` is there when it is set). Why not also keep the typed events'
JSON in ``analytics_events``, as the first schema did: that row, parsed into jsonb, cost
PostgreSQL more CPU than the typed row itself, and at tens of thousands of events a second the
write was the largest single cost of the pipeline (bench/pg_write.py: 21-30 µs per inference
event then, 5-7 after, 4-6 with the BRIN indexes of PostgreSQL's migration 6).

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

import hashlib
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import orjson


class StoreError(RuntimeError):
    """The store cannot be reached or refused a write; the caller keeps the events and retries."""


class StoreRefused(StoreError):
    """The store refused the rows themselves, not the moment: a value its types cannot hold
    (PostgreSQL's text and jsonb hold no NUL character, which JSON strings may carry). The
    same rows will be refused again; the caller isolates them (``kafka.insert_isolating``)."""


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

ALL_EVENTS_VIEW = "analytics_all_events"
EVENT_COLUMNS = ("event_id", "type", "version", "occurred_at", "node_id", "data")
INFERENCE_COLUMNS = (
    "event_id",
    "occurred_at",
    "node_id",
    "version",
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
    "peer",
    "served_for",
)
POWER_COLUMNS = (
    "event_id",
    "occurred_at",
    "node_id",
    "version",
    "kind",
    "mode",
    "previous_mode",
    "watts",
    "source",
)
TABLE_COLUMNS = {
    "analytics_events": EVENT_COLUMNS,
    "analytics_inference": INFERENCE_COLUMNS,
    "analytics_power": POWER_COLUMNS,
}
"""The raw tables, each with the columns a write fills (in the row builders' order)."""
RAW_TABLES = tuple(TABLE_COLUMNS)
DEAD_LETTERS = "analytics_dead_letters"
COUNTABLE = frozenset({*RAW_TABLES, ALL_EVENTS_VIEW, "analytics_inference_rollup", DEAD_LETTERS})
"""What :meth:`Store.count` counts (it names the table in its SQL: only these)."""


Envelope = dict[str, Any] | msgspec.Struct
"""A checked event: the envelope as a dict, or a typed event from
:mod:`~inference_server.analytics.decoding` (whose fields are the dict's keys)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the pipeline could not store as an event, kept as it came.

    A message the sink's schema check refuses (an event from a node of another release, a
    hand-made message on our topic), a spool line that does not decode, and an event the store
    refuses for its values (:class:`StoreRefused`) would otherwise be only counted and logged:
    the event itself would be gone once Kafka's retention passed, or at once without Kafka.
    Stores keep them in ``analytics_dead_letters`` for an operator to read, once per message
    (by the SHA-256 of ``value``: a redelivered batch adds none twice), under the raw-event
    retention.
    """

    topic: str
    """The topic's ``<type>.v<version>``: where it came from, or what it claims to be."""
    reason: str
    value: bytes
    """The message's bytes as received (a refused event: its JSON)."""

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.value).digest()

    @property
    def printable_reason(self) -> str:
        """The reason as any text column holds it: an error that quotes the value may carry
        the very NUL character the store refused, and a line of a broken spool any length."""
        return self.reason.replace("\x00", "\\u0000")[:2000]


def dead_letter(event: Envelope, reason: str) -> DeadLetter:
    """A checked event the store refused, as a :class:`DeadLetter` of its JSON."""
    if isinstance(event, dict):
        topic, value = f"{event['type']}.v{event['version']}", orjson.dumps(event)
    else:
        typed: Any = event
        topic, value = f"{typed.type}.v{typed.version}", msgspec.json.encode(event)
    return DeadLetter(topic, reason, value)


_INFERENCE_DATA = operator.itemgetter(*INFERENCE_COLUMNS[4:14])
_POWER_DATA = operator.itemgetter(*POWER_COLUMNS[4:])


def rows_by_table[T](
    events: list[Envelope], when: Callable[[float], T]
) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of validated envelopes, per raw table, in :data:`TABLE_COLUMNS` order.

    ``when`` turns the envelope's epoch seconds into the store's time value. Values go in as
    the event has them: JSON Schema's ``integer`` admits ``200.0``, which both drivers store in
    an integer column as 200 (tests/server/analytics/test_store.py holds them to it). The
    fields are taken by one ``itemgetter`` call per event and the row built by concatenation:
    0.9 against 1.4 µs per inference event, at tens of thousands a second. A typed event
    (:mod:`~inference_server.analytics.decoding`) gives its fields by one ``attrgetter`` call.
    """
    inference: list[tuple[Any, ...]] = []
    power: list[tuple[Any, ...]] = []
    other: list[tuple[Any, ...]] = []
    for e in events:
        if e.__class__ is not dict:  # a typed event: inference or power
            t: Any = e
            head = (t.event_id, when(t.occurred_at), t.node_id, t.version)
            if t.type == "inference":
                inference.append(head + _typed_data(t.data, INFERENCE_COLUMNS))
            else:
                power.append(head + _typed_data(t.data, POWER_COLUMNS))
            continue
        d = e["data"]
        type_ = e["type"]
        head = (e["event_id"], when(e["occurred_at"]), e["node_id"], e["version"])
        if type_ == "inference":
            # peer is optional in both versions, served_for new in v2
            inference.append(head + _INFERENCE_DATA(d) + (d.get("peer"), d.get("served_for")))
        elif type_ == "power":
            power.append(head + _POWER_DATA(d))
        else:
            other.append(
                (
                    e["event_id"],
                    type_,
                    e["version"],
                    head[1],
                    e["node_id"],
                    orjson.dumps(d).decode(),
                )
            )
    return {
        "analytics_inference": inference,
        "analytics_power": power,
        "analytics_events": other,
    }


_TYPED_DATA: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _typed_data(data: Any, table: tuple[str, ...]) -> tuple[Any, ...]:
    """The data columns of a typed event's ``data`` (a msgspec Struct), in column order."""
    getter = _TYPED_DATA.get(data.__class__)
    if getter is None:
        getter = _TYPED_DATA[data.__class__] = _data_getter(data.__struct_fields__, table[4:])
    return getter(data)


def _data_getter(
    fields: tuple[str, ...], columns: tuple[str, ...]
) -> Callable[[Any], tuple[Any, ...]]:
    """One ``attrgetter`` over a type's data columns; the columns its version lacks (inference
    v1 has no ``served_for``), always the last ones, are added as None."""
    present = [c for c in columns if c in fields]
    if set(fields) - set(columns) or present != list(columns[: len(present)]):
        raise ValueError(f"data fields {fields} do not match the columns {columns}")
    get = operator.attrgetter(*present)
    missing = (None,) * (len(columns) - len(present))
    return (lambda d: get(d) + missing) if missing else get


class Store(Protocol):
    """What the sink, the jobs and the query API need from a database."""

    dead_letters_kept: int
    """Dead letters this process added (:meth:`keep_dead_letters`' new ones): the health API's
    and ``/metrics``' count, so an operator knows there is something in the table to read."""

    @property
    def kind(self) -> str:
        """``sqlite``, ``postgresql``, ``timescaledb`` or ``timescaledb-apache`` (the licence)."""

    async def open(self) -> None:
        """Connect and apply pending migrations (versioned, recorded in a table)."""

    async def close(self) -> None: ...

    async def insert(self, events: list[Envelope]) -> int:
        """Store validated envelopes durably (committed on return); returns rows newly added."""

    async def keep_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        """Store messages that are not events (:class:`DeadLetter`) durably, each once; returns
        how many were new."""

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

    async def count(self, table: str = ALL_EVENTS_VIEW) -> int:
        """Rows of one raw or rollup table, or every event (the default)."""

    async def migrations(self) -> list[int]: ...
