"""``/api/v1/memory/...``: the tiered memory and the response cache, for HA and for edge peers.

A cloud node's routes double as the cold tier of edge nodes: ``raw`` reads and writes carry the
canonical item text unchanged, so a copy across the link is verified by checksum, and
``if_checksum`` makes a delete conditional.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterable
from typing import Final

import voluptuous as vol
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inference_server.api.errors import ApiError
from inference_server.api.response_cache import add_cache_header
from inference_server.api.validation import (
    integer_range,
    nullable,
    number_range,
    query_flag,
    query_integer,
    read_json,
    validate,
)
from inference_server.backends.base import PromptTooLongError
from inference_server.memory.cache import RESPONSE_CACHE_KEY, ResponseCache
from inference_server.memory.embedder import Embedder
from inference_server.memory.record import (
    MAX_KEY_CHARS,
    NAMESPACE_RE,
    TIERS,
    TierUnavailableError,
    checksum,
)
from inference_server.memory.store import InvalidItemError, TieredMemory
from inference_server.metrics import METRICS_KEY
from inference_server.node import NODE_KEY
from inference_server.security.middleware import requires

_LOGGER = logging.getLogger(__name__)

routes = web.RouteTableDef()

MEMORY_KEY: Final = web.AppKey("memory", TieredMemory)

MAX_TTL_SECONDS = 10 * 365 * 86400

MAX_QUERY_CHARS = 256
"""A search query is one sentence: the bundled all-MiniLM-L6-v2 was trained on (and
sentence-transformers truncates to) 256 word pieces, and a WordPiece token covers at least one
character, so 256 characters always fit its 512-token window. A configured model with a smaller
window still answers a too-long query with the documented 413."""

PUT_SCHEMA = vol.Schema(
    vol.Any(
        {
            vol.Required("value"): object,
            vol.Optional("metadata", default={}): dict,
            vol.Optional("tags", default=[]): [str],
            vol.Optional("ttl_seconds"): nullable(number_range(1, MAX_TTL_SECONDS)),
        },
        {
            vol.Required("raw"): str,
            vol.Optional("only_if_absent", default=False): bool,
        },
    )
)

SEARCH_SCHEMA = vol.Schema(
    {
        vol.Required("namespace"): str,
        vol.Required("query"): vol.All(
            str, vol.Length(min=1, max=MAX_QUERY_CHARS, msg=f"1 to {MAX_QUERY_CHARS} characters")
        ),
        vol.Optional("top_k", default=5): integer_range(1, 100),
        vol.Optional("min_score", default=0.0): number_range(-1, 1),
        vol.Optional("raw", default=False): bool,
    }
)


CHECKSUM_RE = re.compile(r"[0-9a-f]{64}")


def _check_address(namespace: str, key: str) -> None:
    """A path the document's patterns refuse is a 400, before any tier is asked."""
    if not NAMESPACE_RE.fullmatch(namespace):
        raise ApiError(
            400,
            "namespace: 1-128 of A-Z a-z 0-9 _ . : @ - (not starting with '.')",
            param="namespace",
        )
    if len(key) > MAX_KEY_CHARS or "\x00" in key:
        raise ApiError(400, f"key: 1-{MAX_KEY_CHARS} characters, no NUL", param="key")


def _memory(request: web.Request) -> TieredMemory:
    memory = request.app.get(MEMORY_KEY)
    if memory is None:
        raise ApiError(404, "Memory is turned off on this node (memory.enabled)", code="disabled")
    return memory


def _unavailable(err: TierUnavailableError) -> ApiError:
    return ApiError(
        503,
        str(err),
        type_="server_error",
        code=f"{err.tier}_tier_unavailable",
        headers={"Retry-After": "5"},
    )


def _bad(err: InvalidItemError) -> ApiError:
    return ApiError(400, str(err), param=err.param, code="invalid_item")


@routes.get("/api/v1/memory/status")
@requires("reader")
async def memory_status(request: web.Request) -> web.Response:
    memory = _memory(request)
    data = await memory.status()
    cache = request.app.get(RESPONSE_CACHE_KEY)
    data["response_cache"] = cache.stats() if cache is not None else None
    return web.json_response(data)


@routes.get("/api/v1/memory/items")
@requires("reader")
async def list_items(request: web.Request) -> web.Response:
    memory = _memory(request)
    query = request.query
    tier = query.get("tier")
    if tier is not None and tier not in TIERS:
        raise ApiError(400, f"tier: expected one of {', '.join(TIERS)}", param="tier")
    limit = query_integer(request, "limit", 100, 1, 10_000)
    cursor = query.get("cursor", "")
    raw = query_flag(request, "raw") or False
    try:
        items = await memory.list_items(
            query.get("namespace"),
            prefix=query.get("prefix", ""),
            tag=query.get("tag"),
            limit=1_000_000,
            tier=tier,
        )
    except TierUnavailableError as err:
        raise _unavailable(err) from err
    if cursor:
        items = [e for e in items if f"{e[0].namespace}\x00{e[0].key}" > cursor]
    page = items[:limit]
    out = []
    for item, where in page:
        entry = item.public(where)
        if raw:
            entry["raw"] = item.encode()
        out.append(entry)
    next_cursor = (
        f"{page[-1][0].namespace}\x00{page[-1][0].key}" if len(items) > limit and page else None
    )
    return web.json_response({"items": out, "count": len(out), "next_cursor": next_cursor})


