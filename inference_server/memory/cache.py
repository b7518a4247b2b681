"""The response cache in front of generation: exact and semantic, per namespace and privacy scope.

Rules (README "Response cache"):

- **Scope.** An entry is only ever served to a request of the same namespace (header
  ``X-Prime-Spark-Namespace`` or body ``namespace``; default ``user:<OpenAI user field>`` or
  ``shared``) and the same privacy (header ``X-Prime-Spark-Private: 1`` or body ``private``).
- **Exact.** The key is a hash of the scope, the model and every field that shapes the answer
  (messages, tools, sampling parameters, response format...). Only deterministic requests
  (``temperature`` 0) are cached, unless the request opts in with ``cache: "always"``.
- **Semantic.** Among entries of the same scope, model and *context* (everything but the last
  user message), the nearest last user message by embedding cosine counts as a hit when it
  reaches the threshold (per namespace or model, else ``memory.cache_semantic_threshold``)
  *and* passes the content guard (:mod:`inference_server.memory.guard`).
- **Bypass.** Header ``X-Prime-Spark-Cache: bypass`` or body ``cache: "bypass"`` skips lookup and
  store. **TTL** ``memory.cache_ttl_seconds``. Every chat response says
  ``x-prime-spark-cache: hit | semantic-hit | miss | bypass``.

Entries live in-process (an LRU bounded by ``memory.cache_max_entries``): a hit must cost less
than a millisecond, and a cache is allowed to be lost on restart.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiohttp import web

from inference_server.config import MemorySettings
from inference_server.memory.embedder import Embedder, cosine
from inference_server.memory.guard import Signature, compatible, signature

CacheStatus = Literal["hit", "semantic-hit", "miss", "bypass"]
HEADER = "x-prime-spark-cache"
CACHE_MODE_HEADER = "X-Prime-Spark-Cache"
NAMESPACE_HEADER = "X-Prime-Spark-Namespace"
_EXCLUDED = frozenset(
    {"stream", "stream_options", "cache", "private", "namespace", "user", "metadata", "store"}
)


@dataclass(slots=True)
class _Entry:
    response: dict[str, Any]
    expires_at: float
    group: str | None
    vector: tuple[float, ...] | None = None
    signature: Signature | None = None
    encoded: bytes = b""
    """The response without ``id`` and ``created`` as compact JSON, encoded once when stored:
    a hit only splices its own id and time in front (see :func:`hit_body`)."""


_PER_HIT = frozenset({"id", "created"})
# Made once: ``json.dumps`` with non-default options builds a new encoder on every call, and
# both run on every lookup or store.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_entry(response: dict[str, Any]) -> bytes:
    """The stored part of a cached reply as JSON bytes (every hit gets its own id and time)."""
    rest = {key: value for key, value in response.items() if key not in _PER_HIT}
    return _COMPACT.encode(rest).encode()


def hit_body(encoded: bytes, object_id: str, created: int) -> bytes:
    """``{"id": ..., "created": ..., <the stored fields>}`` without serializing them again."""
    head = b'{"id":' + json.dumps(object_id).encode() + b',"created":' + str(created).encode()
    return head + (b"}" if encoded == b"{}" else b"," + encoded[1:])


@dataclass(slots=True)
class CacheCounters:
    hit: int = 0
    semantic_hit: int = 0
    miss: int = 0
    bypass: int = 0
    stored: int = 0
    evicted: int = 0


@dataclass(slots=True)
class Lookup:
    """The cache's view of one chat request: what it answered, and how to store the reply."""

    status: CacheStatus
    response: dict[str, Any] | None = None
    encoded: bytes | None = None
    """The stored reply as JSON (see :func:`encode_entry`) when ``response`` is set."""
    key: str | None = None
    group: str | None = None
    vector: tuple[float, ...] | None = None
    signature: Signature | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Alias:
    """What an exact hit needs to be answered again from the same request bytes.

    Recorded by the caller after an exact hit, under a key the caller makes of the raw body and
    of everything outside the body that the lookup depends on (see
    :func:`inference_server.api.response_cache.body_alias_key`). Serving from it skips parsing,
    validating and canonicalising a body that was already found to hit. ``model`` and
    ``private`` are the request's own fields (``None`` when absent: the node's default model and
    the router's privacy default apply, and those may change); ``resolved_model`` and
    ``resolved_private`` are what the canonical key was made with, so an alias whose defaults no
    longer resolve the same way is not used.
    """

    key: str
    model: str | None
    private: bool | None
    resolved_model: str
    resolved_private: bool
    stream: bool
    include_usage: bool


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def scope_of(body: dict[str, Any], headers: Any) -> tuple[str, bool]:
    namespace = headers.get(NAMESPACE_HEADER) or body.get("namespace")
    if not namespace:
        user = body.get("user")
        namespace = f"user:{user}" if isinstance(user, str) and user else "shared"
    private = _truthy(headers.get("X-Prime-Spark-Private")) or _truthy(body.get("private"))
    return str(namespace), private


def _digest(data: Any) -> str:
    text = _CANONICAL.encode(data)
    return hashlib.sha256(text.encode()).hexdigest()


def _last_user_text(messages: list[Any]) -> str | None:
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    content = messages[-1].get("content")
    return content if isinstance(content, str) and content.strip() else None


