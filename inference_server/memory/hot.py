"""The hot tier: Redis (shared, durable as far as Redis's own persistence goes) or in-process.

Redis layout under a prefix: ``i:<ns>\\0<key>`` holds the item's canonical text, the sorted set
``lru`` scores each item id by its last read (the demotion clock), the hash ``size`` and the
counter ``bytes`` keep usage exact. Writes and conditional deletes are Lua scripts, so the four
structures never disagree and "delete only if unchanged" is atomic.

Expiry is never delegated to Redis ``EXPIRE``: an item silently vanishing from the hot tier
would let an older copy in a colder tier resurface. TTLs are checked on read and by the mover.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from inference_server.memory.record import TierName, TierUnavailableError, item_id, split_id
from inference_server.memory.tier import Usage

_PUT = """
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local old = redis.call('HGET', KEYS[3], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2])
local n = string.len(ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], n)
redis.call('INCRBY', KEYS[4], n - (tonumber(old) or 0))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

_PUT_MANY = """
local now = ARGV[1]
for i = 1, #KEYS - 3 do
  local ident = ARGV[2 * i]
  local text = ARGV[2 * i + 1]
  local old = redis.call('HGET', KEYS[#KEYS - 1], ident)
  redis.call('SET', KEYS[i], text)
  local n = string.len(text)
  redis.call('HSET', KEYS[#KEYS - 1], ident, n)
  redis.call('INCRBY', KEYS[#KEYS], n - (tonumber(old) or 0))
  redis.call('ZADD', KEYS[#KEYS - 2], now, ident)
end
return #KEYS - 3
"""

_DELETE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if ARGV[2] ~= '' and cur ~= ARGV[3] then return 0 end
local old = redis.call('HGET', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('INCRBY', KEYS[4], -(tonumber(old) or 0))
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class RedisHotTier:
    """Hot tier in Redis (redis-py asyncio, one connection pool)."""

    name: TierName = "hot"
    durable = True

    def __init__(self, url: str, prefix: str) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=0.5,
            socket_timeout=2.0,
            health_check_interval=0,
            max_connections=64,
        )
        self._prefix = prefix
        self._lru = prefix + "lru"
        self._size = prefix + "size"
        self._bytes = prefix + "bytes"
        self._put = self._client.register_script(_PUT)
        self._put_many = self._client.register_script(_PUT_MANY)
        self._delete = self._client.register_script(_DELETE)

    def _key(self, ident: str) -> str:
        return self._prefix + "i:" + ident

    def _fail(self, err: Exception) -> TierUnavailableError:
        return TierUnavailableError("hot", f"Redis is unreachable: {err}")

    async def get_raw(self, namespace: str, key: str) -> str | None:
        try:
            raw = await self._client.get(self._key(item_id(namespace, key)))
        except RedisError as err:
            raise self._fail(err) from err
        return None if raw is None else _text(raw)

    async def get_many(self, idents: list[str]) -> list[str | None]:
        """Pipelined reads (one round trip): what the benchmark's batch mix uses."""
        try:
            raws = await self._client.mget([self._key(i) for i in idents])
        except RedisError as err:
            raise self._fail(err) from err
        return [None if r is None else _text(r) for r in raws]

    async def put_raw(
        self, namespace: str, key: str, text: str, *, only_if_absent: bool = False
    ) -> bool:
        ident = item_id(namespace, key)
        keys = [self._key(ident), self._lru, self._size, self._bytes]
        args: list[str | float] = [ident, text, time.time(), "1" if only_if_absent else "0"]
        try:
            return bool(await self._put(keys=keys, args=args))
        except RedisError as err:
            raise self._fail(err) from err

    async def put_many(self, items: list[tuple[str, str, str]]) -> None:
        """Batched writes (namespace, key, text): one script call, one round trip."""
        idents = [item_id(namespace, key) for namespace, key, _ in items]
        keys = [self._key(i) for i in idents] + [self._lru, self._size, self._bytes]
        args: list[str | float] = [time.time()]
        for ident, (_, _, text) in zip(idents, items, strict=True):
            args += [ident, text]
        try:
            await self._put_many(keys=keys, args=args)
        except RedisError as err:
            raise self._fail(err) from err

    async def delete(self, namespace: str, key: str, *, if_text: str | None = None) -> bool:
        ident = item_id(namespace, key)
        keys = [self._key(ident), self._lru, self._size, self._bytes]
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
