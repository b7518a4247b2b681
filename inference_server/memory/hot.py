"""The hot tier: Redis (shared, durable as far as Redis's own persistence goes) or in-process.

Redis layout under a prefix: ``i:<ns>\\0<key>`` holds the item's canonical text, the sorted set
``lru`` scores each item id by its last write or read, to the second (the demotion clock; see
:func:`recency`), and the counter ``bytes`` keeps usage exact (an item's old size is read back by
the write itself, so no per-item size index is kept). Writes and conditional deletes are Lua
scripts or transactions, so the three structures never disagree and "delete only if unchanged" is
atomic. A batch write is one ``MULTI``/``EXEC`` transaction of a script that reads the old sizes
(``STRLEN``) and adjusts the counter, one ``MSET`` and one ``ZADD``, and concurrent callers'
batches are merged into it.

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
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

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

# A batch write is one MULTI/EXEC transaction: this script, then one MSET of every key and
# text, one ZADD of every id at ``now``. The texts never enter Lua: Redis's Lua hashes every
# byte of every string it is handed (KEYS/ARGV and replies alike), and that hashing, the
# copies and the Lua-to-Redis argument conversion were most of what the former all-in-Lua
# script cost (bench/RESULTS.md). The script only reads the old sizes (``STRLEN``: size-free,
# no value copied into Lua) and adds the batch's delta to the byte counter; ARGV[1] is the sum
# of the new texts' sizes. The transaction keeps it atomic: no other client runs between the
# size reads and the writes, and a dropped connection discards it whole. The caller sends each
# key once (the last write of a key wins, as one SET after another would, and the old size is
# counted once). ``pcall``: a key of another type reads as size 0 and is overwritten, as a
# ``MGET`` (nil for it) and ``MSET`` did.
_PUT_MANY = """
local n = #KEYS - 1
local before = 0
for i = 1, n do
  local size = redis.pcall('STRLEN', KEYS[i])
  if type(size) == 'number' then before = before + size end
end
redis.call('INCRBY', KEYS[n + 1], ARGV[1] - before)
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
"""Items per merged write transaction (a bound on how long one blocks Redis)."""


def recency(now: float) -> float:
    """An item's score in the ``lru`` index: the second of its last write or read.

    Whole seconds, as Redis's own LRU clock and memcached (which moves an item in its LRU at
    most once a minute) keep them: a ``ZADD`` of an unchanged score only finds the member,
    while a new score moves it in the skip list, and that move was a third of what Redis spent
    on a batch write (0.4-0.5 of ~2.4 µs per item; bench/RESULTS.md). An item is demoted at most a
    second early against an idle limit of an hour by default, and items used within the same
    second are demoted in the order of their ids.
    """
    return float(int(now))


_MGET_KEYS = 4096
"""Keys per merged MGET (a bound on one reply's size, not a Redis limit)."""

_IN_FLIGHT = 4
"""Round trips the coalescer keeps in flight at once (Python packs the next while Redis works)."""

_ROUND_TRIP_OPS = 64
"""The least a round trip takes while the queue is split (see ``_SPLIT``)."""

_SPLIT = 3
"""A round trip sent while k others are out takes 1/(``_SPLIT`` - k) of the queued operations
(at least ``_ROUND_TRIP_OPS``), so a full queue leaves in ``_SPLIT`` round trips: Redis runs
one while Python parses another's replies and packs the next, and each side has the next one
ready when it is done. One round trip of everything queued kept all callers in step (all
answered at once, all asking again at once) and left one side idle while the other worked;
two alternating round trips still left each side waiting for the other about a third of the
time (~1.4 of 2 CPUs busy); three gave 27-33 % more operations per second at 800 in flight,
four no more than three (bench/RESULTS.md). Halving every round trip made them small, and
small round trips cost more CPU per operation on both sides."""


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


def _pack(conn: Any, command: tuple[Any, ...]) -> bytes:
    """RESP for one command; the coalescer's own commands are all bytes, str, int or float."""
    if HIREDIS_AVAILABLE:
        packed: bytes = hiredis.pack_command(command)
        return packed
    return b"".join(conn.pack_command(*command))


_Sink = tuple["asyncio.Future[Any]", int, int]
"""A caller waiting on (part of) one command's reply: (future, start, stop); start -1 means
the whole reply, ``_TRANSACTION`` an ``EXEC`` reply (None, or the first error in it), else the
reply list's slice [start:stop] (its keys of a merged MGET)."""

_TRANSACTION = -2


