"""The Redis Streams broker: consumer groups per capability and priority across nodes.

Every node's agent of a capability is a consumer in the group ``workers`` of the streams
``P q:<cap>:high|normal|low``: competing consumers share the work, and each reads only as many
entries as it has free capacity, so a node never takes more than it can run. An entry stays in
the group's pending list until its task finishes; a worker refreshes the idle time of what it runs
(``XCLAIM ... JUSTID``, a heartbeat), so an entry idle longer than ``reclaim_idle`` belongs to a
dead worker and is taken over with ``XAUTOCLAIM``. Attempts are counted in the task hash (not
the entry's delivery counter, which a reclaim and a retry treat differently) and fence a slow
worker out: only the current attempt may store a result. After Redis was unreachable nobody
could refresh anything, so every running entry looks idle: this node reclaims nothing until it
has been back for ``reclaim_idle``, which gives the owners (alive, holding finished outcomes) time
to report or refresh first; a node that never lost Redis reclaims as usual. State changes are
Lua scripts (:mod:`inference_server.agents.scripts`). Redis should persist (AOF) so a restart
loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from inference_server.agents import scripts
from inference_server.agents.broker import Broker, BrokerSettings, Counts
from inference_server.agents.model import (
    LIVE_STATES,
    PRIORITIES,
    AgentInfo,
    Begin,
    BrokerUnavailableError,
    DeadLetter,
    Delivery,
    TaskEvent,
    TaskRecord,
    TaskSpec,
    TaskState,
)

_LOGGER = logging.getLogger(__name__)

GROUP = "workers"
REQUEUE_INTERVAL = 0.2
LIST_SCAN_LIMIT = 5000
HEALTH_CHECK_SECONDS = 2


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _record(data: dict[str, str]) -> TaskRecord:
    result = data.get("result")
    return TaskRecord(
        id=data["id"],
        capability=data["capability"],
        payload=json.loads(data["payload"]),
        priority=data["priority"],  # type: ignore[arg-type]
        state=data["state"],  # type: ignore[arg-type]
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        deadline=_float(data.get("deadline")),
        idempotency_key=data.get("idempotency_key") or None,
        attempts=int(data.get("attempts") or 0),
        agent=data.get("agent") or None,
        result=json.loads(result) if result else None,
        error=data.get("error") or None,
        started_at=_float(data.get("started_at")),
        finished_at=_float(data.get("finished_at")),
    )


class RedisBroker(Broker):
    kind = "redis"

    def __init__(self, url: str, prefix: str, settings: BrokerSettings) -> None:
        super().__init__()
        self.settings = settings
        self.prefix = prefix
        # A pooled connection idle for a while is pinged before use, so one left broken by a
        # Redis restart is replaced instead of failing a request. Commands themselves are not
        # retried blindly: a resent submit could queue a task twice.
        self.redis: Redis = Redis.from_url(
            url, decode_responses=True, health_check_interval=HEALTH_CHECK_SECONDS
        )
        # redis-py's stubs type replies as bytes | str | Any; with decode_responses they are str.
        self._r: Any = self.redis
        self._channel = f"{prefix}events"
        self._scripts: dict[str, AsyncScript] = {
            name: self.redis.register_script(getattr(scripts, name))
            for name in (
                "SUBMIT",
                "BEGIN",
                "SUCCEED",
                "FAIL",
                "REQUEUE_DUE",
                "CANCEL",
                "KEEPALIVE",
                "FETCH",
            )
        }
        self._groups_ready: set[str] = set()
        self._next_reclaim: dict[str, float] = {}
        self._next_requeue = 0.0
        self._listener: asyncio.Task[None] | None = None
        self._down = False
        """The last call found Redis unreachable (reset by the next call that goes through)."""
        self._back_at: float | None = None
        """When (monotonic) a call last went through again after Redis was unreachable."""

    # --- keys --------------------------------------------------------------------------
    def _task(self, task_id: str) -> str:
        return f"{self.prefix}task:{task_id}"

    def _stream(self, capability: str, priority: str) -> str:
        return f"{self.prefix}q:{capability}:{priority}"

    @property
    def _stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def _delayed(self) -> str:
        return f"{self.prefix}delayed"

    @property
    def _dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def _ttl_ms(self) -> int:
        return int(self.settings.result_ttl * 1000)

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Redis being away is a condition callers handle (503, retry), not a crash.

        The idle pooled connections are dropped too: after a Redis restart every one of them
        is dead, and each would otherwise fail one more request before it is replaced.
        """
        try:
            yield
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as err:
            self._down = True
            with contextlib.suppress(Exception):
                await self.redis.connection_pool.disconnect(inuse_connections=False)
            raise BrokerUnavailableError(f"Redis is unavailable: {err}") from err
        if self._down:
            self._down = False
            self._back_at = time.monotonic()

    def _may_reclaim(self, now: float) -> bool:
        """Not while Redis was away from this node, nor until ``reclaim_idle`` after it came
        back: the idle times then measure the outage, not dead workers."""
        if self._down:
            return False
        return self._back_at is None or now - self._back_at >= self.settings.reclaim_idle

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="prime-spark-agent-events")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._r.aclose()

    async def _listen(self) -> None:
        """Forward task state changes from every node to this node's event stream."""
        backoff = 0.5
        while True:
            pubsub = self._r.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                backoff = 0.5
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    data = json.loads(message["data"])
                    self._emit(
                        TaskEvent(
                            task_id=data["task_id"],
                            capability=data["capability"],
                            state=data["state"],
                            agent=data.get("agent") or None,
                            error=data.get("error") or None,
                        )
                    )
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as err:
                _LOGGER.warning("Agent event channel lost (%s); resubscribing", err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # --- client side -------------------------------------------------------------------
    async def submit(self, spec: TaskSpec) -> tuple[TaskRecord, bool]:
        task_id = uuid.uuid4().hex
        now = time.time()
        idem = spec.idempotency_key or ""
        async with self._guard():
            created, got_id = await self._scripts["SUBMIT"](
                keys=[
                    f"{self.prefix}idem:{idem}",
                    self._task(task_id),
                    self._stream(spec.capability, spec.priority),
                    f"{self.prefix}tasks",
                    self._stats,
                ],
                args=[
                    task_id,
                    spec.capability,
                    spec.priority,
                    json.dumps(spec.payload),
                    repr(now),
                    "" if spec.deadline is None else repr(spec.deadline),
                    idem,
                    self._ttl_ms,
                    GROUP,
                    self._channel,
                ],
            )
        if created:  # what the script wrote; no second round trip
            return TaskRecord(
                id=task_id,
                capability=spec.capability,
                payload=spec.payload,
                priority=spec.priority,
                state="queued",
                created_at=now,
                updated_at=now,
                deadline=spec.deadline,
                idempotency_key=spec.idempotency_key,
            ), True
        record = await self.get(str(got_id))
        if record is None:  # pragma: no cover - expired between the script and the read
            raise BrokerUnavailableError("the task vanished right after it was submitted")
        return record, False

    async def get(self, task_id: str) -> TaskRecord | None:
        async with self._guard():
            data = await self._r.hgetall(self._task(task_id))
        return _record(data) if data else None

    async def list_tasks(
        self, *, state: str | None, capability: str | None, limit: int
    ) -> list[TaskRecord]:
        index = f"{self.prefix}tasks"
        out: list[TaskRecord] = []
        start = 0
        page = max(limit, 100)
        async with self._guard():
            while len(out) < limit and start < LIST_SCAN_LIMIT:
                ids = await self._r.zrevrange(index, start, start + page - 1)
                if not ids:
                    break
                start += len(ids)
                async with self._r.pipeline(transaction=False) as pipe:
                    for task_id in ids:
                        pipe.hgetall(self._task(task_id))
                    rows = await pipe.execute()
                gone = [task_id for task_id, row in zip(ids, rows, strict=True) if not row]
                if gone:  # results expired: drop them from the index too
                    await self._r.zrem(index, *gone)
                    start -= len(gone)
                for row in rows:
                    if not row:
                        continue
                    if (state is None or row["state"] == state) and (
                        capability is None or row["capability"] == capability
                    ):
                        out.append(_record(row))
        return out[:limit]

    async def cancel(self, task_id: str) -> TaskRecord | None:
        async with self._guard():
            await self._scripts["CANCEL"](
                keys=[self._task(task_id), self._stats, self._delayed],
                args=[repr(time.time()), self._ttl_ms, self._channel, GROUP],
            )
        return await self.get(task_id)

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        async with self._guard():
            entries = await self._r.xrevrange(self._dead, count=limit)
        return [
            DeadLetter(
                id=entry_id,
                task_id=fields["task_id"],
                capability=fields["capability"],
                attempts=int(fields["attempts"]),
                error=fields["error"],
                at=float(fields["at"]),
                payload=json.loads(fields.get("payload") or "{}"),
            )
            for entry_id, fields in entries
        ]

    async def counts(self) -> Counts:
        async with self._guard():
            raw = await self._r.hgetall(self._stats)
        counts = Counts()
        for key, value in raw.items():
            head, _, tail = key.partition(":")
            if head == "total":
                counts.finished[tail] = int(value)
            elif head in LIVE_STATES:
                by_state = counts.live.setdefault(tail, dict.fromkeys(LIVE_STATES, 0))
                by_state[head] = max(0, int(value))
        return counts

    # --- agent registry ----------------------------------------------------------------
    async def heartbeat(self, agent: AgentInfo) -> None:
        agent.last_seen = time.time()
        ttl = int(self.settings.agent_timeout * 1000)
        async with self._guard(), self._r.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.prefix}agent:{agent.name}", json.dumps(agent.to_json()), px=ttl)
            pipe.zadd(f"{self.prefix}agents", {agent.name: agent.last_seen})
            await pipe.execute()

    async def deregister(self, name: str) -> None:
        async with self._guard(), self._r.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self.prefix}agent:{name}")
            pipe.zrem(f"{self.prefix}agents", name)
            await pipe.execute()

    async def agents(self) -> list[AgentInfo]:
        index = f"{self.prefix}agents"
        async with self._guard():
            names = await self._r.zrange(index, 0, -1)
            if not names:
                return []
            values = await self._r.mget([f"{self.prefix}agent:{n}" for n in names])
            gone = [n for n, v in zip(names, values, strict=True) if v is None]
            if gone:
                await self._r.zrem(index, *gone)
        out = []
        for value in values:
            if value is None:
                continue
            data = json.loads(value)
            data["capabilities"] = tuple(data["capabilities"])
            out.append(AgentInfo(**data))
        return sorted(out, key=lambda a: a.name)

    # --- worker side -------------------------------------------------------------------
    async def _ensure_groups(self, capability: str, *, force: bool = False) -> None:
        if capability in self._groups_ready and not force:
            return
        for priority in PRIORITIES:
            try:
                await self._r.xgroup_create(
                    self._stream(capability, priority), GROUP, id="0", mkstream=True
                )
            except redis_errors.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
        self._groups_ready.add(capability)

    async def _requeue_due(self) -> None:
        now = time.time()
        if now < self._next_requeue:
            return
        self._next_requeue = now + REQUEUE_INTERVAL
        await self._scripts["REQUEUE_DUE"](
            keys=[self._delayed, self._stats],
            args=[repr(now), self.prefix, GROUP, self._channel, 100],
        )

    def _deliveries(self, capability: str, stream: str, entries: list[Any]) -> list[Delivery]:
        return [
            Delivery(task_id=fields["task"], capability=capability, token=f"{stream} {entry_id}")
            for entry_id, fields in entries
            if fields and "task" in fields
        ]

    async def fetch(
        self, capability: str, consumer: str, count: int, block: float
    ) -> list[Delivery]:
        async with self._guard():
            try:
                return await self._fetch(capability, consumer, count, block)
            except redis_errors.ResponseError as err:
                if "NOGROUP" not in str(err):
                    raise
                # Redis lost its data (restart without persistence): recreate and go on.
                await self._ensure_groups(capability, force=True)
                return []

    async def _fetch(
        self, capability: str, consumer: str, count: int, block: float
    ) -> list[Delivery]:
        await self._ensure_groups(capability)
        await self._requeue_due()
        out: list[Delivery] = []
        now = time.monotonic()
        if now >= self._next_reclaim.get(capability, 0.0) and self._may_reclaim(now):
            self._next_reclaim[capability] = now + max(0.2, self.settings.reclaim_idle / 4)
            idle_ms = int(self.settings.reclaim_idle * 1000)
            for priority in PRIORITIES:
                if len(out) >= count:
                    break
                stream = self._stream(capability, priority)
                reply = await self._r.xautoclaim(
                    stream, GROUP, consumer, idle_ms, start_id="0-0", count=count - len(out)
                )
                claimed = self._deliveries(capability, stream, reply[1])
                if claimed:
                    _LOGGER.info(
                        "Reclaimed %d %s task(s) idle for over %.1f s",
                        len(claimed),
                        capability,
                        self.settings.reclaim_idle,
                    )
                out.extend(claimed)
        if len(out) < count:
            reply = await self._scripts["FETCH"](
                keys=[self._stream(capability, p) for p in PRIORITIES],
                args=[GROUP, consumer, count - len(out)],
            )
            out.extend(
                Delivery(task_id=task_id, capability=capability, token=f"{stream} {entry_id}")
                for stream, entry_id, task_id in reply
            )
        if out or block <= 0:
            return out
        # Blocked, Redis answers with the one stream that got an entry first: at most count.
        reply = await self._r.xreadgroup(
            GROUP,
            consumer,
            {self._stream(capability, p): ">" for p in PRIORITIES},
            count=count,
            block=max(1, int(block * 1000)),
        )
        for name, entries in reply or []:
            out.extend(self._deliveries(capability, name, entries))
        return out

    @staticmethod
    def _split(delivery: Delivery) -> tuple[str, str]:
        stream, _, entry = delivery.token.partition(" ")
        return stream, entry

    async def begin(self, delivery: Delivery, agent: str) -> Begin:
        stream, entry = self._split(delivery)
        async with self._guard():
            reply = await self._scripts["BEGIN"](
                keys=[self._task(delivery.task_id), stream, self._stats, self._dead],
                args=[
                    entry,
                    GROUP,
                    agent,
                    repr(time.time()),
                    self.settings.max_deliveries,
                    self._ttl_ms,
                    self._channel,
                ],
            )
        if reply[0] != "run":
            return Begin(action="skip")
        flat = reply[2]
        task = _record(dict(zip(flat[::2], flat[1::2], strict=True)))
        return Begin(action="run", attempt=int(reply[1]), task=task)

    async def succeed(self, delivery: Delivery, attempt: int, result: Any) -> bool:
        stream, entry = self._split(delivery)
        text = json.dumps(result)
        async with self._guard():
            done = await self._scripts["SUCCEED"](
                keys=[self._task(delivery.task_id), stream, self._stats],
                args=[
                    entry,
                    GROUP,
                    attempt,
                    text,
                    repr(time.time()),
                    self._ttl_ms,
                    self._channel,
                ],
            )
        return bool(done)

    async def fail(
        self, delivery: Delivery, attempt: int, error: str, retry_in: float | None
    ) -> TaskState | None:
        stream, entry = self._split(delivery)
        now = time.time()
        async with self._guard():
            outcome = await self._scripts["FAIL"](
                keys=[
                    self._task(delivery.task_id),
                    stream,
                    self._stats,
                    self._delayed,
                    self._dead,
                ],
                args=[
                    entry,
                    GROUP,
                    attempt,
                    error,
                    repr(now),
                    "" if retry_in is None else repr(now + retry_in),
                    self.settings.max_deliveries,
                    self._ttl_ms,
                    self._channel,
                ],
            )
        return str(outcome) or None  # type: ignore[return-value]

    async def keepalive(self, consumer: str, running: list[tuple[Delivery, int]]) -> set[str]:
        if not running:
            return set()
        keys: list[str] = []
        args: list[str | int] = [GROUP, consumer]
        for delivery, attempt in running:
            stream, entry = self._split(delivery)
            keys.append(self._task(delivery.task_id))
            args.extend((stream, entry, attempt))
        async with self._guard():
            lost = await self._scripts["KEEPALIVE"](keys=keys, args=args)
        return {running[int(i) - 1][0].task_id for i in lost}
