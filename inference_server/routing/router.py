"""Picks edge or cloud for each request, and says why.

The router only decides; :mod:`inference_server.routing.dispatch` carries a plan out. A plan is
an ordered list of attempts: the first one is where the request goes, the rest are fallbacks
tried when an attempt fails before the first byte reached the client. Every attempt carries its
reason, a fixed string (they are Prometheus label values, so the set is bounded), listed in
:data:`REASONS` and in the README.

Decision order (first match wins):

1. forwarded by a peer → edge (no loops between nodes that route to each other)
2. private → edge, or a 400 when only the cloud has the model
3. the edge lacks the model → the cloud, or a 503 when every peer serving it is cooling down
4. no peer / no healthy peer → edge
5. critical power mode → cloud
6. the mode: edge_first (cloud only when the edge is not ready or its queue is full),
   cloud_first, balanced (shorter expected time: service time x (1 + load), plus the peer's
   network round trip; the edge's scaled by the power mode's bias; a tie stays home)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from inference_server.backends.remote import Probe, RemoteBackend, UpstreamError
from inference_server.config import ROUTING_MODES, RoutingMode, Settings
from inference_server.power.modes import PowerManager
from inference_server.routing.breaker import BreakerState, CircuitBreaker
from inference_server.runtime_state import load_state, save_state

_LOGGER = logging.getLogger(__name__)

STATE_FILE = "routing.json"
Target = Literal["edge", "cloud"]
Kind = Literal["chat", "completions", "embeddings"]

EDGE_PRIVATE = "edge: private"
EDGE_FORWARDED = "edge: forwarded by a peer"
EDGE_FIRST = "edge: edge first"
EDGE_NO_PEER = "edge: no cloud peer"
EDGE_BREAKER_OPEN = "edge: cloud breaker open"
EDGE_MODEL_NOT_ON_CLOUD = "edge: model not on cloud"
EDGE_BALANCED = "edge: balanced, edge less loaded"
EDGE_CLOUD_FAILED = "edge: cloud failed"
CLOUD_FIRST = "cloud: cloud first"
CLOUD_MODEL_ONLY = "cloud: model only on cloud"
CLOUD_EDGE_QUEUE_FULL = "cloud: edge queue full"
CLOUD_EDGE_NOT_READY = "cloud: edge not ready"
CLOUD_EDGE_FAILED = "cloud: edge failed"
CLOUD_BALANCED = "cloud: balanced, cloud less loaded"
CLOUD_POWER_CRITICAL = "cloud: power critical"
CLOUD_PEER_FAILED = "cloud: previous peer failed"
REFUSED_PRIVATE = "refused: private, model only on cloud"
REFUSED_CLOUD_DOWN = "refused: cloud breaker open"
REFUSED_POWER = "refused: power critical"

REASONS: tuple[str, ...] = (
    EDGE_PRIVATE,
    EDGE_FORWARDED,
    EDGE_FIRST,
    EDGE_NO_PEER,
    EDGE_BREAKER_OPEN,
    EDGE_MODEL_NOT_ON_CLOUD,
    EDGE_BALANCED,
    EDGE_CLOUD_FAILED,
    CLOUD_FIRST,
    CLOUD_MODEL_ONLY,
    CLOUD_EDGE_QUEUE_FULL,
    CLOUD_EDGE_NOT_READY,
    CLOUD_EDGE_FAILED,
    CLOUD_BALANCED,
    CLOUD_POWER_CRITICAL,
    CLOUD_PEER_FAILED,
    REFUSED_PRIVATE,
    REFUSED_CLOUD_DOWN,
    REFUSED_POWER,
)

_EWMA = 0.3
_DEFAULT_LATENCY = 1.0
_HISTORY = 200


class RouteRefused(Exception):
    """No side may serve this request; carries the HTTP status, code and reason."""

    def __init__(self, status: int, message: str, *, code: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.reason = reason


@dataclass(kw_only=True)
class Upstream:
    """One peer's runtime view: its breaker, what it serves, how fast and how busy it is."""

    backend: RemoteBackend
    breaker: CircuitBreaker
    discovered_models: tuple[str, ...] = ()
    latency: float | None = None
    """EWMA of request durations (seconds); the health check's round trip until one is known."""
    probe_latency: float | None = None
    inflight: int = 0
    slots_total: int | None = None
    slots_busy: int | None = None
    queue_depth: int | None = None
    requests: int = 0
    failures: int = 0
    last_check: float | None = None
    reachable: bool | None = None
    """None until the first health check."""

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def models(self) -> tuple[str, ...]:
        return self.backend.peer.models or self.discovered_models

    def model_for(self, requested: str | None, edge_default: str) -> str | None:
        """The model to ask this peer for, or None when it does not serve ``requested``.

        A request naming no model, or the edge's default, means "the default model": on a peer
        that is the peer's first model (a cloud node usually runs a bigger one).
        """
        models = self.models
        if requested:
            wanted = requested.strip().lower()
            for model in models:
                if model.lower() == wanted:
                    return model
            if wanted != edge_default:
                return None
        return models[0] if models else None

    def selectable(self) -> bool:
        """Worth planning for: closed, or half-open with its single probe still free."""
        return self.breaker.state == "closed" or self.breaker.probe_free()

    def admit(self) -> bool:
        """Take the go-ahead right before sending (the half-open probe, if that is the state)."""
        state = self.breaker.state
        return state == "closed" or (state == "half_open" and self.breaker.try_acquire_probe())

    def load(self) -> float:
        capacity = self.slots_total or self.backend.peer.max_concurrency
        busy = max(self.inflight, (self.slots_busy or 0)) + (self.queue_depth or 0)
        return busy / max(1, capacity)

    def estimate(self, service: float) -> float:
        """Expected seconds until done here: a request's service time stretched by the load,
        plus the network round trip (the health check's)."""
        return service * (1 + self.load()) + (self.probe_latency or 0.0)

    def observe(self, seconds: float) -> None:
        self.latency = _ewma(self.latency, seconds)

    def describe(self) -> dict[str, Any]:
        breaker = self.breaker
        return {
            "name": self.name,
            "url": self.backend.peer.url,
            "priority": self.backend.peer.priority,
            "models": list(self.models),
            "reachable": self.reachable,
            "breaker": breaker.state,
            "consecutive_failures": breaker.consecutive_failures,
            "retry_in_seconds": round(breaker.retry_in, 3),
            "last_error": breaker.last_error,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 1),
            "probe_latency_ms": (
                None if self.probe_latency is None else round(self.probe_latency * 1000, 1)
            ),
            "inflight": self.inflight,
            "requests": self.requests,
            "failures": self.failures,
            "last_check": self.last_check,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class RouteRequest:
    kind: Kind
    model: str | None
    private: bool
    forwarded: bool
    stream: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Attempt:
    target: Target
    reason: str
    upstream: Upstream | None = None