@routes.get("/api/v1/memory/items/{namespace}/{key}")
@requires("reader")
async def get_item(request: web.Request) -> web.Response:
    memory = _memory(request)
    namespace, key = request.match_info["namespace"], request.match_info["key"]
    _check_address(namespace, key)
    raw = query_flag(request, "raw") or False
    promote = query_flag(request, "promote") is not False
    try:
        found = await memory.get(namespace, key, promote=promote)
    except TierUnavailableError as err:
        raise _unavailable(err) from err
    if found is None:
        raise ApiError(404, f"No memory item '{key}' in namespace '{namespace}'", code="not_found")
    item, tier = found
    data = item.public(tier)
    if raw:
        data["raw"] = item.encode()
    return web.json_response(data)


@routes.put("/api/v1/memory/items/{namespace}/{key}")
@requires("operator")
async def put_item(request: web.Request) -> web.Response:
    memory = _memory(request)
    namespace, key = request.match_info["namespace"], request.match_info["key"]
    _check_address(namespace, key)
    body = validate(PUT_SCHEMA, await read_json(request))
    try:
        if "raw" in body:
            tier = await memory.put_raw(
                body["raw"], only_if_absent=body["only_if_absent"], address=(namespace, key)
            )
            if tier is None:
                raise ApiError(409, "The item already exists", code="exists")
            return web.json_response({"stored": True, "tier": tier})
        item, tier = await memory.put(
            namespace,
            key,
            body["value"],
            metadata=body["metadata"],
            tags=body["tags"],
            ttl_seconds=body.get("ttl_seconds"),
        )
    except InvalidItemError as err:
        raise _bad(err) from err
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        # decode() of text that is JSON but not an item object fails with the latter two.
        raise ApiError(400, f"raw: not a memory item ({err})", param="raw") from err
    except TierUnavailableError as err:
        raise _unavailable(err) from err
    return web.json_response(item.public(tier))


@routes.delete("/api/v1/memory/items/{namespace}/{key}")
@requires("operator")
async def delete_item(request: web.Request) -> web.Response:
    memory = _memory(request)
    namespace, key = request.match_info["namespace"], request.match_info["key"]
    _check_address(namespace, key)
    expected = request.query.get("if_checksum")
    if expected is not None and not CHECKSUM_RE.fullmatch(expected):
        raise ApiError(
            400, "if_checksum: expected a SHA-256 as 64 lowercase hex digits", param="if_checksum"
        )
    try:
        if expected is not None:
            found = await memory.get(namespace, key, promote=False)
            if found is None:
                raise ApiError(
                    404, f"No memory item '{key}' in namespace '{namespace}'", code="not_found"
                )
            if checksum(found[0].encode()) != expected:
                raise ApiError(409, "The item changed", code="checksum_mismatch")
        deleted = await memory.delete(namespace, key)
    except TierUnavailableError as err:
        raise _unavailable(err) from err
    if not deleted:
        raise ApiError(404, f"No memory item '{key}' in namespace '{namespace}'", code="not_found")
    return web.json_response({"deleted": True})


@routes.post("/api/v1/memory/search")
@requires("reader")
async def search(request: web.Request) -> web.Response:
    memory = _memory(request)
    body = validate(SEARCH_SCHEMA, await read_json(request))
    try:
        results = await memory.search(
            body["namespace"], body["query"], top_k=body["top_k"], min_score=body["min_score"]
        )
    except PromptTooLongError as err:
        # The embedding model's window is a setting of the node: the document declares a 413.
        raise ApiError(413, f"query: {err}", code="context_length_exceeded", param="query") from err
    except TierUnavailableError as err:
        raise _unavailable(err) from err
    out = []
    for item, tier, score in results:
        entry = {**item.public(tier), "score": round(score, 6)}
        if body["raw"]:
            entry["raw"] = item.encode()
        out.append(entry)
    return web.json_response({"results": out})


@routes.post("/api/v1/memory/mover/run")
@requires("operator")
async def run_mover(request: web.Request) -> web.Response:
    """Run one policy pass now (instead of waiting for ``memory.mover_interval_seconds``)."""
    memory = _memory(request)
    await memory.check_hot()
    moved = await memory.mover_pass()
    return web.json_response({"moved": moved, "status": await memory.status()})


