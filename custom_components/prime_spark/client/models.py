"""Typed models of what the Prime Spark server answers (its OpenAPI document is the contract).

Parsing is strict about what the contract requires and lenient about what it may add: unknown
fields are ignored so a newer server does not break an older integration, while a missing or
mistyped required field raises :class:`PrimeSparkInvalidResponseError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, cast

from .exceptions import PrimeSparkInvalidResponseError

type NodeStateName = Literal["loading", "ready", "error"]
NODE_STATES: tuple[NodeStateName, ...] = ("loading", "ready", "error")
ROUTING_MODES: tuple[str, ...] = ("edge_first", "cloud_first", "balanced")
"""Where requests run: the node first, its cloud peers first, or whichever is less loaded."""
POWER_MODES: tuple[str, ...] = ("performance", "balanced", "power_save", "critical")
BREAKER_STATES: tuple[str, ...] = ("closed", "half_open", "open")


class _Fields:
    """Typed access to one JSON object; a wrong shape raises the client's error."""

    def __init__(self, data: object, what: str) -> None:
        if not isinstance(data, Mapping):
            raise PrimeSparkInvalidResponseError(f"{what}: expected an object")
        self._data: Mapping[str, Any] = data
        self._what = what

    def _get(self, key: str, types: tuple[type, ...], *, optional: bool) -> Any:
        if key not in self._data or self._data[key] is None:
            if optional:
                return None
            raise PrimeSparkInvalidResponseError(f"{self._what}: '{key}' is missing")
        value = self._data[key]
        # bool is an int subclass: never accept it where a number is meant.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise PrimeSparkInvalidResponseError(f"{self._what}: '{key}' has the wrong type")
        return value

    def string(self, key: str) -> str:
        return cast(str, self._get(key, (str,), optional=False))

    def opt_string(self, key: str) -> str | None:
        return cast(str | None, self._get(key, (str,), optional=True))

    def integer(self, key: str) -> int:
        return cast(int, self._get(key, (int,), optional=False))

    def opt_integer(self, key: str) -> int | None:
        return cast(int | None, self._get(key, (int,), optional=True))

    def number(self, key: str) -> float:
        return float(self._get(key, (int, float), optional=False))

    def opt_number(self, key: str) -> float | None:
        value = self._get(key, (int, float), optional=True)
        return None if value is None else float(value)

    def boolean(self, key: str) -> bool:
        return cast(bool, self._get(key, (bool,), optional=False))

    def opt_boolean(self, key: str) -> bool | None:
        return cast(bool | None, self._get(key, (bool,), optional=True))

    def raw(self, key: str) -> Mapping[str, Any]:
        return cast(Mapping[str, Any], self._get(key, (Mapping,), optional=False))

    def opt_raw(self, key: str) -> Mapping[str, Any] | None:
        return cast(Mapping[str, Any] | None, self._get(key, (Mapping,), optional=True))

    def obj(self, key: str) -> _Fields:
        return _Fields(self.raw(key), f"{self._what}.{key}")

    def opt_obj(self, key: str) -> _Fields | None:
        value = self._get(key, (Mapping,), optional=True)
        return None if value is None else _Fields(value, f"{self._what}.{key}")

    def array(self, key: str, *, optional: bool = False) -> list[Any]:
        return cast(list[Any], self._get(key, (list,), optional=optional) or [])

    def node_state(self, key: str) -> NodeStateName:
        value = self.string(key)
        if value not in NODE_STATES:
            raise PrimeSparkInvalidResponseError(f"{self._what}: unknown state '{value}'")
        return value


