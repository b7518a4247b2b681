"""One typed settings object, from a YAML file plus ``PRIME_SPARK_*`` environment variables.

The server refuses to start on a bad value, and the message names the key and what is allowed:
an add-on user reads it in the log and must know which option to fix. Environment variables use
``__`` to reach into sections (``PRIME_SPARK_SERVER__PORT=9000``) and win over the file, so a
container can override one value without rewriting the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import voluptuous as vol
import yaml

ENV_PREFIX = "PRIME_SPARK_"
ENV_CONFIG_FILE = "PRIME_SPARK_CONFIG"
DEFAULT_PORT = 8780
DEFAULT_MODEL_ID = "gemma-3-270m"

Role = Literal["admin", "operator", "reader"]
ROLES: tuple[Role, ...] = ("admin", "operator", "reader")
LOG_LEVELS = ("debug", "info", "warning", "error")
COMPRESSIONS = ("zstd", "lz4", "gzip", "none")
"""Kafka batch codecs; zstd and lz4 need cramjam (a dependency), gzip is in the stdlib."""


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/prime-spark``; the add-on sets ``/data`` explicitly."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "prime-spark"


class ConfigError(ValueError):
    """A setting is invalid; ``str()`` is the message a person reads."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    node_id: str | None = None
    """Stable id of this node; generated once and kept in the data directory when unset."""
    data_dir: Path = field(default_factory=default_data_dir)
    log_level: str = "info"
    cors_origins: tuple[str, ...] = ()
    """CORS is off unless origins are listed here."""
    max_body_bytes: int = 8 * 1024 * 1024
    stream_keepalive_seconds: float = 5.0
    """Longest silence on a stream whose reply is buffered (tool calls): a comment line then."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSettings:
    default: str = DEFAULT_MODEL_ID
    """Model id served when a request names none (and the one loaded at start)."""
    paths: tuple[Path, ...] = ()
    """Extra GGUF files or directories of them; each file's stem becomes its model id."""
    max_loaded: int = 2
    """At most this many models stay in memory; the least recently used one unloads."""
    slots: int = 4
    """Sequences decoded together (continuous batching)."""
    queue_size: int = 16
    """Requests allowed to wait for a slot; one more gets HTTP 429."""
    context_size: int = 2048
    """Tokens of context per slot (prompt + completion)."""
    threads: int | None = None
    """CPU threads for decoding; ``None`` uses every core."""
    batch_size: int = 512
    request_timeout: float = 300.0
    """Seconds a request may spend waiting plus generating before it is stopped (HTTP 504)."""
    max_tokens_default: int = 512
    chat_template: str | None = None
    """Jinja chat template for models whose GGUF has none (the bundled Gemma gets Gemma's)."""
    embeddings: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class ApiToken:
    name: str
    token: str
    role: Role