@routes.get("/api/v1/memory/cache")
@requires("reader")
async def cache_stats(request: web.Request) -> web.Response:
    cache = request.app.get(RESPONSE_CACHE_KEY)
    if cache is None:
        raise ApiError(404, "The response cache is turned off (memory.cache_enabled)")
    return web.json_response(cache.stats())


@routes.delete("/api/v1/memory/cache")
@requires("operator")
async def flush_cache(request: web.Request) -> web.Response:
    cache = request.app.get(RESPONSE_CACHE_KEY)
    if cache is None:
        raise ApiError(404, "The response cache is turned off (memory.cache_enabled)")
    return web.json_response({"flushed": cache.flush()})


class _MemoryCollector(Collector):
    """Tier usage and counters at scrape time (usage as of the last status refresh)."""

    def __init__(self, memory: TieredMemory, cache: ResponseCache | None) -> None:
        self._memory = memory
        self._cache = cache

    def collect(self) -> Iterable[Metric]:
        items = GaugeMetricFamily("prime_spark_memory_items", "Items per tier", labels=["tier"])
        size = GaugeMetricFamily("prime_spark_memory_bytes", "Bytes per tier", labels=["tier"])
        capacity = GaugeMetricFamily(
            "prime_spark_memory_capacity_used", "Share of the tier's limit used", labels=["tier"]
        )
        available = GaugeMetricFamily(
            "prime_spark_memory_tier_available", "1 when the tier is usable", labels=["tier"]
        )
        events = CounterMetricFamily(
            "prime_spark_memory_events",
            "Reads and moves per tier: hit, miss, promotion_in/out, demotion_in/out, error",
            labels=["tier", "event"],
        )
        for name in TIERS:
            status = self._memory.tier_status(name)
            if not status["configured"]:
                continue
            if status["items"] is not None:
                items.add_metric([name], status["items"])
                size.add_metric([name], status["bytes"])
            if status["capacity_used"] is not None:
                capacity.add_metric([name], status["capacity_used"])
            available.add_metric([name], 1 if status["available"] else 0)
            c = self._memory.counters[name]
            for event, value in (
                ("hit", c.hits),
                ("miss", c.misses),
                ("promotion_in", c.promotions_in),
                ("promotion_out", c.promotions_out),
                ("demotion_in", c.demotions_in),
                ("demotion_out", c.demotions_out),
                ("error", c.errors),
            ):
                events.add_metric([name, event], value)
        out: list[Metric] = [items, size, capacity, available, events]
        if self._cache is not None:
            lookups = CounterMetricFamily(
                "prime_spark_response_cache_lookups",
                "Chat requests by what the response cache did",
                labels=["result"],
            )
            c2 = self._cache.counters
            for result, value in (
                ("hit", c2.hit),
                ("semantic-hit", c2.semantic_hit),
                ("miss", c2.miss),
                ("bypass", c2.bypass),
            ):
                lookups.add_metric([result], value)
            entries = GaugeMetricFamily("prime_spark_response_cache_entries", "Cached responses")
            entries.add_metric([], len(self._cache))
            out += [lookups, entries]
        return out


def setup_memory(app: web.Application) -> None:
    """Create the memory and cache objects for an app (called from create_app)."""
    node = app[NODE_KEY]
    settings = node.settings.memory
    app.on_response_prepare.append(add_cache_header)
    app.router.add_routes(routes)  # answering "turned off" when disabled beats "no such route"
    if not settings.enabled:
        return
    embedder = Embedder(node.engine, settings.embedding_model)
    memory = TieredMemory(
        settings, node.settings.server.data_dir, embedder=embedder, emit=node.emit_event
    )
    app[MEMORY_KEY] = memory
    cache = ResponseCache(settings, embedder) if settings.cache_enabled else None
    if cache is not None:
        app[RESPONSE_CACHE_KEY] = cache
    app[METRICS_KEY].registry.register(_MemoryCollector(memory, cache))
    app.cleanup_ctx.append(_memory_lifecycle)


async def _memory_lifecycle(app: web.Application) -> AsyncIterator[None]:
    memory = app[MEMORY_KEY]
    await memory.start()
    await memory.refresh_usage()
    tasks = [
        asyncio.create_task(memory.run_mover(), name="prime-spark-memory-mover"),
        asyncio.create_task(_warm_up(memory), name="prime-spark-embedding-warm-up"),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await memory.close()


async def _warm_up(memory: TieredMemory) -> None:
    """Convert (first start) and load the embedding model now, not in the first chat request:
    with the semantic cache on, every deterministic chat request embeds its last message."""
    settings = memory.settings
    if memory.embedder is None or not (settings.cache_enabled and settings.cache_semantic):
        return
    try:
        await memory.embedder.embed("warm up")
    except Exception as err:
        _LOGGER.warning("The embedding model is not available yet: %s", err)