def _str_list(values: list[Any], what: str) -> tuple[str, ...]:
    if not all(isinstance(v, str) for v in values):
        raise PrimeSparkInvalidResponseError(f"{what}: expected a list of strings")
    return tuple(values)


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelInfo:
    """One model the node knows, loaded or not."""

    id: str
    path: str
    loaded: bool
    size_bytes: int
    context_size: int | None = None
    architecture: str | None = None
    has_chat_template: bool = False

    @classmethod
    def from_dict(cls, data: object) -> ModelInfo:
        f = _Fields(data, "model")
        return cls(
            id=f.string("id"),
            path=f.string("path"),
            loaded=f.boolean("loaded"),
            size_bytes=f.integer("size_bytes"),
            context_size=f.opt_integer("context_size"),
            architecture=f.opt_string("architecture"),
            has_chat_template=f.boolean("has_chat_template"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelList:
    """``GET /api/v1/models``."""

    default: str
    max_loaded: int
    models: tuple[ModelInfo, ...]

    @classmethod
    def from_dict(cls, data: object) -> ModelList:
        f = _Fields(data, "models")
        return cls(
            default=f.string("default"),
            max_loaded=f.integer("max_loaded"),
            models=tuple(ModelInfo.from_dict(m) for m in f.array("models")),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerStats:
    """A cloud peer's request latency and counts, as the periodic ``stats`` event sends them."""

    latency_ms: float | None
    requests: int
    failures: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Stats:
    """Rolling one-minute request statistics of the node."""

    requests_per_minute: int
    errors_per_minute: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    tokens_per_second: float | None
    generated_tokens_total: int
    requests_total: int
    peers: Mapping[str, PeerStats] | None = None
    """None from servers without routing."""

    @classmethod
    def from_dict(cls, data: object) -> Stats:
        f = _Fields(data, "stats")
        peers_data = f.opt_raw("peers")
        peers = None
        if peers_data is not None:
            peers = {}
            for name, value in peers_data.items():
                peer = _Fields(value, f"stats.peers.{name}")
                peers[str(name)] = PeerStats(
                    latency_ms=peer.opt_number("latency_ms"),
                    requests=peer.integer("requests"),
                    failures=peer.integer("failures"),
                )
        return cls(
            requests_per_minute=f.integer("requests_per_minute"),
            errors_per_minute=f.integer("errors_per_minute"),
            latency_p50_ms=f.opt_number("latency_p50_ms"),
            latency_p95_ms=f.opt_number("latency_p95_ms"),
            tokens_per_second=f.opt_number("tokens_per_second"),
            generated_tokens_total=f.integer("generated_tokens_total"),
            requests_total=f.integer("requests_total"),
            peers=peers,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Peer:
    """A cloud peer of the node: reachability, circuit breaker, latency, requests served."""

    name: str
    url: str
    reachable: bool | None
    breaker: str
    latency_ms: float | None
    requests: int
    failures: int
    last_error: str | None

    @classmethod
    def from_dict(cls, data: object) -> Peer:
        f = _Fields(data, "peer")
        reachable = f.opt_boolean("reachable")
        return cls(
            name=f.string("name"),
            url=f.string("url"),
            reachable=reachable,
            breaker=f.string("breaker"),
            latency_ms=f.opt_number("latency_ms"),
            requests=f.opt_integer("requests") or 0,
            failures=f.opt_integer("failures") or 0,
            last_error=f.opt_string("last_error"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class RouteDecision:
    """Where one request ran and why (``reason``: ``edge: private``, ``cloud: cloud first``)."""

    target: str | None
    peer: str | None
    reason: str
    model: str | None = None
    private: bool = False
    edge_share_percent: float | None = None

    @classmethod
    def from_dict(cls, data: object) -> RouteDecision:
        f = _Fields(data, "route")
        private = f.opt_boolean("private")
        return cls(
            target=f.opt_string("target"),
            peer=f.opt_string("peer"),
            reason=f.string("reason"),
            model=f.opt_string("model"),
            private=bool(private),
            edge_share_percent=f.opt_number("edge_share_percent"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Routing:
    """``GET /api/v1/routing`` (and the ``routing`` block of the status)."""

    mode: str
    peers: tuple[Peer, ...]
    edge_requests: int
    cloud_requests: int
    edge_share_percent: float | None
    last_decision: RouteDecision | None

    @classmethod
    def from_dict(cls, data: object) -> Routing:
        f = _Fields(data, "routing")
        decisions = f.obj("decisions")
        last = f.opt_raw("last_decision")
        return cls(
            mode=f.string("mode"),
            peers=tuple(Peer.from_dict(p) for p in f.array("peers")),
            edge_requests=decisions.integer("edge"),
            cloud_requests=decisions.integer("cloud"),
            edge_share_percent=decisions.opt_number("edge_share_percent"),
            last_decision=None if last is None else RouteDecision.from_dict(last),
        )

    def peer(self, name: str) -> Peer | None:
        return next((p for p in self.peers if p.name == name), None)

    def peer_share(self, name: str) -> float | None:
        """Percent of all routed requests this peer answered (None before the first)."""
        total = self.edge_requests + self.cloud_requests
        peer = self.peer(name)
        if peer is None or total == 0:
            return None
        return round(min(100.0, 100.0 * max(0, peer.requests - peer.failures) / total), 1)

    def with_decision(self, decision: RouteDecision) -> Routing:
        """This routing view after one more decision (a pushed ``route`` event)."""
        return replace(
            self,
            peers=tuple(
                replace(p, requests=p.requests + 1) if p.name == decision.peer else p
                for p in self.peers
            ),
            edge_requests=self.edge_requests + (decision.target == "edge"),
            cloud_requests=self.cloud_requests + (decision.target == "cloud"),
            edge_share_percent=decision.edge_share_percent
            if decision.target is not None
            else self.edge_share_percent,
            last_decision=decision,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Power:
    """``GET /api/v1/power`` (and the ``power`` block of the status)."""

    mode: str
    threads: int
    slots: int
    max_tokens_cap: int | None
    power_watts: float | None
    """None where the node's hardware gives no power telemetry."""

    @classmethod
    def from_dict(cls, data: object) -> Power:
        f = _Fields(data, "power")
        return cls(
            mode=f.string("mode"),
            threads=f.integer("threads"),
            slots=f.integer("slots"),
            max_tokens_cap=f.opt_integer("max_tokens_cap"),
            power_watts=f.opt_number("power_watts"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeState:
    """What changes from moment to moment: the data of a ``state`` (or ``resync``) event."""

    ready: bool
    state: NodeStateName
    reason: str | None
    loaded_models: tuple[str, ...]
    slots_busy: int
    slots_total: int
    queue_depth: int
    routing_mode: str | None = None
    power_mode: str | None = None
    threads: int | None = None
    slot_limit: int | None = None
    power_watts: float | None = None
    peers: Mapping[str, tuple[str, bool | None, str | None]] | None = None
    """Each cloud peer's breaker state, reachability and last error (None without routing)."""

    @classmethod
    def from_dict(cls, data: object) -> NodeState:
        f = _Fields(data, "state")
        peers_data = f.opt_raw("peers")
        peers: dict[str, tuple[str, bool | None, str | None]] | None = None
        if peers_data is not None:
            peers = {}
            for name, value in peers_data.items():
                peer = _Fields(value, f"state.peers.{name}")
                reachable = peer.opt_boolean("reachable")
                peers[str(name)] = (
                    peer.string("breaker"),
                    reachable,
                    peer.opt_string("last_error"),
                )
        return cls(
            ready=f.boolean("ready"),
            state=f.node_state("state"),
            reason=f.opt_string("reason"),
            loaded_models=_str_list(f.array("loaded_models"), "state.loaded_models"),
            slots_busy=f.integer("slots_busy"),
            slots_total=f.integer("slots_total"),
            queue_depth=f.integer("queue_depth"),
            routing_mode=f.opt_string("routing_mode"),
            power_mode=f.opt_string("power_mode"),
            threads=f.opt_integer("threads"),
            slot_limit=f.opt_integer("slot_limit"),
            power_watts=f.opt_number("power_watts"),
            peers=peers,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Status:
    """``GET /api/v1/status``: everything Home Assistant shows about a node."""

    node_id: str
    version: str
    api_version: str
    started_at: datetime | None
    uptime_seconds: float
    ready: bool
    state: NodeStateName
    reason: str | None
    default_model: str | None
    models: tuple[ModelInfo, ...]
    slots_total: int
    slots_busy: int
    queue_depth: int
    queue_capacity: int
    stats: Stats
    routing: Routing | None = None
    """None from servers older than routing."""
    power: Power | None = None

    @classmethod
    def from_dict(cls, data: object) -> Status:
        f = _Fields(data, "status")
        slots = f.obj("slots")
        queue = f.obj("queue")
        started_at = f.opt_integer("started_at")
        routing = f.opt_raw("routing")
        power = f.opt_raw("power")
        return cls(
            node_id=f.string("node_id"),
            version=f.string("version"),
            api_version=f.string("api_version"),
            started_at=None if started_at is None else datetime.fromtimestamp(started_at, UTC),
            uptime_seconds=f.number("uptime_seconds"),
            ready=f.boolean("ready"),
            state=f.node_state("state"),
            reason=f.opt_string("reason"),
            default_model=f.opt_string("default_model"),
            models=tuple(ModelInfo.from_dict(m) for m in f.array("models")),
            slots_total=slots.integer("total"),
            slots_busy=slots.integer("busy"),
            queue_depth=queue.integer("depth"),
            queue_capacity=queue.integer("capacity"),
            stats=Stats.from_dict(f.raw("stats")),
            routing=None if routing is None else Routing.from_dict(routing),
            power=None if power is None else Power.from_dict(power),
        )

    @property
    def loaded_models(self) -> tuple[str, ...]:
        """Ids of the models in memory, sorted."""
        return tuple(sorted(m.id for m in self.models if m.loaded))

    def with_state(self, state: NodeState) -> Status:
        """This status with a pushed ``state`` event applied."""
        loaded = set(state.loaded_models)
        routing = self.routing
        if routing is not None and state.routing_mode is not None:
            peers = state.peers or {}
            routing = replace(
                routing,
                mode=state.routing_mode,
                peers=tuple(
                    replace(
                        p,
                        breaker=peers[p.name][0],
                        reachable=peers[p.name][1],
                        last_error=peers[p.name][2],
                    )
                    if p.name in peers
                    else p
                    for p in routing.peers
                ),
            )
        power = self.power
        if power is not None and state.power_mode is not None:
            power = replace(
                power,
                mode=state.power_mode,
                threads=state.threads if state.threads is not None else power.threads,
                slots=state.slot_limit if state.slot_limit is not None else power.slots,
                power_watts=state.power_watts,
            )
        return replace(
            self,
            routing=routing,
            power=power,
            ready=state.ready,
            state=state.state,
            reason=state.reason,
            models=tuple(replace(m, loaded=m.id in loaded) for m in self.models),
            slots_total=state.slots_total,
            slots_busy=state.slots_busy,
            queue_depth=state.queue_depth,
        )

    def with_stats(self, stats: Stats) -> Status:
        """This status with a pushed ``stats`` event applied."""
        routing = self.routing
        if routing is not None and stats.peers:
            peers = stats.peers
            routing = replace(
                routing,
                peers=tuple(
                    replace(
                        p,
                        latency_ms=peers[p.name].latency_ms,
                        requests=peers[p.name].requests,
                        failures=peers[p.name].failures,
                    )
                    if p.name in peers
                    else p
                    for p in routing.peers
                ),
            )
        return replace(self, stats=stats, routing=routing)

    def with_route(self, decision: RouteDecision) -> Status:
        """This status with a pushed ``route`` event applied."""
        if self.routing is None:
            return self
        return replace(self, routing=self.routing.with_decision(decision))

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (diagnostics)."""
        data = asdict(self)
        data["started_at"] = None if self.started_at is None else self.started_at.isoformat()
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class StateEvent:
    """The node's state changed (or, with ``resync``, the client fell behind and got a snapshot)."""

    id: int | None
    state: NodeState
    resync: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class StatsEvent:
    """The periodic statistics update."""

    id: int | None
    stats: Stats


@dataclass(frozen=True, kw_only=True, slots=True)
class RouteEvent:
    """A request was routed (to the edge or a cloud peer), with the reason."""

    id: int | None
    decision: RouteDecision


type ServerEvent = StateEvent | StatsEvent | RouteEvent


def parse_event(event_type: str, event_id: int | None, data: object) -> ServerEvent | None:
    """Type one event of ``GET /api/v1/events``; ``None`` for types this client does not know."""
    if event_type in ("state", "resync"):
        return StateEvent(
            id=event_id, state=NodeState.from_dict(data), resync=event_type == "resync"
        )
    if event_type == "stats":
        return StatsEvent(id=event_id, stats=Stats.from_dict(data))
    if event_type == "route":
        return RouteEvent(id=event_id, decision=RouteDecision.from_dict(data))
    return None


# --- OpenAI-compatible chat ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCall:
    """A complete function call the model asked for; ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str

    @classmethod
    def from_dict(cls, data: object) -> ToolCall:
        f = _Fields(data, "tool_call")
        function = f.obj("function")
        return cls(
            id=f.string("id"), name=function.string("name"), arguments=function.string("arguments")
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call; pieces with the same ``index`` belong together."""

    index: int
    id: str | None
    name: str | None
    arguments: str | None

    @classmethod
    def from_dict(cls, data: object) -> ToolCallDelta:
        f = _Fields(data, "tool_call")
        function = f.opt_obj("function")
        return cls(
            index=f.integer("index"),
            id=f.opt_string("id"),
            name=None if function is None else function.opt_string("name"),
            arguments=None if function is None else function.opt_string("arguments"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    """Token counts of one completion."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def from_dict(cls, data: object) -> Usage:
        f = _Fields(data, "usage")
        return cls(
            prompt_tokens=f.integer("prompt_tokens"),
            completion_tokens=f.integer("completion_tokens"),
            total_tokens=f.integer("total_tokens"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ChatMessage:
    """The assistant's answer: text, tool calls, or both."""

    role: str
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def from_dict(cls, data: object) -> ChatMessage:
        f = _Fields(data, "message")
        return cls(
            role=f.string("role"),
            content=f.opt_string("content"),
            tool_calls=tuple(ToolCall.from_dict(t) for t in f.array("tool_calls", optional=True)),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ChatCompletion:
    """``POST /v1/chat/completions`` without streaming."""

    id: str
    model: str
    message: ChatMessage
    finish_reason: str | None
    usage: Usage | None
    system_fingerprint: str | None = None

    @classmethod
    def from_dict(cls, data: object) -> ChatCompletion:
        f = _Fields(data, "chat.completion")
        choices = f.array("choices")
        if not choices:
            raise PrimeSparkInvalidResponseError("chat.completion: no choices")
        choice = _Fields(choices[0], "chat.completion.choices[0]")
        usage = f.opt_raw("usage")
        return cls(
            id=f.string("id"),
            model=f.string("model"),
            message=ChatMessage.from_dict(choice.raw("message")),
            finish_reason=choice.opt_string("finish_reason"),
            usage=None if usage is None else Usage.from_dict(usage),
            system_fingerprint=f.opt_string("system_fingerprint"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ChatCompletionDelta:
    """One chunk of a streamed chat completion.

    ``content`` is the next piece of text, ``tool_calls`` the pieces of tool calls (the server
    sends each call whole, OpenAI clients may send them in parts), ``finish_reason`` is set on the
    last content chunk and ``usage`` on the final usage chunk.
    """

    role: str | None = None
    content: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None

    @classmethod
    def from_dict(cls, data: object) -> ChatCompletionDelta:
        f = _Fields(data, "chat.completion.chunk")
        usage_data = f.opt_raw("usage")
        usage = None if usage_data is None else Usage.from_dict(usage_data)
        choices = f.array("choices")
        if not choices:
            return cls(usage=usage)
        choice = _Fields(choices[0], "chat.completion.chunk.choices[0]")
        delta = choice.opt_obj("delta")
        return cls(
            role=None if delta is None else delta.opt_string("role"),
            content=None if delta is None else delta.opt_string("content"),
            tool_calls=()
            if delta is None
            else tuple(
                ToolCallDelta.from_dict(t) for t in delta.array("tool_calls", optional=True)
            ),
            finish_reason=choice.opt_string("finish_reason"),
            usage=usage,
        )
