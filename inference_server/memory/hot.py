"""The hot tier: Redis (shared, durable as far as Redis's own persistence goes) or in-process.

Redis layout under a prefix: ``i:<ns>\\0<key>`` holds the item's canonical text, the sorted set
``lru`` scores each item id by its last read (the demotion clock) and the counter ``bytes`` keeps
usage exact (an item's old size is its ``STRLEN``, so no per-item size index is kept). Writes and
conditional deletes are Lua scripts, so the three structures never disagree and "delete only if
unchanged" is atomic. A batch write is one script call with one ``ZADD`` and one ``INCRBY``.

Expiry is never delegated to Redis ``EXPIRE``: an item silently vanishing from the hot tier
would let an older copy in a colder tier resurface. TTLs are checked on read and by the mover.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.connection import HiredisRespSerializer
from redis.exceptions import NoScriptError, RedisError
from redis.utils import HIREDIS_AVAILABLE

from inference_server.memory.record import TierName, TierUnavailableError, item_id, split_id
from inference_server.memory.tier import Usage

_PUT = """
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local old = redis.call('STRLEN', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('INCRBY', KEYS[3], string.len(ARGV[2]) - old)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# One call per batch: the per-item work is STRLEN + SET; the recency index gets one ZADD with
# every member and the byte counter one INCRBY with the summed delta.
_PUT_MANY = """
local now = ARGV[1]
local n = #KEYS - 2
local delta = 0
local zargs = {}
for i = 1, n do
  local text = ARGV[2 * i + 1]
  delta = delta + string.len(text) - redis.call('STRLEN', KEYS[i])
  redis.call('SET', KEYS[i], text)
  zargs[2 * i - 1] = now
  zargs[2 * i] = ARGV[2 * i]
end
if n > 0 then
  redis.call('ZADD', KEYS[n + 1], unpack(zargs))
  redis.call('INCRBY', KEYS[n + 2], delta)
end
return n
"""

_DELETE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if ARGV[2] ~= '' and cur ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('INCRBY', KEYS[3], -string.len(cur))
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


_BATCH = 1000


_IN_FLIGHT = 4
"""Round trips the coalescer keeps in flight at once (Python packs the next while Redis works)."""


class _HiredisPackedConnection(aioredis.Connection):
    """An asyncio connection that packs commands with hiredis's C packer.

    redis-py's sync client already packs with hiredis (``HiredisRespSerializer``), its asyncio
    connection packs in Python, argument by argument, which was the largest Python cost of a
    pipelined batch in the profile (bench/RESULTS.md). Replies are parsed by hiredis either way.
    """

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


class _Coalescer:
    """Sends the reads and writes of concurrent callers in one pipelined round trip.

    The first command of an idle tier goes out at once (no timer, no added latency); commands
    issued while ``_IN_FLIGHT`` round trips are out queue and leave together in the next one. Per
    round trip redis-py costs far more Python time than per command, so this is where the
    client's throughput comes from. Scripts go as ``EVALSHA``; a ``NOSCRIPT`` (Redis restarted
    or flushed its script cache) loads them and resends only those commands (they never ran).
    """

    def __init__(self, client: aioredis.Redis, scripts: tuple[str, ...]) -> None:
        self._client = client
        self._scripts = {hashlib.sha1(s.encode()).hexdigest(): s for s in scripts}  # noqa: S324
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = 0

    @staticmethod
    def sha(script: str) -> str:
        return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis's script id

    async def call(self, *command: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, future))
        if self._draining < _IN_FLIGHT:
            # Counted here and uncounted in _drain with no await between its last look at
            # the queue and the decrement, so a queued command always has a drainer.
            self._draining += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send(batch, retry=True)
        finally:
            self._draining -= 1

    async def _send(
        self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]], *, retry: bool
    ) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for command, _ in batch:
                    pipe.execute_command(*command)
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as err:
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        missing = [
            item
            for item, result in zip(batch, results, strict=True)
            if retry and isinstance(result, NoScriptError)
        ]
        if missing:
            try:
                for source in self._scripts.values():
                    await self._client.script_load(source)
            except (RedisError, OSError) as err:
                for _, future in missing:
                    if not future.done():
                        future.set_exception(err)
                missing = []
            else:
                await self._send(missing, retry=False)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done() or any(future is f for _, f in missing):
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class RedisHotTier:
    """Hot tier in Redis (redis-py asyncio, one connection pool)."""

    name: TierName = "hot"
    durable = True

    def __init__(self, url: str, prefix: str) -> None:
        packed: dict[str, Any] = {}
        if HIREDIS_AVAILABLE and url.startswith("redis://"):  # TLS / unix keep their class
            packed["connection_class"] = _HiredisPackedConnection
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            **packed,
            socket_connect_timeout=0.5,
            socket_timeout=2.0,
            health_check_interval=0,
            max_connections=64,
        )
        self._prefix = prefix
        self._lru = prefix + "lru"
        self._bytes = prefix + "bytes"
        self._delete = self._client.register_script(_DELETE)
        self._batch = _Coalescer(self._client, (_PUT, _PUT_MANY))
        self._put_sha = _Coalescer.sha(_PUT)
        self._put_many_sha = _Coalescer.sha(_PUT_MANY)

    def _key(self, ident: str) -> str:
        return self._prefix + "i:" + ident

    def _fail(self, err: Exception) -> TierUnavailableError:
        return TierUnavailableError("hot", f"Redis is unreachable: {err}")

    async def get_raw(self, namespace: str, key: str) -> str | None:
        try:
            raw = await self._batch.call("GET", self._key(item_id(namespace, key)))
        except RedisError as err:
            raise self._fail(err) from err
        return None if raw is None else _text(raw)

    async def get_many(self, idents: list[str]) -> list[str | None]:
        """Pipelined reads (one round trip): what the benchmark's batch mix uses."""
        if not idents:
            return []
        try:
            raws = await self._batch.call("MGET", *[self._key(i) for i in idents])
        except RedisError as err:
            raise self._fail(err) from err
        return [None if r is None else _text(r) for r in raws]

    async def put_raw(
        self, namespace: str, key: str, text: str, *, only_if_absent: bool = False
    ) -> bool:
        ident = item_id(namespace, key)
        keys = [self._key(ident), self._lru, self._bytes]
        args: list[str | float] = [ident, text, time.time(), "1" if only_if_absent else "0"]
        try:
            return bool(await self._batch.call("EVALSHA", self._put_sha, len(keys), *keys, *args))
        except RedisError as err:
            raise self._fail(err) from err

    async def put_many(self, items: list[tuple[str, str, str]]) -> None:
        """Batched writes (namespace, key, text): one script call, one round trip."""
        now = time.time()
        for start in range(0, len(items), _BATCH):  # Lua's unpack() takes a few thousand values
            chunk = items[start : start + _BATCH]
            idents = [item_id(namespace, key) for namespace, key, _ in chunk]
            keys = [self._key(i) for i in idents] + [self._lru, self._bytes]
            args: list[str | float] = [now]
            for ident, (_, _, text) in zip(idents, chunk, strict=True):
                args += [ident, text]
            try:
                await self._batch.call("EVALSHA", self._put_many_sha, len(keys), *keys, *args)
            except RedisError as err:
                raise self._fail(err) from err

    async def delete(self, namespace: str, key: str, *, if_text: str | None = None) -> bool:
        ident = item_id(namespace, key)
        keys = [self._key(ident), self._lru, self._bytes]
        args = [ident, "1" if if_text is not None else "", if_text or ""]
        try:
            return bool(await self._delete(keys=keys, args=args))
        except RedisError as err:
            raise self._fail(err) from err

    async def scan(self, namespace: str | None = None) -> AsyncIterator[tuple[str, str, str]]:
        try:
            idents = [_text(i) for i in await self._client.zrange(self._lru, 0, -1)]
        except RedisError as err:
            raise self._fail(err) from err
        if namespace is not None:
            idents = [i for i in idents if i.startswith(namespace + "\x00")]
        for start in range(0, len(idents), 500):
            chunk = idents[start : start + 500]
            for ident, text in zip(chunk, await self.get_many(chunk), strict=True):
                if text is not None:
                    ns, key = split_id(ident)
                    yield ns, key, text

    async def coldest(self, limit: int, idle_before: float | None) -> list[tuple[str, str]]:
        try:
            if idle_before is None:
                raw = await self._client.zrange(self._lru, 0, limit - 1)
            else:
                raw = await self._client.zrangebyscore(
                    self._lru, "-inf", idle_before, start=0, num=limit
                )
        except RedisError as err:
            raise self._fail(err) from err
        return [split_id(_text(i)) for i in raw]

    async def touch(self, namespace: str, key: str, now: float) -> None:
        try:
            await self._client.zadd(self._lru, {item_id(namespace, key): now}, xx=True)
        except RedisError as err:
            raise self._fail(err) from err

    async def usage(self) -> Usage:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zcard(self._lru)
                pipe.get(self._bytes)
                items, size = await pipe.execute()
        except RedisError as err:
            raise self._fail(err) from err
        return Usage(items=int(items), bytes=int(size or 0))

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def flush(self) -> None:
        """Drop every key under this tier's prefix (tests and benchmarks only)."""
        cursor: Any = 0
        while True:
            cursor, keys = await self._client.scan(cursor, match=self._prefix + "*", count=1000)
            if keys:
                await self._client.delete(*keys)
            if not cursor:
                break

    async def close(self) -> None:
        await self._client.aclose()


