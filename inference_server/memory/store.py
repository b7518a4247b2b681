"""The tiered memory: one API over hot → warm → cold, with the promotion/demotion policy.

Reads look in every tier, hottest first, and the hottest copy wins: after a crash in the middle
of a move an item may briefly sit in two tiers, and both copies are the same text, or the hotter
one is newer. Lists and searches deduplicate the same way, so every item is seen exactly once.

Writes go to the hot tier (and through to the warm tier when the hot tier is the in-process one,
which a crash would lose). When Redis is down, writes go to the warm tier instead and their ids
are journalled; when Redis is back, those ids are removed from Redis before it is used again, so
an older hot copy can never shadow a newer warm one.

Moves (the mover, and promotion on read) are crash-safe by a per-item move journal in the data
directory: record (id, source, destination, checksum) with fsync, copy, read back and compare the
checksum, delete the source only while it still holds that exact text, then drop the record. A
restart replays the records left over: where the destination holds the recorded checksum, the
source copy is deleted (if unchanged); otherwise the source is still the item. Every step is
idempotent, so a kill -9 anywhere, or during the replay, loses and duplicates nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from inference_server.analytics.events import MemoryEvent
from inference_server.config import MemorySettings
from inference_server.memory.cold import PeerTier
from inference_server.memory.embedder import Embedder, cosine
from inference_server.memory.hot import LocalHotTier, RedisHotTier
from inference_server.memory.record import (
    MAX_KEY_CHARS,
    MAX_METADATA_BYTES,
    MAX_TAGS,
    NAMESPACE_RE,
    TIERS,
    MemoryItem,
    TierName,
    TierUnavailableError,
    checksum,
    decode,
    embedding_text,
    item_id,
    split_id,
)
from inference_server.memory.tier import Tier, Usage
from inference_server.memory.warm import DirectoryTier

_LOGGER = logging.getLogger(__name__)

HOT_RETRY_SECONDS = 1.0

MemoryOperation = Literal["get", "set", "delete", "search", "promote", "demote"]


class InvalidItemError(ValueError):
    """A caller's item breaks a documented limit; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(slots=True)
class TierCounters:
    hits: int = 0
    misses: int = 0
    promotions_in: int = 0
    demotions_in: int = 0
    promotions_out: int = 0
    demotions_out: int = 0
    errors: int = 0


@dataclass(slots=True)
class MoverProgress:
    state: str = "idle"
    """``idle`` | ``running`` | ``stopped``."""
    step: str = ""
    done: int = 0
    planned: int = 0
    runs: int = 0
    last_run_at: float | None = None
    last_run_moved: int = 0
    last_error: str | None = None
    journal_replayed: int = 0