@dataclass(kw_only=True)
class Plan:
    request: RouteRequest
    mode: RoutingMode
    attempts: list[Attempt]
    fallback_reasons: dict[Target, str] = field(default_factory=dict)
    """Reason used when the *other* side failed and this one takes over."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EdgeView:
    """What the router needs from the local engine, as callables (no import of the registry)."""

    has_model: Callable[[str | None], Awaitable[bool]]
    ready: Callable[[], bool]
    capacity: Callable[[], int]
    """Requests the edge takes before answering 429 (admitted slots + wait queue)."""
    slots: Callable[[], int]
    default_model: str


class Router:
    def __init__(
        self,
        settings: Settings,
        edge: EdgeView,
        power: PowerManager,
        *,
        node_id: str,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings.routing
        self._edge = edge
        self._power = power
        self._node_id = node_id
        self._on_change = on_change
        self._path: Path = settings.server.data_dir / STATE_FILE
        stored = load_state(self._path).get("mode")
        self._mode: RoutingMode = stored if stored in ROUTING_MODES else self._settings.mode
        self.upstreams: list[Upstream] = []
        self._session: aiohttp.ClientSession | None = None
        self.edge_inflight = 0
        self.edge_latency: float | None = None
        self.service: float | None = None
        self.history: deque[Target] = deque(maxlen=_HISTORY)
        self.totals: dict[Target, int] = {"edge": 0, "cloud": 0}
        self.last_decision: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the shared HTTP session; the health loop runs as its own task (:meth:`run`)."""
        self._session = aiohttp.ClientSession()
        for peer in sorted(self._settings.peers, key=lambda p: p.priority):
            self.upstreams.append(
                Upstream(
                    backend=RemoteBackend(peer, self._session, self._node_id),
                    breaker=CircuitBreaker(
                        failure_threshold=self._settings.failure_threshold,
                        cooldown=self._settings.cooldown,
                        on_change=self._breaker_changed(peer.name),
                    ),
                )
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _breaker_changed(self, name: str) -> Callable[[BreakerState, BreakerState], None]:
        def changed(old: BreakerState, new: BreakerState) -> None:
            log = _LOGGER.warning if new == "open" else _LOGGER.info
            log("Circuit breaker of cloud peer '%s': %s -> %s", name, old, new)
            if self._on_change is not None:
                self._on_change()

        return changed

    async def run(self) -> None:
        """Health checks: every peer at once, every ``health_interval`` seconds.

        An open breaker is probed as soon as its cooldown ends (the loop wakes at least every
        second while one is open), so a returning peer closes its breaker without waiting for a
        request to dare it.
        """
        last_full = 0.0
        while True:
            now = time.monotonic()
            due = [
                u
                for u in self.upstreams
                if now - last_full >= self._settings.health_interval
                or u.breaker.state == "half_open"
            ]
            if now - last_full >= self._settings.health_interval:
                last_full = now
            if due:
                await asyncio.gather(*(self._check(u) for u in due))
            await asyncio.sleep(min(1.0, self._settings.health_interval))

    async def _check(self, upstream: Upstream) -> None:
        breaker = upstream.breaker
        state = breaker.state
        if state == "open":
            return
        if state == "half_open" and not breaker.try_acquire_probe():
            return  # a real request holds the probe
        try:
            probe: Probe = await upstream.backend.probe()
        except UpstreamError as err:
            upstream.reachable = False
            upstream.last_check = time.time()
            breaker.record_failure(str(err))
            self._changed()
            return
        except Exception:  # a bug must not end the health loop
            _LOGGER.exception("Health check of '%s' failed", upstream.name)
            breaker.release_probe()
            return
        changed = upstream.reachable is not True
        upstream.reachable = True
        upstream.last_check = time.time()
        upstream.probe_latency = probe.latency
        upstream.discovered_models = probe.models
        upstream.slots_total = probe.slots_total
        upstream.slots_busy = probe.slots_busy
        upstream.queue_depth = probe.queue_depth
        breaker.record_success()
        if changed:
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # ------------------------------------------------------------------ mode

    @property
    def mode(self) -> RoutingMode:
        return self._mode

    def set_mode(self, mode: RoutingMode) -> None:
        changed = mode != self._mode
        self._mode = mode
        save_state(self._path, {"mode": mode})
        if changed:
            _LOGGER.info("Routing mode is now %s", mode)
            self._changed()

    # ------------------------------------------------------------------ decisions

    async def plan(self, request: RouteRequest) -> Plan:
        plan = Plan(request=request, mode=self._mode, attempts=[])
        edge_default = self._edge.default_model
        if request.forwarded:
            plan.attempts = [Attempt(target="edge", reason=EDGE_FORWARDED)]
            return plan
        if not self.upstreams:  # a single node: no model lookups, nothing to weigh
            reason = (
                EDGE_PRIVATE
                if request.private
                else (EDGE_FIRST if self._mode == "edge_first" else EDGE_NO_PEER)
            )
            plan.attempts = [Attempt(target="edge", reason=reason)]
            return plan
        serving = [
            u for u in self.upstreams if u.model_for(request.model, edge_default) is not None
        ]
        edge_has = await self._edge.has_model(request.model)
        if request.private:
            if not edge_has and serving:
                raise RouteRefused(
                    400,
                    f"The model '{request.model}' is only served by the cloud "
                    f"({', '.join(u.name for u in serving)}), and this request is private: "
                    "private requests never leave this node. Use a local model, or send the "
                    "request without 'private'.",
                    code="model_not_on_edge",
                    reason=REFUSED_PRIVATE,
                )
            plan.attempts = [Attempt(target="edge", reason=EDGE_PRIVATE)]
            return plan
        if not edge_has and serving:
            usable = [u for u in serving if u.selectable()]
            if not usable:
                names = ", ".join(f"{u.name} ({u.breaker.last_error})" for u in serving)
                raise RouteRefused(
                    503,
                    f"The model '{request.model}' is only served by the cloud, and every peer "
                    f"serving it is cooling down after failures: {names}",
                    code="upstream_unavailable",
                    reason=REFUSED_CLOUD_DOWN,
                )
            plan.attempts = [Attempt(target="cloud", reason=CLOUD_MODEL_ONLY, upstream=usable[0])]
            plan.attempts += [
                Attempt(target="cloud", reason=CLOUD_PEER_FAILED, upstream=u) for u in usable[1:]
            ]
            return plan
        cloud = [u for u in serving if u.selectable()]
        if not cloud:
            if not self.upstreams:
                reason = EDGE_NO_PEER if self._mode != "edge_first" else EDGE_FIRST
            elif not serving:
                reason = EDGE_MODEL_NOT_ON_CLOUD
            elif self._mode == "edge_first" and not self._power.profile.prefer_cloud:
                reason = EDGE_FIRST
            else:
                reason = EDGE_BREAKER_OPEN
            plan.attempts = [Attempt(target="edge", reason=reason)]
            return plan
        plan.fallback_reasons = {"edge": EDGE_CLOUD_FAILED, "cloud": CLOUD_EDGE_FAILED}
        if self._power.profile.prefer_cloud:
            return self._cloud_then_edge(plan, cloud, CLOUD_POWER_CRITICAL)
        if self._mode == "edge_first":
            if not self._edge.ready():
                return self._cloud_then_edge(plan, cloud, CLOUD_EDGE_NOT_READY)
            if self.edge_inflight >= self._edge.capacity():
                return self._cloud_then_edge(plan, cloud, CLOUD_EDGE_QUEUE_FULL)
            return self._edge_then_cloud(plan, cloud, EDGE_FIRST)
        if self._mode == "cloud_first":
            return self._cloud_then_edge(plan, cloud, CLOUD_FIRST)
        service = self.service_seconds()
        best = min(cloud, key=lambda u: u.estimate(service))
        if not self._edge.ready() or self.edge_estimate() > best.estimate(service):
            rest = [u for u in cloud if u is not best]
            return self._cloud_then_edge(plan, [best, *rest], CLOUD_BALANCED)
        return self._edge_then_cloud(plan, cloud, EDGE_BALANCED)

    def _cloud_then_edge(self, plan: Plan, cloud: list[Upstream], reason: str) -> Plan:
        plan.attempts = [Attempt(target="cloud", reason=reason, upstream=cloud[0])]
        plan.attempts += [
            Attempt(target="cloud", reason=CLOUD_PEER_FAILED, upstream=u) for u in cloud[1:]
        ]
        plan.attempts.append(Attempt(target="edge", reason=EDGE_CLOUD_FAILED))
        return plan

    def _edge_then_cloud(self, plan: Plan, cloud: list[Upstream], reason: str) -> Plan:
        plan.attempts = [Attempt(target="edge", reason=reason)]
        plan.attempts += [
            Attempt(target="cloud", reason=CLOUD_EDGE_FAILED, upstream=u) for u in cloud
        ]
        return plan

    def service_seconds(self) -> float:
        """Moving average of request durations on either side.

        One figure for both sides on purpose: per-side averages mostly measured which side
        happened to get the long answers, and then kept sending everything to the other one.
        The sides differ by load, network and the power bias instead, which are known now.
        """
        return self.service or _DEFAULT_LATENCY

    def edge_estimate(self) -> float:
        load = self.edge_inflight / max(1, self._edge.slots())
        return self.service_seconds() * (1 + load) * self._power.profile.edge_weight

    # ------------------------------------------------------------------ bookkeeping

    def record(self, target: Target, decision: dict[str, Any]) -> None:
        self.history.append(target)
        self.totals[target] += 1
        self.last_decision = decision

    def observe_edge(self, seconds: float) -> None:
        self.edge_latency = _ewma(self.edge_latency, seconds)
        self.service = _ewma(self.service, seconds)

    def observe_cloud(self, upstream: Upstream, seconds: float) -> None:
        upstream.observe(seconds)
        self.service = _ewma(self.service, seconds)

    def edge_share(self) -> float | None:
        """Percent of the last 200 routed requests served on the edge; None before the first."""
        if not self.history:
            return None
        return round(100.0 * sum(1 for t in self.history if t == "edge") / len(self.history), 1)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self._mode,
            "modes": list(ROUTING_MODES),
            "default_private": self._settings.default_private,
            "edge": {
                "inflight": self.edge_inflight,
                "capacity": self._edge.capacity(),
                "latency_ms": (
                    None if self.edge_latency is None else round(self.edge_latency * 1000, 1)
                ),
            },
            "peers": [u.describe() for u in self.upstreams],
            "decisions": {
                "edge": self.totals["edge"],
                "cloud": self.totals["cloud"],
                "edge_share_percent": self.edge_share(),
            },
            "last_decision": self.last_decision,
            "reasons": list(REASONS),
        }

    def peer_stats(self) -> dict[str, dict[str, Any]]:
        """Per peer: latency and counts, sent with the periodic ``stats`` event."""
        return {
            u.name: {
                "latency_ms": None if u.latency is None else round(u.latency * 1000, 1),
                "requests": u.requests,
                "failures": u.failures,
            }
            for u in self.upstreams
        }

    def snapshot(self) -> dict[str, Any]:
        """The part Home Assistant follows live (compared for equality by the event watcher)."""
        return {
            "routing_mode": self._mode,
            "peers": {
                u.name: {
                    "breaker": u.breaker.state,
                    "reachable": u.reachable,
                    "last_error": u.breaker.last_error,
                }
                for u in self.upstreams
            },
        }


def _ewma(current: float | None, sample: float) -> float:
    return sample if current is None else (1 - _EWMA) * current + _EWMA * sample