class LocalHotTier:
    """In-process hot tier for a node without Redis: a dict in LRU order.

    Not durable, so the tiered store writes items through to the warm tier as well; the hot copy
    is then a read cache and demoting it just drops it.
    """

    name: TierName = "hot"
    durable = False

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._bytes = 0

    async def get_raw(self, namespace: str, key: str) -> str | None:
        entry = self._items.get(item_id(namespace, key))
        return None if entry is None else entry[0]

    async def put_raw(
        self, namespace: str, key: str, text: str, *, only_if_absent: bool = False
    ) -> bool:
        ident = item_id(namespace, key)
        old = self._items.get(ident)
        if old is not None and only_if_absent:
            return False
        if old is not None:
            self._bytes -= len(old[0].encode())
        self._items[ident] = (text, time.time())
        self._items.move_to_end(ident)
        self._bytes += len(text.encode())
        return True

    async def delete(self, namespace: str, key: str, *, if_text: str | None = None) -> bool:
        ident = item_id(namespace, key)
        old = self._items.get(ident)
        if old is None or (if_text is not None and old[0] != if_text):
            return False
        del self._items[ident]
        self._bytes -= len(old[0].encode())
        return True

    async def scan(self, namespace: str | None = None) -> AsyncIterator[tuple[str, str, str]]:
        for ident, (text, _) in list(self._items.items()):
            ns, key = split_id(ident)
            if namespace is None or ns == namespace:
                yield ns, key, text

    async def coldest(self, limit: int, idle_before: float | None) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for ident, (_, accessed) in self._items.items():
            if len(out) >= limit or (idle_before is not None and accessed > idle_before):
                break
            out.append(split_id(ident))
        return out

    async def touch(self, namespace: str, key: str, now: float) -> None:
        ident = item_id(namespace, key)
        entry = self._items.get(ident)
        if entry is not None:
            self._items[ident] = (entry[0], now)
            self._items.move_to_end(ident)

    async def usage(self) -> Usage:
        return Usage(items=len(self._items), bytes=self._bytes)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._items.clear()