class _Coalescer:
    """Sends the reads and writes of concurrent callers together, merged, in few round trips.

    The first command of an idle tier goes out at once (no timer, no added latency); commands
    issued meanwhile queue (one FIFO) and leave together, the queue split over up to ``_SPLIT``
    round trips (see there; up to ``_IN_FLIGHT`` round trips out), so Redis runs one while Python
    handles another. Within a round trip the reads become one ``MGET`` and the batch writes one
    write transaction, so Redis runs one, not one per caller, and Python packs and parses a handful
    of commands, not one per caller: the per-command costs on both sides are what bounded the
    tier's throughput (bench/RESULTS.md). Concurrent callers have no order between them, so merging
    reorders nothing a caller could observe; each transaction stays atomic.

    Round trips go over connections of the coalescer's own (made by the client's pool, so they
    share its settings), written as one packed buffer and read reply by reply: redis-py's
    pipeline object and pool checkout cost more Python time per round trip than the commands.
    A connection error retries the round trip once on a new connection (what redis-py's own
    retry does: an idle connection may be stale after a Redis restart), then fails the callers.
    Scripts go as ``EVALSHA``; a ``NOSCRIPT`` (Redis restarted or flushed its script cache)
    loads them and resends only those commands (they never ran). The merged write is a
    ``MULTI``/``EXEC`` transaction whose script goes as ``EVAL`` (its text): a ``NOSCRIPT``
    inside a transaction would not stop the ``MSET`` and ``ZADD`` queued after it.
    """

    def __init__(
        self, client: aioredis.Redis, keys: tuple[str, str], put_many: str, scripts: tuple[str, ...]
    ) -> None:
        self._client = client
        self._lru_and_bytes = (keys[0].encode(), keys[1].encode())
        self._scripts = {self.sha(s): s for s in scripts}
        self._put_many = put_many.encode()
        # One FIFO of (operations, kind, payload, future), kind 0 a command, 1 a read (payload:
        # keys), 2 a write (payload: keys, ids, texts); a round trip takes a prefix of it.
        self._queue: list[tuple[int, int, Any, asyncio.Future[Any]]] = []
        self._queued_ops = 0
        self._idle: list[AbstractConnection] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = 0
        self._starting = False

    @staticmethod
    def sha(script: str) -> str:
        # Redis names scripts by their SHA-1 (EVALSHA): an id, not security.
        return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()

    def _enqueue(self, ops: int, kind: int, payload: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((ops, kind, payload, future))
        self._queued_ops += ops
        self._wake()
        return future

    def _wake(self) -> None:
        # A drainer that has not started yet will take this command too: one new task per
        # round trip, not one per caller woken by the previous round trip's replies.
        if not self._starting and self._draining < _IN_FLIGHT:
            # Counted here and uncounted in _drain with no await between its last look at
            # the queue and the decrement, so a queued command always has a drainer.
            self._draining += 1
            self._starting = True
            task = asyncio.get_running_loop().create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def call(self, *command: Any) -> Any:
        """One command, sent as it is (its reply, or its error raised)."""
        return await self._enqueue(1, 0, command)

    async def mget(self, keys: list[bytes]) -> list[Any]:
        """The values of ``keys`` (None where absent), read in the round trip's merged MGET."""
        result: list[Any] = await self._enqueue(len(keys), 1, keys)
        return result

    async def put_many(self, keys: list[bytes], ids: list[bytes], texts: list[bytes]) -> None:
        """Write items (at most ``_BATCH``) in the round trip's merged write transaction: their
        Redis keys, their ids (the recency index's members) and their texts."""
        await self._enqueue(len(keys), 2, (keys, ids, texts))

    def _take(self) -> list[tuple[tuple[Any, ...], list[_Sink]]]:
        """The commands of one round trip (each with its callers): the queue's oldest entries
        (a share of them while fewer than ``_SPLIT`` round trips are out), reads merged,
        writes merged."""
        queue = self._queue
        budget = self._queued_ops
        parts = _SPLIT - self._draining + 1  # _draining counts this round trip
        if parts > 1:  # leave the rest of the queue to the round trips that follow
            budget = max(_ROUND_TRIP_OPS, -(-budget // parts))
        count = ops = 0
        while count < len(queue) and ops < budget:
            ops += queue[count][0]
            count += 1
        batch, self._queue = queue[:count], queue[count:]
        self._queued_ops -= ops
        wire: list[tuple[tuple[Any, ...], list[_Sink]]] = []
        keys: list[bytes] = []
        sinks: list[_Sink] = []
        for _, kind, payload, future in batch:
            if kind == 0:
                wire.append((payload, [(future, -1, 0)]))
            elif kind == 1:
                if keys and len(keys) + len(payload) > _MGET_KEYS:
                    wire.append((("MGET", *keys), sinks))
                    keys, sinks = [], []
                sinks.append((future, len(keys), len(keys) + len(payload)))
                keys += payload
        if keys:
            wire.append((("MGET", *keys), sinks))
        keys = []
        ids: list[bytes] = []
        texts: list[bytes] = []
        sinks = []
        for _, kind, payload, future in batch:
            if kind == 2:
                more_keys, more_ids, more_texts = payload
                if keys and len(keys) + len(more_keys) > _BATCH:
                    self._put_many_commands(wire, keys, ids, texts, sinks)
                    keys, ids, texts, sinks = [], [], [], []
                sinks.append((future, _TRANSACTION, 0))
                keys += more_keys
                ids += more_ids
                texts += more_texts
        if keys:
            self._put_many_commands(wire, keys, ids, texts, sinks)
        return wire

    def _put_many_commands(
        self,
        wire: list[tuple[tuple[Any, ...], list[_Sink]]],
        keys: list[bytes],
        ids: list[bytes],
        texts: list[bytes],
        sinks: list[_Sink],
    ) -> None:
        """Append one merged write: MULTI, the size script, MSET, ZADD, EXEC (its callers wait
        on the EXEC reply). A key written twice keeps its last write only, which is what the
        two writes one after the other leave (and the old size must be counted once)."""
        if len(set(keys)) != len(keys):
            last = {key: j for j, key in enumerate(keys)}
            keep = sorted(last.values())
            keys = [keys[j] for j in keep]
            ids = [ids[j] for j in keep]
            texts = [texts[j] for j in keep]
        lru, size = self._lru_and_bytes
        n = len(keys)
        sets: list[bytes] = [b""] * (2 * n)
        sets[0::2] = keys
        sets[1::2] = texts
        scored = [repr(recency(time.time())).encode()] * (2 * n)  # formatted once, not per item
        scored[1::2] = ids
        wire.append((("MULTI",), []))
        wire.append((("EVAL", self._put_many, n + 1, *keys, size, sum(map(len, texts))), []))
        wire.append((("MSET", *sets), []))
        wire.append((("ZADD", lru, *scored), []))
        wire.append((("EXEC",), sinks))

    async def _drain(self) -> None:
        self._starting = False
        conn = self._idle.pop() if self._idle else self._connection()
        try:
            while True:
                while self._queue:
                    wire = self._take()
                    if self._queue:  # more than one round trip's worth: the next goes out meanwhile
                        self._wake()
                    await self._round_trip(conn, wire, retry=True)
                if self._starting:  # a drainer about to start takes what comes next
                    break
                # The callers this round trip answered ask again in the loop's next turn: wait
                # for them here (they see a drainer starting) instead of ending and having the
                # first of them start a new task, a task and a loop turn per round trip.
                self._starting = True
                await asyncio.sleep(0)
                self._starting = False
                if not self._queue:
                    break
        finally:
            self._draining -= 1
            self._idle.append(conn)

    def _connection(self) -> AbstractConnection:
        """A connection of the coalescer's own, with the client's settings (connected on use)."""
        pool = self._client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    async def _round_trip(
        self,
        conn: Any,
        wire: list[tuple[tuple[Any, ...], list[_Sink]]],
        *,
        retry: bool,
    ) -> None:
        results: list[Any] = []
        try:
            try:
                await self._exchange(conn, wire, results)
            except RedisConnectionError:
                if not retry or results:  # nothing ran yet: the connection was stale
                    raise
                await conn.disconnect()
                await self._exchange(conn, wire, results)
        except (RedisError, OSError) as err:
            await conn.disconnect()  # replies may be half read: never reuse it as it is
            failure = err if isinstance(err, RedisError) else RedisConnectionError(str(err))
            for _, sinks in wire:
                _deliver(sinks, failure)
            return
        except BaseException:
            await conn.disconnect()
            for _, sinks in wire:
                _deliver(sinks, RedisConnectionError("the hot tier was closed"))
            raise
        missing = [
            (command, sinks)
            for (command, sinks), result in zip(wire, results, strict=True)
            if retry and isinstance(result, NoScriptError)
        ]
        for (_, sinks), result in zip(wire, results, strict=True):
            if not (retry and isinstance(result, NoScriptError)):
                _deliver(sinks, result)
        if missing:
            try:
                for source in self._scripts.values():
                    await self._client.script_load(source)
            except (RedisError, OSError) as err:
                failure = err if isinstance(err, RedisError) else RedisConnectionError(str(err))
                for _, sinks in missing:
                    _deliver(sinks, failure)
            else:
                await self._round_trip(conn, missing, retry=False)

    @staticmethod
    async def _exchange(
        conn: Any, wire: list[tuple[tuple[Any, ...], list[_Sink]]], results: list[Any]
    ) -> None:
        """Write the round trip's commands as one buffer, then read one reply per command."""
        packed = b"".join([_pack(conn, command) for command, _ in wire])
        if not conn.is_connected:
            await conn.connect_check_health(check_health=False)  # connect and handshake
        parser = conn._parser
        if not isinstance(parser, _AsyncHiredisParser) or parser._reader is None:
            await conn.send_packed_command(packed, check_health=False)
            for _ in wire:
                try:
                    results.append(await conn.read_response())
                except ResponseError as err:  # the reply was read whole: the stream is in step
                    results.append(err)
            return
        # The connection's streams and hiredis reader used directly, under one deadline for
        # the round trip (the socket timeout): redis-py's send and read_response arm and cancel
        # a timeout per call and go through several coroutines per reply, which cost more than
        # the packing and parsing of a round trip (bench/RESULTS.md).
        reader = parser._reader
        stream = conn._reader
        try:
            async with asyncio.timeout(conn.socket_timeout):
                conn._writer.write(packed)
                await conn._writer.drain()  # returns at once unless the socket buffer is full
                for _ in wire:
                    reply = reader.gets()
                    while reply is NOT_ENOUGH_DATA:
                        data = await stream.read(65536)
                        if not data:
                            raise RedisConnectionError("Connection closed by server.")
                        reader.feed(data)
                        reply = reader.gets()
                    if isinstance(reply, RedisError) and not isinstance(reply, ResponseError):
                        raise reply  # what read_response raises (a ConnectionError from the parser)
                    results.append(reply)  # a ResponseError was read whole: the stream is in step
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout reading from {conn._host_error()}") from None
        except OSError as err:  # what redis-py raises for it (a stale connection is retried)
            raise RedisConnectionError(f"Error reading from {conn._host_error()}: {err}") from err

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._starting = False
        closed = RedisConnectionError("the hot tier was closed")
        while self._queue:
            for _, sinks in self._take():
                _deliver(sinks, closed)
        for conn in self._idle:
            await conn.disconnect()
        self._idle.clear()


def _deliver(sinks: list[_Sink], result: Any) -> None:
    for future, start, stop in sinks:
        if future.done():  # its caller was cancelled
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        elif start == _TRANSACTION:
            # A command that failed inside EXEC is an error element of its reply; a nil reply
            # (an aborted transaction) is a failure too.
            failed = (
                [r for r in result if isinstance(r, BaseException)]
                if isinstance(result, list)
                else [ResponseError(f"the write transaction was not run: {result!r}")]
            )
            if failed:
                future.set_exception(failed[0])
            else:
                future.set_result(None)
        elif start < 0:
            future.set_result(result)
        else:
            future.set_result(result[start:stop])


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
        self._batch = _Coalescer(self._client, (self._lru, self._bytes), _PUT_MANY, (_PUT,))
        self._put_sha = _Coalescer.sha(_PUT)
        self._key_head = (prefix + "i:").encode()

    def _key(self, ident: str) -> str:
        return self._prefix + "i:" + ident

    def _fail(self, err: Exception) -> TierUnavailableError:
        return TierUnavailableError("hot", f"Redis is unreachable: {err}")

    async def get_raw(self, namespace: str, key: str) -> str | None:
        try:
            (raw,) = await self._batch.mget([self._key(item_id(namespace, key)).encode()])
        except RedisError as err:
            raise self._fail(err) from err
        return None if raw is None else _text(raw)

    async def get_many(self, idents: list[str]) -> list[str | None]:
        """Reads merged with concurrent callers' into one MGET: the benchmark's batch mix."""
        if not idents:
            return []
        head = self._key_head
        try:
            raws = await self._batch.mget([head + i.encode() for i in idents])
        except RedisError as err:
            raise self._fail(err) from err
        return [None if r is None else r.decode() for r in raws]

    async def put_raw(
        self, namespace: str, key: str, text: str, *, only_if_absent: bool = False
    ) -> bool:
        ident = item_id(namespace, key)
        keys = [self._key(ident), self._lru, self._bytes]
        args: list[str | float] = [
            ident,
            text,
            recency(time.time()),
            "1" if only_if_absent else "0",
        ]
        try:
            return bool(await self._batch.call("EVALSHA", self._put_sha, len(keys), *keys, *args))
        except RedisError as err:
            raise self._fail(err) from err

    async def put_many(self, items: list[tuple[str, str, str]]) -> None:
        """Batched writes (namespace, key, text): one transaction (with concurrent callers').

        Encoded here, in the caller, so a text that cannot be encoded fails its own caller and
        not the others its batch is merged with.
        """
        head = self._key_head
        for start in range(0, len(items), _BATCH):
            chunk = items[start : start + _BATCH]
            idents = [f"{namespace}\x00{key}".encode() for namespace, key, _ in chunk]  # item_id
            texts = [text.encode() for _, _, text in chunk]
            try:
                await self._batch.put_many([head + i for i in idents], idents, texts)
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
            await self._client.zadd(self._lru, {item_id(namespace, key): recency(now)}, xx=True)
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
        await self._batch.close()
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