class ResponseCache:
    def __init__(self, settings: MemorySettings, embedder: Embedder | None) -> None:
        self._settings = settings
        self._embedder = embedder if settings.cache_semantic else None
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._groups: dict[str, set[str]] = {}
        self._thresholds = dict(settings.cache_thresholds)
        self._aliases: dict[Hashable, Alias] = {}
        self.counters = CacheCounters()

    @property
    def enabled(self) -> bool:
        return self._settings.cache_enabled

    def threshold(self, namespace: str, model: str) -> float:
        return self._thresholds.get(
            namespace, self._thresholds.get(model, self._settings.cache_semantic_threshold)
        )

    def __len__(self) -> int:
        return len(self._entries)

    def flush(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        self._groups.clear()
        self._aliases.clear()
        return count

    def remember_alias(self, alias_key: Hashable, alias: Alias) -> None:
        """Keep an alias of an exact hit (the oldest go first beyond twice the entry bound)."""
        aliases = self._aliases
        aliases.pop(alias_key, None)
        aliases[alias_key] = alias
        while len(aliases) > 2 * self._settings.cache_max_entries:
            del aliases[next(iter(aliases))]

    def alias(self, alias_key: Hashable) -> Alias | None:
        """The alias kept under ``alias_key`` (``None`` when unknown or the cache is off)."""
        return self._aliases.get(alias_key) if self.enabled else None

    def lookup_alias(self, alias_key: Hashable, alias: Alias) -> Lookup | None:
        """The exact hit an alias points to, counted as a hit; ``None`` (nothing counted) when
        its entry expired or was evicted: the caller then does the full lookup, which misses."""
        entry = self._get(alias.key, time.time())
        if entry is None:
            self._aliases.pop(alias_key, None)
            return None
        self.counters.hit += 1
        return Lookup(status="hit", response=entry.response, encoded=entry.encoded, key=alias.key)

    def stats(self) -> dict[str, Any]:
        c = self.counters
        lookups = c.hit + c.semantic_hit + c.miss
        return {
            "enabled": self.enabled,
            "semantic": self._embedder is not None,
            "entries": len(self._entries),
            "max_entries": self._settings.cache_max_entries,
            "ttl_seconds": self._settings.cache_ttl_seconds,
            "threshold": self._settings.cache_semantic_threshold,
            "thresholds": self._thresholds,
            "hits": c.hit,
            "semantic_hits": c.semantic_hit,
            "misses": c.miss,
            "bypassed": c.bypass,
            "stored": c.stored,
            "evicted": c.evicted,
            "hit_rate": round((c.hit + c.semantic_hit) / lookups, 4) if lookups else None,
        }

    async def lookup(
        self, body: dict[str, Any], headers: Any, model: str, *, private: bool | None = None
    ) -> Lookup:
        """Answer from the cache or say how to store the reply; ``private`` (the router's
        verdict) overrides the request's own flags when given."""
        mode = str(headers.get(CACHE_MODE_HEADER) or body.get("cache") or "auto").lower()
        deterministic = body.get("temperature") == 0 or mode == "always"
        if not self.enabled or mode == "bypass" or not deterministic or body.get("n", 1) != 1:
            self.counters.bypass += 1
            return Lookup(status="bypass")
        namespace, flagged = scope_of(body, headers)
        private = flagged if private is None else private
        scope = {"namespace": namespace, "private": private, "model": model}
        shaped = {k: v for k, v in body.items() if k not in _EXCLUDED and k != "model"}
        key = _digest({**scope, "body": shaped})
        now = time.time()
        entry = self._get(key, now)
        if entry is not None:
            self.counters.hit += 1
            return Lookup(status="hit", response=entry.response, encoded=entry.encoded, key=key)
        result = Lookup(status="miss", key=key)
        text = _last_user_text(body.get("messages") or [])
        if self._embedder is not None and text is not None:
            context = {**shaped, "messages": shaped["messages"][:-1]}
            result.group = _digest({**scope, "context": context})
            result.signature = signature(text)
            result.vector = await self._embedder.embed(text)
            best = self._nearest(result, now, self.threshold(namespace, model))
            if best is not None:
                self.counters.semantic_hit += 1
                result.status = "semantic-hit"
                result.response = best.response
                result.encoded = best.encoded
                return result
        self.counters.miss += 1
        return result

    def _get(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def _nearest(self, lookup: Lookup, now: float, threshold: float) -> _Entry | None:
        if lookup.group is None or lookup.vector is None:
            return None
        best: tuple[float, str] | None = None
        for key in list(self._groups.get(lookup.group, ())):
            entry = self._get(key, now)
            if entry is None or entry.vector is None or entry.signature is None:
                continue
            if lookup.signature is None or not compatible(lookup.signature, entry.signature):
                continue
            score = cosine(lookup.vector, entry.vector)
            if score >= threshold and (best is None or score > best[0]):
                best = (score, key)
        return None if best is None else self._entries[best[1]]

    def store(self, lookup: Lookup, response: dict[str, Any]) -> None:
        """Keep a finished reply (a deterministic one cut at max_tokens is the same next time)."""
        if lookup.key is None or lookup.status != "miss":
            return
        finish = (response.get("choices") or [{}])[0].get("finish_reason")
        if finish not in ("stop", "tool_calls", "length"):
            return
        self._entries[lookup.key] = _Entry(
            response=response,
            expires_at=time.time() + self._settings.cache_ttl_seconds,
            group=lookup.group,
            vector=lookup.vector,
            signature=lookup.signature,
            encoded=encode_entry(response),
        )
        self._entries.move_to_end(lookup.key)
        if lookup.group is not None:
            self._groups.setdefault(lookup.group, set()).add(lookup.key)
        self.counters.stored += 1
        while len(self._entries) > self._settings.cache_max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.counters.evicted += 1

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.group is not None:
            members = self._groups.get(entry.group)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._groups[entry.group]


RESPONSE_CACHE_KEY: Final = web.AppKey("response_cache", ResponseCache)
CACHE_STATUS_KEY: Final = web.RequestKey("cache_status", str)