@dataclass(frozen=True, kw_only=True, slots=True)
class SecuritySettings:
    api_tokens: tuple[ApiToken, ...] = ()
    jwt_secret: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    rate_limit_per_minute: int = 600
    """Requests one token may make per minute; 0 turns the limit off."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DiscoverySettings:
    enabled: bool = True
    instance_name: str | None = None
    """The zeroconf instance name; defaults to ``Prime Spark <node id>``."""


VISION_BACKENDS = ("auto", "hailo", "cpu")


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkSettings:
    """The WireGuard link to cloud peers; off on a node without one."""

    enabled: bool = False
    interface: str = "wg0"
    config_path: Path | None = None
    """A wg-quick file; with ``manage`` the server brings it up at start and down at stop."""
    manage: bool = False
    """False when something else (the add-on's s6 service) owns the interface."""
    poll_interval: float = 10.0
    stale_after: float = 180.0
    """A peer whose last handshake is older than this counts as disconnected."""
    wg_command: tuple[str, ...] = ("wg",)
    """How to call ``wg`` (a prefix such as ``ip netns exec NS wg`` reaches another namespace)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class VisionSettings:
    backend: str = "auto"
    """``auto`` uses the Hailo when it answers and the CPU detector otherwise."""
    hailo_device: Path = Path("/dev/hailo0")
    hailo_hef: Path | None = None
    """A compiled detection model (HEF with Hailo NMS, COCO classes) for the Hailo."""
    min_score: float = 0.5
    max_detections: int = 50
    max_image_bytes: int = 8 * 1024 * 1024


RoutingMode = Literal["edge_first", "cloud_first", "balanced"]
ROUTING_MODES: tuple[RoutingMode, ...] = ("edge_first", "cloud_first", "balanced")
PowerMode = Literal["performance", "balanced", "power_save", "critical"]
POWER_MODES: tuple[PowerMode, ...] = ("performance", "balanced", "power_save", "critical")


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerSettings:
    """An OpenAI-compatible upstream: a cloud Prime Spark node, Ollama or vLLM."""

    name: str
    url: str
    """Base URL without ``/v1`` (``http://10.8.0.1:8780``)."""
    token: str | None = None
    models: tuple[str, ...] = ()
    """Models the peer serves; empty asks the peer (``GET /v1/models``) at each health check."""
    priority: int = 0
    """Lower is tried first among healthy peers."""
    connect_timeout: float = 3.0
    first_byte_timeout: float = 60.0
    """Seconds until the peer's response starts; later a failure can still fall back."""
    timeout: float = 300.0
    """Seconds for the whole request."""
    max_concurrency: int = 4
    """Requests the peer takes at once when it does not report its slots (balanced mode)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RoutingSettings:
    mode: RoutingMode = "edge_first"
    """The mode at first start; a mode set through the control API is kept in the data dir."""
    peers: tuple[PeerSettings, ...] = ()
    default_private: bool = False
    """Requests that do not say otherwise are private (never leave this node)."""
    private_tokens: tuple[str, ...] = ()
    """Token names (``security.api_tokens``) whose requests are private unless they say not."""
    health_interval: float = 15.0
    failure_threshold: int = 3
    """Consecutive failures that open a peer's circuit breaker."""
    cooldown: float = 30.0
    """Seconds an open breaker waits before one probe may go through (half-open)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PowerSettings:
    mode: PowerMode = "balanced"
    """The mode at first start; a mode set through the control API is kept in the data dir."""
    pmic_command: str = "vcgencmd"
    """The Raspberry Pi tool read for power telemetry; absent means "no telemetry"."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MemorySettings:
    """Tiered memory (hot → warm → cold) and the response cache; see README "Memory"."""

    enabled: bool = True
    redis_url: str | None = None
    """Hot tier in Redis; unset keeps the hot tier in-process (then written through to warm)."""
    redis_prefix: str = "prime-spark:memory:"
    warm_path: Path | None = None
    """The warm tier directory (a NAS share); unset uses ``<data_dir>/memory``. A configured
    path must exist: a NAS that is not mounted must not fill the local disk instead."""
    cold_url: str | None = None
    """Base URL of a cloud Prime Spark peer whose ``/api/v1/memory`` is the cold tier."""
    cold_token: str | None = None
    max_value_bytes: int = 256 * 1024
    hot_max_items: int = 10_000
    hot_max_bytes: int = 64 * 1024 * 1024
    warm_max_items: int = 1_000_000
    warm_max_bytes: int = 8 * 1024 * 1024 * 1024
    cold_max_items: int = 0
    """0: unlimited (the peer enforces its own limits)."""
    hot_idle_seconds: float = 3600.0
    """An item not read for this long leaves the hot tier."""
    warm_idle_seconds: float = 30 * 86400.0
    """An item not read for this long leaves the warm tier (only with a cold tier)."""
    mover_interval_seconds: float = 30.0
    mover_batch: int = 200
    """Items moved per mover step; the mover yields between steps."""
    embedding_model: str = "all-minilm-l6-v2"
    cache_enabled: bool = True
    cache_ttl_seconds: float = 3600.0
    cache_max_entries: int = 10_000
    cache_semantic: bool = True
    cache_semantic_threshold: float = 0.60
    """Cosine a semantic hit needs (plus the content guard); chosen by bench/cache_sweep.py."""
    cache_thresholds: tuple[tuple[str, float], ...] = ()
    """Per namespace or model overrides: ``(name, threshold)``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AnalyticsSettings:
    """Events → spool → Kafka (optional) → PostgreSQL (optional, else SQLite) → queries."""

    enabled: bool = True
    kafka_bootstrap: str | None = None
    """``host:port[,host:port]``; unset: events go from the spool straight into the store."""
    topic_prefix: str = "prime_spark"
    consumer_group: str = "prime-spark-analytics"
    sink: bool = True
    """Run the Kafka → store consumer in this node (one node of a cluster is enough)."""
    compression: str = "zstd"
    """Kafka record batches: ``zstd`` (default), ``lz4``, ``gzip`` or ``none``. zstd and lz4 come
    from cramjam (aiokafka's codec library); gzip costs ~10x the CPU of zstd per event."""
    linger_ms: int = 20
    postgres_dsn: str | None = None
    """``postgresql://...``; unset: SQLite in the data directory."""
    timescale: bool = True
    """Use TimescaleDB (hypertables) when the PostgreSQL server has the extension."""
    sqlite_path: Path | None = None
    spool_dir: Path | None = None
    spool_max_mb: int = 256
    queue_size: int = 10_000
    raw_retention_days: float = 7.0
    minute_rollup_days: float = 30.0
    hour_rollup_days: float = 400.0
    rollup_interval: float = 60.0
    retention_interval: float = 3600.0
    node_health_interval: float = 60.0


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentSettings:
    """Distributed agents (``inference_server.agents``); see the README's Agents section."""

    redis_url: str | None = None
    """Redis for task dispatch across nodes; ``None`` keeps an in-process queue (one node)."""
    key_prefix: str = "prime-spark:agents:"
    tier: str = "edge"
    """A label shown with this node's agents (``edge``, ``cloud``)."""
    enabled: tuple[str, ...] | None = None
    """Agent types this node runs; ``None`` = every type available here, ``()`` = none."""
    modules: tuple[str, ...] = ()
    """Extra agent type modules (import paths), each exposing ``AGENT``."""
    capacity: dict[str, int] = field(default_factory=dict)
    """Tasks run at once per capability; unset ones take the agent type's default."""
    heartbeat_interval: float = 2.0
    agent_timeout: float = 10.0
    """An agent without a heartbeat for this long is gone."""
    reclaim_idle: float = 30.0
    """A task whose worker went silent this long is taken over by another worker."""
    max_deliveries: int = 3
    """Attempts before a task goes to the dead-letter stream."""
    retry_backoff: float = 1.0
    """Seconds before the first retry; doubles with each attempt up to ``retry_backoff_max``."""
    retry_backoff_max: float = 60.0
    result_ttl: float = 3600.0
    """Seconds a finished task (and its idempotency key) is kept."""
    task_timeout: float = 300.0
    """Longest one attempt may run when the task has no earlier deadline."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    link: LinkSettings = field(default_factory=LinkSettings)
    vision: VisionSettings = field(default_factory=VisionSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    power: PowerSettings = field(default_factory=PowerSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    agents: AgentSettings = field(default_factory=AgentSettings)


def _port(value: Any) -> int:
    return vol.All(vol.Coerce(int), vol.Range(min=1, max=65535))(value)  # type: ignore[no-any-return]


def _positive_int(minimum: int = 1, maximum: int | None = None) -> vol.All:
    return vol.All(vol.Coerce(int), vol.Range(min=minimum, max=maximum))


def _string_list(value: Any) -> list[str]:
    """Accept a YAML list or a comma-separated string (the form an env variable takes)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return vol.Schema([str])(value)  # type: ignore[no-any-return]


def _boolean(value: Any) -> bool:
    return vol.Boolean()(value)  # type: ignore[no-any-return]


def _token_list(value: Any) -> list[dict[str, Any]]:
    """Tokens come as a list of mappings, or as JSON text from an environment variable."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise vol.Invalid(f"expected a JSON list of tokens ({err.msg})") from err
    return vol.Schema([TOKEN_SCHEMA])(value)  # type: ignore[no-any-return]


def _jwt_secret(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) < 32:
        raise vol.Invalid("a JWT secret needs 32+ characters (HS256 keys shorter are guessable)")
    return value


def _seconds(minimum: float = 0.1) -> vol.All:
    return vol.All(vol.Coerce(float), vol.Range(min=minimum))


def _peer_url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise vol.Invalid("expected an http:// or https:// URL")
    url = value.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _peer_list(value: Any) -> list[dict[str, Any]]:
    """Peers come as a list of mappings, or as JSON text from an environment variable."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise vol.Invalid(f"expected a JSON list of peers ({err.msg})") from err
    peers: list[dict[str, Any]] = vol.Schema([PEER_SCHEMA])(value)
    names = [p["name"] for p in peers]
    if len(set(names)) != len(names):
        raise vol.Invalid("peer names must be unique")
    return peers


PEER_SCHEMA = vol.Schema(
    {
        vol.Required("name"): vol.All(
            str, vol.Match(r"^[A-Za-z0-9_.-]{1,64}$", msg="expected 1-64 of A-Z a-z 0-9 _ . -")
        ),
        vol.Required("url"): _peer_url,
        vol.Optional("token"): vol.Any(None, vol.All(str, vol.Length(min=1))),
        vol.Optional("models"): _string_list,
        vol.Optional("priority"): vol.All(vol.Coerce(int), vol.Range(min=0, max=1000)),
        vol.Optional("connect_timeout"): _seconds(),
        vol.Optional("first_byte_timeout"): _seconds(),
        vol.Optional("timeout"): _seconds(),
        vol.Optional("max_concurrency"): _positive_int(1, 1024),
    }
)


def _capacity_map(value: Any) -> dict[str, int]:
    """``{llm: 2}`` from YAML, or ``llm=2,embed=4`` / JSON text from an environment variable."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise vol.Invalid(f"expected a JSON object ({err.msg})") from err
        else:
            pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise vol.Invalid("expected capability=count pairs, e.g. llm=2,embed=4")
            value = {k.strip(): v.strip() for k, v in pairs}
    return vol.Schema({vol.Match(r"^[a-z][a-z0-9_.-]{0,63}$"): _positive_int(1, 1024)})(value)  # type: ignore[no-any-return]


def _redis_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise vol.Invalid("expected a redis://, rediss:// or unix:// URL")
    return value


def _agent_timing(section: dict[str, Any]) -> dict[str, Any]:
    """A worker must refresh its tasks well within the reclaim bound, or live work is stolen."""
    defaults = AgentSettings()
    heartbeat = section.get("heartbeat_interval", defaults.heartbeat_interval)
    reclaim = section.get("reclaim_idle", defaults.reclaim_idle)
    if reclaim < 2 * heartbeat:
        raise vol.Invalid("must be at least twice agents.heartbeat_interval", path=["reclaim_idle"])
    return section


TOKEN_SCHEMA = vol.Schema(
    {
        vol.Required("name"): vol.All(str, vol.Length(min=1, max=64)),
        vol.Required("token"): vol.All(
            str, vol.Length(min=16, msg="a token must be at least 16 characters long")
        ),
        vol.Required("role"): vol.In(ROLES, msg=f"expected one of {', '.join(ROLES)}"),
    }
)

SCHEMA = vol.Schema(
    {
        vol.Optional("server", default={}): {
            vol.Optional("host"): vol.All(str, vol.Length(min=1)),
            vol.Optional("port"): _port,
            vol.Optional("node_id"): vol.All(
                str, vol.Match(r"^[A-Za-z0-9_.-]{1,64}$", msg="expected 1-64 of A-Z a-z 0-9 _ . -")
            ),
            vol.Optional("data_dir"): vol.All(str, vol.Length(min=1)),
            vol.Optional("log_level"): vol.All(
                vol.Lower, vol.In(LOG_LEVELS, msg=f"expected one of {', '.join(LOG_LEVELS)}")
            ),
            vol.Optional("cors_origins"): _string_list,
            vol.Optional("max_body_bytes"): _positive_int(1024),
            vol.Optional("stream_keepalive_seconds"): vol.All(
                vol.Coerce(float), vol.Range(min=0, max=300)
            ),
        },
        vol.Optional("models", default={}): {
            vol.Optional("default"): vol.All(str, vol.Length(min=1)),
            vol.Optional("paths"): _string_list,
            vol.Optional("max_loaded"): _positive_int(1, 16),
            vol.Optional("slots"): _positive_int(1, 64),
            vol.Optional("queue_size"): _positive_int(0, 10_000),
            vol.Optional("context_size"): _positive_int(128, 1_048_576),
            vol.Optional("threads"): vol.Any(None, _positive_int(1, 256)),
            vol.Optional("batch_size"): _positive_int(1, 65_536),
            vol.Optional("request_timeout"): vol.All(vol.Coerce(float), vol.Range(min=0.1)),
            vol.Optional("max_tokens_default"): _positive_int(1, 1_048_576),
            vol.Optional("chat_template"): vol.Any(None, str),
            vol.Optional("embeddings"): _boolean,
        },
        vol.Optional("security", default={}): {
            vol.Optional("api_tokens"): _token_list,
            vol.Optional("jwt_secret"): _jwt_secret,
            vol.Optional("jwt_algorithms"): vol.All(
                _string_list, [vol.In(("HS256", "HS384", "HS512"))]
            ),
            vol.Optional("jwt_audience"): vol.Any(None, str),
            vol.Optional("rate_limit_per_minute"): _positive_int(0),
        },
        vol.Optional("discovery", default={}): {
            vol.Optional("enabled"): _boolean,
            vol.Optional("instance_name"): vol.Any(None, vol.All(str, vol.Length(min=1, max=63))),
        },
        vol.Optional("link", default={}): {
            vol.Optional("enabled"): _boolean,
            vol.Optional("interface"): vol.All(
                str, vol.Match(r"^[A-Za-z0-9_=+.-]{1,15}$", msg="expected an interface name")
            ),
            vol.Optional("config_path"): vol.Any(None, vol.All(str, vol.Length(min=1))),
            vol.Optional("manage"): _boolean,
            vol.Optional("poll_interval"): vol.All(vol.Coerce(float), vol.Range(min=0.1)),
            vol.Optional("stale_after"): vol.All(vol.Coerce(float), vol.Range(min=1)),
            vol.Optional("wg_command"): vol.All(_string_list, vol.Length(min=1)),
        },
        vol.Optional("vision", default={}): {
            vol.Optional("backend"): vol.All(
                vol.Lower,
                vol.In(VISION_BACKENDS, msg=f"expected one of {', '.join(VISION_BACKENDS)}"),
            ),
            vol.Optional("hailo_device"): vol.All(str, vol.Length(min=1)),
            vol.Optional("hailo_hef"): vol.Any(None, vol.All(str, vol.Length(min=1))),
            vol.Optional("min_score"): vol.All(vol.Coerce(float), vol.Range(min=0, max=1)),
            vol.Optional("max_detections"): _positive_int(1, 1000),
            vol.Optional("max_image_bytes"): _positive_int(1024),
        },
        vol.Optional("routing", default={}): {
            vol.Optional("mode"): vol.In(
                ROUTING_MODES, msg=f"expected one of {', '.join(ROUTING_MODES)}"
            ),
            vol.Optional("peers"): _peer_list,
            vol.Optional("default_private"): _boolean,
            vol.Optional("private_tokens"): _string_list,
            vol.Optional("health_interval"): _seconds(),
            vol.Optional("failure_threshold"): _positive_int(1, 100),
            vol.Optional("cooldown"): _seconds(),
        },
        vol.Optional("power", default={}): {
            vol.Optional("mode"): vol.In(
                POWER_MODES, msg=f"expected one of {', '.join(POWER_MODES)}"
            ),
            vol.Optional("pmic_command"): vol.All(str, vol.Length(min=1)),
        },
        vol.Optional("memory", default={}): {
            vol.Optional("enabled"): _boolean,
            vol.Optional("redis_url"): vol.Any(
                None,
                vol.All(str, vol.Match(r"^(redis|rediss|unix)://", msg="expected a redis:// URL")),
            ),
            vol.Optional("redis_prefix"): vol.All(str, vol.Length(min=1, max=64)),
            vol.Optional("warm_path"): vol.Any(None, vol.All(str, vol.Length(min=1))),
            vol.Optional("cold_url"): vol.Any(
                None, vol.All(str, vol.Match(r"^https?://", msg="expected an http(s):// URL"))
            ),
            vol.Optional("cold_token"): vol.Any(None, str),
            vol.Optional("max_value_bytes"): _positive_int(16, 16 * 1024 * 1024),
            vol.Optional("hot_max_items"): _positive_int(1),
            vol.Optional("hot_max_bytes"): _positive_int(1024),
            vol.Optional("warm_max_items"): _positive_int(1),
            vol.Optional("warm_max_bytes"): _positive_int(1024),
            vol.Optional("cold_max_items"): _positive_int(0),
            vol.Optional("hot_idle_seconds"): vol.All(vol.Coerce(float), vol.Range(min=0)),
            vol.Optional("warm_idle_seconds"): vol.All(vol.Coerce(float), vol.Range(min=0)),
            vol.Optional("mover_interval_seconds"): vol.All(
                vol.Coerce(float), vol.Range(min=0.05, max=86400)
            ),
            vol.Optional("mover_batch"): _positive_int(1, 100_000),
            vol.Optional("embedding_model"): vol.All(str, vol.Length(min=1)),
            vol.Optional("cache_enabled"): _boolean,
            vol.Optional("cache_ttl_seconds"): vol.All(vol.Coerce(float), vol.Range(min=0)),
            vol.Optional("cache_max_entries"): _positive_int(1),
            vol.Optional("cache_semantic"): _boolean,
            vol.Optional("cache_semantic_threshold"): vol.All(
                vol.Coerce(float), vol.Range(min=0, max=1)
            ),
            vol.Optional("cache_thresholds"): vol.Schema(
                {str: vol.All(vol.Coerce(float), vol.Range(min=0, max=1))}
            ),
        },
        vol.Optional("analytics", default={}): {
            vol.Optional("enabled"): _boolean,
            vol.Optional("kafka_bootstrap"): vol.Any(None, vol.All(str, vol.Length(min=1))),
            vol.Optional("topic_prefix"): vol.All(
                str, vol.Match(r"^[A-Za-z0-9_-]{1,100}$", msg="expected 1-100 of A-Z a-z 0-9 _ -")
            ),
            vol.Optional("consumer_group"): vol.All(str, vol.Length(min=1, max=200)),
            vol.Optional("sink"): _boolean,
            vol.Optional("compression"): vol.In(
                COMPRESSIONS, msg=f"expected one of {', '.join(COMPRESSIONS)}"
            ),
            vol.Optional("linger_ms"): _positive_int(0, 10_000),
            vol.Optional("postgres_dsn"): vol.Any(
                None,
                vol.All(
                    str,
                    vol.Match(r"^postgres(ql)?://", msg="expected a postgresql:// URL"),
                ),
            ),
            vol.Optional("timescale"): _boolean,
            vol.Optional("sqlite_path"): vol.Any(None, vol.All(str, vol.Length(min=1))),
            vol.Optional("spool_dir"): vol.Any(None, vol.All(str, vol.Length(min=1))),
            vol.Optional("spool_max_mb"): _positive_int(1, 1_000_000),
            vol.Optional("queue_size"): _positive_int(100, 10_000_000),
            vol.Optional("raw_retention_days"): vol.All(vol.Coerce(float), vol.Range(min=0.01)),
            vol.Optional("minute_rollup_days"): vol.All(vol.Coerce(float), vol.Range(min=0.01)),
            vol.Optional("hour_rollup_days"): vol.All(vol.Coerce(float), vol.Range(min=0.01)),
            vol.Optional("rollup_interval"): vol.All(vol.Coerce(float), vol.Range(min=0.1)),
            vol.Optional("retention_interval"): vol.All(vol.Coerce(float), vol.Range(min=1)),
            vol.Optional("node_health_interval"): vol.All(vol.Coerce(float), vol.Range(min=0.1)),
        },
        vol.Optional("agents", default={}): vol.All(
            {
                vol.Optional("redis_url"): _redis_url,
                vol.Optional("key_prefix"): vol.All(str, vol.Length(min=1, max=64)),
                vol.Optional("tier"): vol.All(str, vol.Length(min=1, max=32)),
                vol.Optional("enabled"): vol.Any(None, _string_list),
                vol.Optional("modules"): _string_list,
                vol.Optional("capacity"): _capacity_map,
                vol.Optional("heartbeat_interval"): _seconds(0.05),
                vol.Optional("agent_timeout"): _seconds(0.5),
                vol.Optional("reclaim_idle"): _seconds(0.1),
                vol.Optional("max_deliveries"): _positive_int(1, 100),
                vol.Optional("retry_backoff"): _seconds(0.0),
                vol.Optional("retry_backoff_max"): _seconds(0.0),
                vol.Optional("result_ttl"): _seconds(1.0),
                vol.Optional("task_timeout"): _seconds(0.1),
            },
            _agent_timing,
        ),
    }
)


SECTIONS = (
    "server",
    "models",
    "security",
    "discovery",
    "link",
    "vision",
    "routing",
    "power",
    "memory",
    "analytics",
    "agents",
)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``PRIME_SPARK_SECTION__KEY=value`` → ``{"section": {"key": "value"}}``.

    Other ``PRIME_SPARK_*`` names belong to the scripts and tests and are left alone, except
    ones that look like a setting with a single underscore (``PRIME_SPARK_SERVER_PORT``): that
    is a typo a person would otherwise hunt for, so it is refused with the right spelling.
    """
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, sep, key = rest.partition("__")
        if not sep:
            typo = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
            if typo is not None:
                raise ConfigError(
                    f"{name}: environment settings take the form PRIME_SPARK_<SECTION>__<KEY> "
                    f"(two underscores), e.g. PRIME_SPARK_{typo.upper()}__"
                    f"{rest[len(typo) + 1 :].upper()}"
                )
            continue
        if not key:
            raise ConfigError(f"{name}: the setting name after '__' is missing")
        out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    merged = dict(base)
    for section, values in overrides.items():
        current = merged.get(section) or {}
        if not isinstance(current, dict):
            current = {}
        merged[section] = {**current, **values}
    return merged


def _describe(error: vol.Invalid) -> str:
    key = ".".join(str(part) for part in error.path) or "(top level)"
    message = error.error_message or str(error)
    if message.startswith("extra keys not allowed"):
        message = "unknown setting"
    return f"{key}: {message}"


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Read, merge (file < environment < explicit overrides), validate and type the settings."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_CONFIG_FILE):
        path = Path(environ[ENV_CONFIG_FILE])
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"cannot read the settings file {path}: {err.strerror}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"the settings file {path} is not valid YAML: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"the settings file {path} must hold a mapping of sections")
        raw = loaded or {}
    raw = _merge(raw, _env_overrides(environ))
    if overrides:
        raw = _merge(raw, overrides)
    try:
        data: dict[str, dict[str, Any]] = SCHEMA(raw)
    except vol.MultipleInvalid as err:
        problems = sorted({_describe(e) for e in err.errors})
        raise ConfigError("invalid settings: " + "; ".join(problems)) from err
    return _build(data)


def _build(data: dict[str, dict[str, Any]]) -> Settings:
    server = dict(data["server"])
    if "data_dir" in server:
        server["data_dir"] = Path(server["data_dir"]).expanduser()
    if "cors_origins" in server:
        server["cors_origins"] = tuple(server["cors_origins"])
    models = dict(data["models"])
    if "paths" in models:
        models["paths"] = tuple(Path(p).expanduser() for p in models["paths"])
    security = dict(data["security"])
    if "api_tokens" in security:
        security["api_tokens"] = tuple(ApiToken(**t) for t in security["api_tokens"])
    if "jwt_algorithms" in security:
        security["jwt_algorithms"] = tuple(security["jwt_algorithms"])
    link = dict(data["link"])
    if link.get("config_path"):
        link["config_path"] = Path(link["config_path"]).expanduser()
    if "wg_command" in link:
        link["wg_command"] = tuple(link["wg_command"])
    vision = dict(data["vision"])
    for key in ("hailo_device", "hailo_hef"):
        if vision.get(key):
            vision[key] = Path(vision[key])
    routing = dict(data["routing"])
    if "peers" in routing:
        routing["peers"] = tuple(
            PeerSettings(**{**p, "models": tuple(p.get("models", ()))}) for p in routing["peers"]
        )
    if "private_tokens" in routing:
        routing["private_tokens"] = tuple(routing["private_tokens"])
    memory = dict(data["memory"])
    if memory.get("warm_path"):
        memory["warm_path"] = Path(memory["warm_path"]).expanduser()
    if "cache_thresholds" in memory:
        memory["cache_thresholds"] = tuple(sorted(memory["cache_thresholds"].items()))
    analytics = dict(data["analytics"])
    for key in ("sqlite_path", "spool_dir"):
        if analytics.get(key):
            analytics[key] = Path(analytics[key]).expanduser()
    return Settings(
        analytics=AnalyticsSettings(**analytics),
        server=ServerSettings(**server),
        models=ModelSettings(**models),
        security=SecuritySettings(**security),
        discovery=DiscoverySettings(**data["discovery"]),
        routing=RoutingSettings(**routing),
        power=PowerSettings(**data["power"]),
        link=LinkSettings(**link),
        vision=VisionSettings(**vision),
        memory=MemorySettings(**memory),
        agents=_build_agents(data["agents"]),
    )


def _build_agents(data: dict[str, Any]) -> AgentSettings:
    agents = dict(data)
    for key in ("enabled", "modules"):
        if agents.get(key) is not None:
            agents[key] = tuple(agents[key])
    return AgentSettings(**agents)