@dataclass(slots=True)
class _Journal:
    """One fsynced file per in-flight move, named by the item id's hash."""

    directory: Path
    pending: set[str] = field(default_factory=set)

    def _path(self, ident: str) -> Path:
        return self.directory / (hashlib.sha256(ident.encode()).hexdigest() + ".move")

    def record(self, ident: str, src: TierName, dst: TierName, digest: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(ident)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump({"id": ident, "src": src, "dst": dst, "checksum": digest}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        _fsync_dir(self.directory)

    def clear(self, ident: str) -> None:
        self._path(ident).unlink(missing_ok=True)

    def entries(self) -> list[dict[str, str]]:
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.glob("*.move")):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # torn before its rename: the move never began
        for path in self.directory.glob("*.tmp"):
            path.unlink(missing_ok=True)
        return out


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TieredMemory:
    def __init__(
        self,
        settings: MemorySettings,
        data_dir: Path,
        *,
        embedder: Embedder | None = None,
        on_change: Callable[[], None] | None = None,
        emit: Callable[[MemoryEvent], object] | None = None,
    ) -> None:
        self.settings = settings
        self._emit = emit
        """Where ``memory`` analytics events go (the node's ``emit_event``); None sends none."""
        self.embedder = embedder
        self._on_change = on_change
        self.hot: RedisHotTier | LocalHotTier = (
            RedisHotTier(settings.redis_url, settings.redis_prefix)
            if settings.redis_url
            else LocalHotTier()
        )
        warm_root = settings.warm_path or (data_dir / "memory")
        self.warm = DirectoryTier(warm_root, create=settings.warm_path is None)
        self.cold: PeerTier | None = (
            PeerTier(settings.cold_url, settings.cold_token) if settings.cold_url else None
        )
        state = data_dir / "memory-state"
        self._journal = _Journal(state / "moves")
        self._outage_path = state / "hot-outage.log"
        self._hot_up = True
        self._hot_down_since: float | None = None
        self._hot_checked = 0.0
        self.counters: dict[TierName, TierCounters] = {t: TierCounters() for t in TIERS}
        self.progress = MoverProgress()
        self._usage: dict[TierName, Usage | None] = dict.fromkeys(TIERS)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._kick = asyncio.Event()
        self._move_lock = asyncio.Lock()
        self._promoting: set[str] = set()
        self.reads = 0
        self.read_hits = 0

    # ------------------------------------------------------------------ lifecycle

    def tiers(self) -> list[Tier]:
        tiers: list[Tier] = [self.hot, self.warm]
        if self.cold is not None:
            tiers.append(self.cold)
        return tiers

    def tier(self, name: TierName) -> Tier | None:
        return {"hot": self.hot, "warm": self.warm, "cold": self.cold}[name]

    async def start(self) -> None:
        await self.warm.open()
        self._hot_up = await self.hot.ping()
        if not self._hot_up:
            self._hot_down_since = time.time()
            _LOGGER.warning("Memory: the hot tier (Redis) is unreachable; using the warm tier")
        else:
            await self._reconcile_outage()
        await self.replay_journal()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for tier in self.tiers():
            await tier.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # ------------------------------------------------------------------ hot tier health

    def hot_available(self) -> bool:
        return self._hot_up

    def _hot_failed(self, err: TierUnavailableError) -> None:
        if self._hot_up:
            _LOGGER.warning("Memory: %s; writes go to the warm tier until it is back", err)
            self._hot_down_since = time.time()
        self._hot_up = False
        self.counters["hot"].errors += 1
        self._changed()

    async def check_hot(self) -> bool:
        """Called by the mover (and before hot reads while down, at most once a second)."""
        if self._hot_up:
            return True
        now = time.monotonic()
        if now - self._hot_checked < HOT_RETRY_SECONDS:
            return False
        self._hot_checked = now
        if not await self.hot.ping():
            return False
        try:
            await self._reconcile_outage()
        except TierUnavailableError:
            return False
        _LOGGER.info("Memory: the hot tier is back")
        self._hot_up = True
        self._hot_down_since = None
        self._changed()
        return True

    def _journal_outage(self, ident: str) -> None:
        self._outage_path.parent.mkdir(parents=True, exist_ok=True)
        with self._outage_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(ident) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    async def _reconcile_outage(self) -> None:
        """Remove from Redis every id written or deleted while it was away (newer elsewhere)."""
        try:
            lines = self._outage_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            with contextlib.suppress(ValueError):
                ns, key = split_id(json.loads(line))
                await self.hot.delete(ns, key)
        self._outage_path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ validation

    def validate(
        self,
        namespace: str,
        key: str,
        value: Any,
        metadata: dict[str, Any],
        tags: list[str] | tuple[str, ...],
    ) -> None:
        if not NAMESPACE_RE.match(namespace):
            raise InvalidItemError(
                "namespace: 1-128 of A-Z a-z 0-9 _ . : @ - (not starting with '.')", "namespace"
            )
        if not key or len(key) > MAX_KEY_CHARS or "\x00" in key:
            raise InvalidItemError(f"key: 1-{MAX_KEY_CHARS} characters, no NUL", "key")
        if len(tags) > MAX_TAGS or any(not isinstance(t, str) or not t for t in tags):
            raise InvalidItemError(f"tags: at most {MAX_TAGS} non-empty strings", "tags")
        if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            raise InvalidItemError(f"metadata: at most {MAX_METADATA_BYTES} bytes", "metadata")
        size = len(json.dumps(value, ensure_ascii=False).encode())
        if size > self.settings.max_value_bytes:
            raise InvalidItemError(
                f"value: {size} bytes is more than the {self.settings.max_value_bytes} allowed "
                "(memory.max_value_bytes)",
                "value",
            )

    # ------------------------------------------------------------------ operations

    async def put(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | tuple[str, ...] = (),
        ttl_seconds: float | None = None,
    ) -> tuple[MemoryItem, TierName]:
        metadata = metadata or {}
        self.validate(namespace, key, value, metadata, tags)
        now = time.time()
        existing = None
        if self._hot_up:  # created_at survives an overwrite of a hot item (one cheap read)
            with contextlib.suppress(TierUnavailableError):
                raw = await self.hot.get_raw(namespace, key)
                existing = None if raw is None else (decode(raw), "hot")
        item = MemoryItem(
            namespace=namespace,
            key=key,
            value=value,
            metadata=metadata,
            tags=tuple(dict.fromkeys(tags)),
            created_at=existing[0].created_at if existing else now,
            updated_at=now,
            expires_at=None if ttl_seconds is None else now + ttl_seconds,
        )
        if self.embedder is not None:
            try:
                vector = await self.embedder.embed(embedding_text(item))
                # Round through float32 now, so the item equals its own stored form.
                item = decode(item.with_embedding(vector).encode())
            except Exception as err:  # search degrades, the write must not
                _LOGGER.warning("Memory: no embedding for %s/%s: %s", namespace, key, err)
        started = time.perf_counter()
        text = item.encode()
        tier = await self._write(item.namespace, item.key, text)
        self._changed()
        self._event("set", tier, started, size=len(text))
        return item, tier

    async def put_raw(
        self, text: str, *, only_if_absent: bool = False, address: tuple[str, str] | None = None
    ) -> TierName | None:
        """Store a canonical item as given (the cold-tier API a peer calls).

        ``address`` is the (namespace, key) the caller wrote to: an item that names another
        one is refused, so a URL can never file an item where a later read of it will not look.
        """
        item = decode(text)
        self.validate(item.namespace, item.key, item.value, item.metadata, item.tags)
        if address is not None and (item.namespace, item.key) != address:
            raise InvalidItemError(
                f"raw: the item is {item.namespace!r}/{item.key!r}, "
                f"not {address[0]!r}/{address[1]!r} as the path says",
                "raw",
            )
        if item.encode() != text:
            raise InvalidItemError("raw: not in canonical form", "raw")
        if only_if_absent and await self.get(item.namespace, item.key, promote=False):
            return None
        return await self._write(item.namespace, item.key, text)

    async def _write(self, namespace: str, key: str, text: str) -> TierName:
        ident = item_id(namespace, key)
        if self._hot_up or await self.check_hot():
            try:
                if not self.hot.durable:
                    await self.warm.put_raw(namespace, key, text)
                await self.hot.put_raw(namespace, key, text)
                await self._maybe_kick()
                return "hot"
            except TierUnavailableError as err:
                if err.tier != "hot":
                    raise
                self._hot_failed(err)
        errors: list[str] = []
        for tier in (self.warm, self.cold):
            if tier is None:
                continue
            try:
                if self.hot.durable:
                    self._journal_outage(ident)
                await tier.put_raw(namespace, key, text)
                return tier.name
            except TierUnavailableError as err:
                self.counters[tier.name].errors += 1
                errors.append(str(err))
        raise TierUnavailableError("warm", "no memory tier can take the item: " + "; ".join(errors))

    async def get(
        self, namespace: str, key: str, *, promote: bool = True
    ) -> tuple[MemoryItem, TierName] | None:
        self.reads += promote
        started = time.perf_counter()
        unreachable: list[TierUnavailableError] = []
        for tier in self.tiers():
            if tier is self.hot and not (self._hot_up or await self.check_hot()):
                unreachable.append(TierUnavailableError("hot", "Redis is unreachable"))
                continue
            try:
                text = await tier.get_raw(namespace, key)
            except TierUnavailableError as err:
                if tier is self.hot:
                    self._hot_failed(err)
                else:
                    self.counters[tier.name].errors += 1
                unreachable.append(err)
                continue
            if text is None:
                if promote:
                    self.counters[tier.name].misses += 1
                continue
            item = decode(text)
            if item.expired():
                await self.delete(namespace, key)
                return None
            if promote:
                self._event("get", tier.name, started, hit=True, size=len(text))
                self.counters[tier.name].hits += 1
                self.read_hits += 1
                now = time.time()
                if tier is self.hot:
                    with contextlib.suppress(TierUnavailableError):
                        await tier.touch(namespace, key, now)
                else:
                    await tier.touch(namespace, key, now)
                    self._promote_later(namespace, key, tier.name)
            return item, tier.name
        if promote:
            self._event("get", "hot", started, hit=False)
        if unreachable:
            # "Not found" would be a lie: the item may sit in the tier we could not ask, and a
            # caller acting on a 404 (store a default, tell the user it is forgotten) would be
            # wrong once the tier is back. Found items are still served from the tiers that are up.
            first = unreachable[0]
            raise TierUnavailableError(
                first.tier,
                f"'{key}' is in none of the reachable tiers, and the {first.tier} tier, which "
                f"may hold it, cannot be reached: {first}; retry when it is back",
            )
        return None

    async def delete(self, namespace: str, key: str) -> bool:
        """Delete from every tier; a tier that is down is journalled (hot) or reported.

        True when a copy was deleted or the delete was journalled for the hot tier while Redis is
        down: the journal is replayed before Redis serves again, so the item is gone for every
        reader either way (a read meanwhile answers "unavailable", never the old value). Saying
        "not found" instead would be a guess about a tier nobody could ask.
        """
        found = False
        started = time.perf_counter()
        for tier in self.tiers():
            if tier is self.hot and not (self._hot_up or await self.check_hot()):
                self._journal_outage(item_id(namespace, key))
                found = True
                continue
            try:
                found = await tier.delete(namespace, key) or found
            except TierUnavailableError as err:
                if tier is self.hot:
                    self._hot_failed(err)
                    self._journal_outage(item_id(namespace, key))
                    found = True
                    continue
                raise
        self._changed()
        self._event("delete", "hot", started, hit=found)
        return found

    async def list_items(
        self,
        namespace: str | None,
        *,
        prefix: str = "",
        tag: str | None = None,
        limit: int = 100,
        tier: TierName | None = None,
    ) -> list[tuple[MemoryItem, TierName]]:
        """Items in key order, each once (the hottest copy), optionally of one tier only."""
        seen: dict[str, tuple[MemoryItem, TierName]] = {}
        now = time.time()
        for source in self.tiers():
            if tier is not None and source.name != tier:
                continue
            if source is self.hot and not self._hot_up:
                continue
            try:
                async for ns, key, text in source.scan(namespace):
                    ident = item_id(ns, key)
                    if ident in seen or not key.startswith(prefix):
                        continue
                    item = decode(text)
                    if item.expired(now) or (tag is not None and tag not in item.tags):
                        continue
                    seen[ident] = (item, source.name)
            except TierUnavailableError as err:
                if source is self.hot:
                    self._hot_failed(err)
                elif tier is not None:
                    raise
        ordered = sorted(seen.values(), key=lambda entry: (entry[0].namespace, entry[0].key))
        return ordered[:limit]

    async def search(
        self, namespace: str, query: str, *, top_k: int = 5, min_score: float = 0.0
    ) -> list[tuple[MemoryItem, TierName, float]]:
        """Top-k items of a namespace by cosine similarity of their embedding to the query's."""
        if self.embedder is None:
            raise TierUnavailableError("hot", "semantic search needs the embedding model")
        started = time.perf_counter()
        vector = await self.embedder.embed(query)
        scored: dict[str, tuple[MemoryItem, TierName, float]] = {}
        for item, tier in await self.list_items(namespace, limit=1_000_000):
            if item.embedding is None:
                continue
            score = cosine(vector, item.embedding)
            if score >= min_score:
                scored[item_id(item.namespace, item.key)] = (item, tier, score)
        if self.cold is not None:
            try:
                remote = await self.cold.search(namespace, query, top_k, min_score)
            except TierUnavailableError:
                remote = []
            for ns, key, text, score in remote:
                ident = item_id(ns, key)
                try:
                    shadowed = ident not in scored and not await self.get(ns, key, promote=False)
                except TierUnavailableError:
                    shadowed = False  # the hot tier is down: the peer's copy is the best we have
                if shadowed:
                    continue  # the peer's copy is shadowed by a hotter one we already scored
                scored.setdefault(ident, (decode(text), "cold", score))
        ranked = sorted(scored.values(), key=lambda entry: -entry[2])
        self._event("search", "hot", started, hit=bool(ranked))
        return ranked[:top_k]

    def _event(
        self,
        operation: MemoryOperation,
        tier: TierName,
        started: float,
        *,
        to_tier: TierName | None = None,
        hit: bool | None = None,
        size: int = 0,
    ) -> None:
        """One ``memory`` analytics event: cheap (a dataclass and a queue put), never raises.

        Deletes, searches and misses name ``hot``, where every lookup starts; ``bytes`` is
        the stored (canonical JSON) size.
        """
        if self._emit is None:
            return
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        self._emit(
            MemoryEvent(
                operation=operation,
                tier=tier,
                to_tier=to_tier,
                hit=hit,
                bytes=size,
                latency_ms=max(0.0, elapsed),
            )
        )

    # ------------------------------------------------------------------ moves

    def _promote_later(self, namespace: str, key: str, source: TierName) -> None:
        ident = item_id(namespace, key)
        if ident in self._promoting or not self._hot_up:
            return
        self._promoting.add(ident)

        async def promote() -> None:
            try:
                async with self._move_lock:
                    await self.move(namespace, key, source, "hot", promotion=True)
            except TierUnavailableError as err:
                _LOGGER.debug("Promotion of %s/%s skipped: %s", namespace, key, err)
            finally:
                self._promoting.discard(ident)

        self._spawn(promote(), name="prime-spark-memory-promote")

    async def move(
        self, namespace: str, key: str, src_name: TierName, dst_name: TierName, *, promotion: bool
    ) -> bool:
        """Copy, verify, then delete the source (if unchanged). Idempotent; journalled."""
        move_started = time.perf_counter()
        src, dst = self.tier(src_name), self.tier(dst_name)
        if src is None or dst is None:
            return False
        text = await src.get_raw(namespace, key)
        if text is None:
            return False
        ident = item_id(namespace, key)
        if decode(text).expired():
            await self.delete(namespace, key)
            return False
        keep_source = promotion and not dst.durable
        digest = checksum(text)
        if not keep_source:
            await asyncio.to_thread(self._journal.record, ident, src_name, dst_name, digest)
        try:
            # A promotion never overwrites: a hotter copy is the newer one.
            back = await dst.get_raw(namespace, key)
            stored = False
            if back != text:
                stored = await dst.put_raw(namespace, key, text, only_if_absent=promotion)
                back = await dst.get_raw(namespace, key)
            if (stored or not promotion) and (back is None or checksum(back) != digest):
                raise TierUnavailableError(
                    dst_name, f"the copy of {namespace}/{key} did not verify"
                )
            if not keep_source:
                await src.delete(namespace, key, if_text=text)
        finally:
            if not keep_source:
                await asyncio.to_thread(self._journal.clear, ident)
        counters_src, counters_dst = self.counters[src_name], self.counters[dst_name]
        self._event(
            "promote" if promotion else "demote",
            src_name,
            move_started,
            to_tier=dst_name,
            size=len(text),
        )
        if promotion:
            counters_src.promotions_out += 1
            counters_dst.promotions_in += 1
        else:
            counters_src.demotions_out += 1
            counters_dst.demotions_in += 1
        return True

    async def replay_journal(self) -> int:
        """Finish or forget moves a crash interrupted (see the module docstring)."""
        entries = await asyncio.to_thread(self._journal.entries)
        replayed = 0
        for entry in entries:
            ident = entry["id"]
            namespace, key = split_id(ident)
            src = self.tier(entry["src"])  # type: ignore[arg-type]
            dst = self.tier(entry["dst"])  # type: ignore[arg-type]
            if src is None or dst is None:
                await asyncio.to_thread(self._journal.clear, ident)
                continue
            try:
                at_dst = await dst.get_raw(namespace, key)
                at_src = await src.get_raw(namespace, key)
            except TierUnavailableError as err:
                _LOGGER.warning("Memory: cannot replay the move of %s yet: %s", ident, err)
                continue
            if (
                at_dst is not None
                and checksum(at_dst) == entry["checksum"]
                and at_src is not None
                and checksum(at_src) == entry["checksum"]
            ):
                await src.delete(namespace, key, if_text=at_src)
            await asyncio.to_thread(self._journal.clear, ident)
            replayed += 1
        self.progress.journal_replayed += replayed
        return replayed

    async def _maybe_kick(self) -> None:
        usage = await self.hot.usage() if not self.hot.durable else None
        if usage is not None and (
            usage.items > self.settings.hot_max_items or usage.bytes > self.settings.hot_max_bytes
        ):
            self._kick.set()

    def kick(self) -> None:
        self._kick.set()

    async def run_mover(self) -> None:
        """Background loop: every interval (or when kicked), one policy pass."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.mover_interval_seconds):
                    await self._kick.wait()
            self._kick.clear()
            try:
                await self.check_hot()
                await self.recheck_warm()
                await self.mover_pass()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the loop must outlive one bad pass
                self.progress.last_error = str(err)
                _LOGGER.exception("Memory mover pass failed")

    async def mover_pass(self) -> int:
        """Demote by idle time, then by capacity pressure; returns the items moved."""
        progress = self.progress
        progress.state = "running"
        progress.last_error = None
        moved = 0
        now = time.time()
        try:
            await self.replay_journal()
            if self._hot_up:
                moved += await self._demote(
                    self.hot,
                    self.warm,
                    idle_before=now - self.settings.hot_idle_seconds,
                    max_items=self.settings.hot_max_items,
                    max_bytes=self.settings.hot_max_bytes,
                )
            if self.cold is not None and self.warm.health.ok:
                moved += await self._demote(
                    self.warm,
                    self.cold,
                    idle_before=now - self.settings.warm_idle_seconds,
                    max_items=self.settings.warm_max_items,
                    max_bytes=self.settings.warm_max_bytes,
                )
        except TierUnavailableError as err:
            progress.last_error = str(err)
            if err.tier == "hot":
                self._hot_failed(err)
        finally:
            progress.state = "idle"
            progress.step = ""
            progress.runs += 1
            progress.last_run_at = time.time()
            progress.last_run_moved = moved
            self._changed()
        return moved

    async def _demote(
        self, src: Tier, dst: Tier, *, idle_before: float, max_items: int, max_bytes: int
    ) -> int:
        if dst is self.warm and not self.warm.health.ok:
            raise TierUnavailableError("warm", self.warm.health.message or "warm tier unusable")
        batch = self.settings.mover_batch
        moved = 0
        # Idle items first.
        while True:
            candidates = await src.coldest(batch, idle_before)
            if not candidates:
                break
            moved += await self._move_batch(candidates, src, dst, "idle")
            if len(candidates) < batch:
                break
        # Then capacity pressure: least recently used first until under the limits.
        while True:
            usage = await src.usage()
            over_items = usage.items - max_items
            if over_items <= 0 and usage.bytes <= max_bytes:
                break
            count = max(over_items, 1) if usage.bytes <= max_bytes else batch
            candidates = await src.coldest(min(count, batch), None)
            if not candidates:
                break
            done = await self._move_batch(candidates, src, dst, "capacity")
            moved += done
            if not done:
                break
        return moved

    async def _move_batch(
        self, candidates: list[tuple[str, str]], src: Tier, dst: Tier, why: str
    ) -> int:
        progress = self.progress
        progress.step = f"{src.name}→{dst.name} ({why})"
        progress.planned = len(candidates)
        progress.done = 0
        moved = 0
        for namespace, key in candidates:
            async with self._move_lock:
                if await self.move(namespace, key, src.name, dst.name, promotion=False):
                    moved += 1
            progress.done += 1
            await asyncio.sleep(0)
        return moved

    # ------------------------------------------------------------------ status

    async def refresh_usage(self) -> None:
        for tier in self.tiers():
            if tier is self.hot and not self._hot_up:
                self._usage["hot"] = None
                continue
            try:
                self._usage[tier.name] = await tier.usage()
            except TierUnavailableError:
                self._usage[tier.name] = None

    def tier_status(self, name: TierName) -> dict[str, Any]:
        tier = self.tier(name)
        usage = self._usage.get(name)
        counters = self.counters[name]
        limits = {
            "hot": (self.settings.hot_max_items, self.settings.hot_max_bytes),
            "warm": (self.settings.warm_max_items, self.settings.warm_max_bytes),
            "cold": (self.settings.cold_max_items, 0),
        }[name]
        lookups = counters.hits + counters.misses
        status: dict[str, Any] = {
            "configured": tier is not None,
            "backend": _backend(tier),
            "available": tier is not None
            and (
                (name == "hot" and self._hot_up)
                or (name == "warm" and self.warm.health.ok)
                or (name == "cold" and usage is not None)
            ),
            "durable": bool(tier is not None and tier.durable),
            "items": usage.items if usage else None,
            "bytes": usage.bytes if usage else None,
            "max_items": limits[0] or None,
            "max_bytes": limits[1] or None,
            "capacity_used": _capacity(usage, limits),
            "hits": counters.hits,
            "misses": counters.misses,
            "hit_rate": round(counters.hits / lookups, 4) if lookups else None,
            "promotions_in": counters.promotions_in,
            "promotions_out": counters.promotions_out,
            "demotions_in": counters.demotions_in,
            "demotions_out": counters.demotions_out,
            "errors": counters.errors,
        }
        if name == "hot":
            status["down_since"] = self._hot_down_since
        if name == "warm":
            status["path"] = str(self.warm.root)
            status["problem"] = self.warm.health.problem
            status["message"] = self.warm.health.message
            status["corrupt_quarantined"] = self.warm.corrupt_found
        return status

    async def recheck_warm(self) -> bool:
        """A warm tier that was unusable (NAS not mounted) is probed again and, once usable,
        indexed: the share may hold items from before."""
        if not self.warm.health.ok:
            await self.warm.open()
            if self.warm.health.ok:
                _LOGGER.info("Memory: the warm tier %s is usable again", self.warm.root)
                self._changed()
        return self.warm.health.ok

    async def status(self) -> dict[str, Any]:
        await self.recheck_warm()
        await self.refresh_usage()
        tiers = {name: self.tier_status(name) for name in TIERS}
        stored = [tiers[n] for n in TIERS if tiers[n]["configured"] and n != "cold"]
        if not self.hot.durable:
            stored = stored[1:]  # the in-process hot tier only caches warm items
        return {
            "tiers": tiers,
            "stored_items": sum(t["items"] or 0 for t in stored),
            "stored_bytes": sum(t["bytes"] or 0 for t in stored),
            "reads": self.reads,
            "read_hit_rate": round(self.read_hits / self.reads, 4) if self.reads else None,
            "mover": {
                "state": self.progress.state,
                "step": self.progress.step,
                "done": self.progress.done,
                "planned": self.progress.planned,
                "runs": self.progress.runs,
                "last_run_at": self.progress.last_run_at,
                "last_run_moved": self.progress.last_run_moved,
                "last_error": self.progress.last_error,
                "journal_replayed": self.progress.journal_replayed,
                "interval_seconds": self.settings.mover_interval_seconds,
            },
            "max_value_bytes": self.settings.max_value_bytes,
            "embedding_model": self.embedder.model if self.embedder else None,
        }


def _backend(tier: Tier | None) -> str | None:
    if isinstance(tier, RedisHotTier):
        return "redis"
    if isinstance(tier, LocalHotTier):
        return "in-process"
    if isinstance(tier, DirectoryTier):
        return "directory"
    if isinstance(tier, PeerTier):
        return "peer"
    return None


def _capacity(usage: Usage | None, limits: tuple[int, int]) -> float | None:
    if usage is None or not limits[0]:
        return None
    shares = [usage.items / limits[0]]
    if limits[1]:
        shares.append(usage.bytes / limits[1])
    return round(max(shares), 4)
