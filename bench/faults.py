"""Fault injection under load: what the caller sees, how long recovery takes, what is lost.

    scripts/shell python -m bench.faults [--outage 5] [--rate 20] [--task-rate 3]
                                         [--only redis,peer,kill,kafka,postgres]
                                         [--out bench/RESULTS.md]

Every service here is the bench's own: a private ``redis-server`` on a free port (never the
shared one), its own ``prime-spark-server`` processes with their own data dirs.

- **redis**: a server with ``memory.redis_url`` at the private Redis gets memory writes (PUT)
  and reads of earlier items at ``--rate`` per second each; Redis is stopped (SIGTERM) for
  ``--outage`` seconds and started again on the same port and append-only file. Recovery: from
  Redis' restart until ``/api/v1/memory/status`` says the hot tier is available. Lost: items
  whose PUT was acknowledged (2xx) but that do not read back with their value afterwards.
  The same server's agents use the same Redis (``agents.redis_url``, default timings, only the
  test agent ``test.sleep`` of ``TASK_SECONDS``) and get task submits at ``--task-rate`` per
  second throughout. Acknowledged: 2xx with an id; a 503 with Retry-After is a clear refusal,
  counted apart. After recovery every acknowledged task is waited for until final; lost:
  acknowledged minus succeeded. The agent's own run log (a Redis list, written when a run
  starts and not after) counts duplicates: work started twice.
- **peer**: an edge server (bundled model) in ``cloud_first`` with a second prime-spark-server
  as its only cloud peer gets non-streamed chats (``cache: bypass``) at ``--chat-rate``; the peer
  is SIGKILLed, and restarted after ``--outage`` seconds on the same port. Recovery: from the
  peer answering /health again until the edge routes a request to it again. Lost: requests that
  got no 200.
- **kill**: a server holding acknowledged memory items streams a long completion; after the
  first chunks it is SIGKILLed and restarted on the same port and data dir. Recovery: from the
  kill until /health says 200. Lost: acknowledged items missing afterwards; the cut stream is
  reported as what the caller got.

- **kafka** / **postgres**: a server whose analytics go to a private Kafka broker and a private
  PostgreSQL (bench/private_services.py: free ports, own data dirs, deleted afterwards) gets
  memory PUTs at ``--rate`` per second, each of which emits exactly one ``memory`` ``set``
  event; the broker (or PostgreSQL) is SIGKILLed (every process of it, as a crash would), and
  started again on the same port and data after ``--outage`` seconds. Recovery: from the
  service answering again until the first new row is stored in PostgreSQL, and until
  PostgreSQL holds every event acknowledged before the restart (the spool backlog, peak and
  at the end, comes from ``/api/v1/analytics/health``). Lost:
  acknowledged PUTs minus the distinct event ids of this run's node stored in PostgreSQL once
  the pipeline has drained; duplicates: rows minus distinct ids.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    BENCH_DIR,
    command_line,
    machine_line,
    now_line,
    percentile,
    start_server,
    stop,
    wait_http,
    write_section,
)

TITLE = "## Fault injection (bench/faults.py)"
TASK_SECONDS = 0.5  # long enough that tasks are running when Redis stops, short for the bench


async def at_rate(
    rate: float, stop: asyncio.Event, send: Callable[[int], Coroutine[Any, Any, None]]
) -> None:
    """Open-model load: ``send(i)`` started at ``rate`` per second whatever the answers take,
    until ``stop`` is set; then waits for every call started."""
    i = 0
    start = time.monotonic()
    started = []
    while not stop.is_set():
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        started.append(asyncio.create_task(send(i)))
        i += 1
    await asyncio.gather(*started)


def _tokens() -> dict[str, str]:
    from tests.server.server_process import TOKENS  # noqa: PLC0415

    return TOKENS


def _auth(role: str = "operator") -> dict[str, str]:
    return {"Authorization": f"Bearer {_tokens()[role]}", "Content-Type": "application/json"}


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


async def _hot_available(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(url + "/api/v1/memory/status", headers=_auth("reader")) as r:
        body = await r.json()
    tiers = body.get("tiers", body)
    hot = tiers.get("hot", {}) if isinstance(tiers, dict) else {}
    return bool(hot.get("available"))


# ------------------------------------------------------------------------------ redis


async def _wait_capability(session: aiohttp.ClientSession, url: str, capability: str) -> None:
    """Submits before the node's agent registered would be 404s that say nothing of the fault."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with session.get(url + "/api/v1/agents", headers=_auth("reader")) as r:
            body = await r.json()
        if r.status == 200 and capability in body.get("capabilities", {}):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no agent offers {capability} on {url}")


async def _final_task(session: aiohttp.ClientSession, url: str, task_id: str,
                      deadline: float) -> str:  # fmt: skip
    """The task's final state, long-polled; 503 (broker away) is retried, as documented."""
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{url}/api/v1/agents/tasks/{task_id}?wait=10",
                                   headers=_auth("reader")) as r:  # fmt: skip
                body = await r.json()
                if r.status == 200:
                    return str(body.get("state"))
                if r.status == 404:
                    return "missing"
                if r.status != 503 and r.status != 202:
                    return f"GET {r.status}"
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    return "not final within 120 s"


async def _redis_fault(url: str, redis: Any, rate: float, outage: float, task_rate: float,
                       task_prefix: str) -> dict[str, Any]:  # fmt: skip
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    acked: dict[str, int] = {}
    seen: dict[str, int] = {}
    worst = 0.0
    phase = {"name": "before"}
    by_phase: dict[str, dict[str, int]] = {"before": {}, "outage": {}, "after": {}}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def write(i: int) -> None:
            nonlocal worst
            sent_in = phase["name"]  # a request belongs to the phase it was sent in
            key = f"k{i}"
            started = time.monotonic()
            try:
                async with session.put(f"{url}/api/v1/memory/items/{ns}/{key}",
                                       data=json.dumps({"value": {"i": i}}),
                                       headers=_auth()) as r:  # fmt: skip
                    await r.read()
                    label = f"PUT {r.status}"
                    if 200 <= r.status < 300:
                        acked[key] = i
            except aiohttp.ClientError as err:
                label = f"PUT {type(err).__name__}"
            worst = max(worst, time.monotonic() - started)
            _count(by_phase[sent_in], label)
            if acked:
                probe = next(iter(acked))
                async with session.get(f"{url}/api/v1/memory/items/{ns}/{probe}",
                                       headers=_auth("reader")) as r:  # fmt: skip
                    await r.read()
                    _count(by_phase[sent_in], f"GET {r.status}")

        stop_writing = asyncio.Event()

        def writer() -> Coroutine[Any, Any, None]:
            return at_rate(rate, stop_writing, write)

        # Agent tasks on the same Redis: acknowledged = 2xx with an id; a 503 with Retry-After
        # is a clear refusal (never acknowledged), anything else a failure without a clear error.
        task_ids: dict[str, str] = {}
        refused = 0
        unclear = 0
        first_task_after: list[float] = []

        async def submit(i: int) -> None:
            nonlocal refused, unclear
            sent_in = phase["name"]
            tag = f"{ns}-t{i}"
            try:
                async with session.post(f"{url}/api/v1/agents/tasks",
                                        data=json.dumps({"capability": "test.sleep",
                                                         "payload": {"seconds": TASK_SECONDS,
                                                                     "tag": tag,
                                                                     "log_finish": False}}),
                                        headers=_auth()) as r:  # fmt: skip
                    body = await r.json(content_type=None)
                    label = f"POST {r.status}"
                    if 200 <= r.status < 300 and isinstance(body, dict) and body.get("id"):
                        task_ids[tag] = str(body["id"])
                        if sent_in == "after" and not first_task_after:
                            first_task_after.append(time.monotonic())
                    elif r.status == 503 and r.headers.get("Retry-After"):
                        refused += 1
                    else:
                        unclear += 1
            except aiohttp.ClientError as err:
                label = f"POST {type(err).__name__}"
                unclear += 1
            _count(by_phase[sent_in], label)

        def submitter() -> Coroutine[Any, Any, None]:
            return at_rate(task_rate, stop_writing, submit)

        await _wait_capability(session, url, "test.sleep")
        task = asyncio.create_task(writer())
        submitting = asyncio.create_task(submitter())
        await asyncio.sleep(3.0)
        phase["name"] = "outage"
        stopped_at = time.time()
        redis.stop()
        await asyncio.sleep(outage)
        redis.start()
        restarted = time.monotonic()
        phase["name"] = "after"
        recovery = None
        while time.monotonic() - restarted < 60:
            if await _hot_available(session, url):
                recovery = time.monotonic() - restarted
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        stop_writing.set()
        await task
        await submitting
        deadline = time.monotonic() + 120
        finals = await asyncio.gather(
            *(_final_task(session, url, task_id, deadline) for task_id in task_ids.values())
        )
        for key in acked:
            async with session.get(f"{url}/api/v1/memory/items/{ns}/{key}",
                                   headers=_auth("reader")) as r:  # fmt: skip
                if r.status == 200:
                    body = await r.json()
                    item = body.get("item", body)
                    seen[key] = item.get("value", {}).get("i", -1)
    lost = sum(1 for k, i in acked.items() if seen.get(k) != i)
    states: dict[str, int] = {}
    for state in finals:
        _count(states, state)
    # test.sleep logs each start in <prefix>runs before its work (and, with log_finish False,
    # writes nothing after it, so a run that ends while Redis is down succeeds and its outcome
    # must be kept by the worker). A start that could not be logged fails before any work; so a
    # tag logged twice is work really done twice: a duplicate.
    import redis as redis_py  # noqa: PLC0415

    client = redis_py.Redis.from_url(redis.url, decode_responses=True)
    try:
        runs = [json.loads(e) for e in client.lrange(f"{task_prefix}runs", 0, -1)]
    finally:
        client.close()
    started: dict[str, int] = {}
    for entry in runs:
        if entry.get("event") == "start" and entry.get("tag") in task_ids:
            _count(started, entry["tag"])
    # Runs whose work spanned the stop: they finished while Redis was down, and only the
    # worker's kept outcome can make them succeed.
    spanning = sum(
        1
        for e in runs
        if e.get("event") == "start"
        and e.get("tag") in task_ids
        and e["at"] < stopped_at < e["at"] + TASK_SECONDS
    )
    return {"phases": by_phase, "recovery": recovery, "acked": len(acked), "lost": lost,
            "worst_ms": worst * 1000, "tasks_acked": len(task_ids),
            "tasks_lost": len(task_ids) - states.get("succeeded", 0), "task_states": states,
            "tasks_refused": refused, "tasks_unclear": unclear,
            "tasks_duplicated": sum(1 for n in started.values() if n > 1),
            "tasks_unstarted": len(task_ids) - len(started), "tasks_spanning": spanning,
            "tasks_first_after": None if not first_task_after
            else first_task_after[0] - restarted}  # fmt: skip


def fault_redis(workdir: Path, rate: float, outage: float, task_rate: float) -> dict[str, Any]:
    from tests.server.memory.conftest import PrivateRedis  # noqa: PLC0415

    redis = PrivateRedis(workdir / "redis")
    redis.start()
    proc = None
    task_prefix = f"bench-faults-{uuid.uuid4().hex[:6]}:"  # the AOF outlives a run: own keys
    try:
        # Agents at their default timings (heartbeat, reclaim, retries), only the instant
        # test.sleep agent enabled: a task's fate then depends on the broker alone.
        proc, url, _ = start_server(
            workdir,
            {"models": {"default": "absent-model-so-none-loads"},
             "memory": {"redis_url": redis.url, "mover_interval_seconds": 2,
                        "cache_semantic": False},
             "agents": {"redis_url": redis.url, "key_prefix": task_prefix,
                        "modules": ["tests.server.agents.agents_for_tests"],
                        "enabled": ["test.sleep"], "capacity": {"test.sleep": 4}}},
            name="redis-edge", wait_model=False,
        )  # fmt: skip
        return asyncio.run(_redis_fault(url, redis, rate, outage, task_rate, task_prefix))
    finally:
        stop(proc)
        redis.stop()


# ------------------------------------------------------------------------------ cloud peer


async def _peer_fault(
    url: str, restart_peer: Callable[[], None], kill_peer: Callable[[], None], rate: float,
    outage: float,
) -> dict[str, Any]:  # fmt: skip
    seen: dict[str, dict[str, int]] = {"before": {}, "outage": {}, "after": {}}
    phase = {"name": "before"}
    failed = refused = 0
    back_at: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def chat(i: int) -> None:
            nonlocal failed, refused
            sent_in = phase["name"]  # a request belongs to the phase it was sent in
            body = {"messages": [{"role": "user", "content": f"Say the number {i}."}],
                    "max_tokens": 4, "temperature": 0, "cache": "bypass"}  # fmt: skip
            try:
                async with session.post(url + "/v1/chat/completions", data=json.dumps(body),
                                        headers=_auth()) as r:  # fmt: skip
                    payload = await r.read()
                    route = r.headers.get("x-prime-spark-route", "?")
                    if r.status != 200:
                        try:
                            route += " (" + json.loads(payload)["error"]["code"] + ")"
                        except (ValueError, KeyError, TypeError):
                            route += " (" + payload[:80].decode(errors="replace") + ")"
                    _count(seen[sent_in], f"{r.status} {route}")
                    if r.status in {429, 503}:
                        refused += 1  # a clear "busy, retry" with a JSON error: nothing lost
                    elif r.status != 200:
                        failed += 1
                    elif route.startswith("cloud") and sent_in == "after":
                        back_at.append(time.monotonic())
            except aiohttp.ClientError as err:
                failed += 1
                _count(seen[sent_in], type(err).__name__)

        done = asyncio.Event()

        def load() -> Coroutine[Any, Any, None]:
            return at_rate(rate, done, chat)

        task = asyncio.create_task(load())
        await asyncio.sleep(4.0)
        phase["name"] = "outage"
        kill_peer()
        await asyncio.sleep(outage)
        await asyncio.to_thread(restart_peer)
        ready = time.monotonic()
        phase["name"] = "after"
        while not back_at and time.monotonic() - ready < 60:  # noqa: ASYNC110 - a deadline too
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)
        done.set()
        await task
    recovery = back_at[0] - ready if back_at else None
    return {"phases": seen, "recovery": recovery, "lost": failed, "refused": refused}


def fault_peer(workdir: Path, rate: float, outage: float) -> dict[str, Any]:
    from tests.server.server_process import TOKENS, free_port  # noqa: PLC0415

    peer_port = free_port()
    peer_settings: dict[str, Any] = {"memory": {"cache_semantic": False}}
    holder: dict[str, subprocess.Popen[bytes] | None] = {"peer": None}
    edge = None
    try:
        holder["peer"], peer_url, _ = start_server(workdir, peer_settings, name="peer",
                                                   port=peer_port)  # fmt: skip
        edge, url, _ = start_server(
            workdir,
            {"memory": {"cache_semantic": False},
             "routing": {"mode": "cloud_first", "health_interval": 1, "failure_threshold": 2,
                         "cooldown": 2, "peers": [{"name": "peer", "url": peer_url,
                                                   "token": TOKENS["operator"]}]}},
            name="peer-edge",
        )  # fmt: skip
        # The first health check must have seen the peer, or everything stays on the edge.
        time.sleep(2.5)

        def kill_peer() -> None:
            proc = holder["peer"]
            assert proc is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait()

        def restart_peer() -> None:
            holder["peer"], _, _ = start_server(workdir, peer_settings, name="peer",
                                                port=peer_port)  # fmt: skip

        return asyncio.run(_peer_fault(url, restart_peer, kill_peer, rate, outage))
    finally:
        stop(edge)
        stop(holder["peer"])


# ------------------------------------------------------------------------------ server killed


async def _kill_fault(
    url: str, items: int, kill: Callable[[], None], restart: Callable[[], None]
) -> dict[str, Any]:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        acked = []
        for i in range(items):
            item_url = f"{url}/api/v1/memory/items/{ns}/k{i}"
            async with session.put(item_url, data=json.dumps({"value": i}), headers=_auth()) as r:
                if 200 <= r.status < 300:
                    acked.append(i)
        body = {"prompt": "Count from 1 to 2000: 1, 2, 3, 4, 5, 6,", "max_tokens": 256,
                "temperature": 0, "stream": True}  # fmt: skip
        chunks = 0
        saw = "completed"
        killed_at = 0.0
        try:
            async with session.post(url + "/v1/completions", data=json.dumps(body),
                                    headers=_auth()) as r:  # fmt: skip
                async for line in r.content:
                    if line.startswith(b"data: {"):
                        chunks += 1
                        if chunks == 5:
                            killed_at = time.monotonic()
                            kill()
                    if line.startswith(b"data: [DONE]"):
                        saw = f"[DONE] after {chunks} chunks (the kill came too late)"
        except (aiohttp.ClientError, ConnectionError) as err:
            saw = f"{type(err).__name__} after {chunks} chunks, no [DONE]"
        else:
            if saw == "completed":
                saw = f"the stream ended without [DONE] after {chunks} chunks"
        await asyncio.to_thread(restart)
        recovery = time.monotonic() - killed_at
        missing = 0
        for i in acked:
            async with session.get(f"{url}/api/v1/memory/items/{ns}/k{i}",
                                   headers=_auth("reader")) as r:  # fmt: skip
                if r.status != 200:
                    missing += 1
    return {"saw": saw, "recovery": recovery, "acked": len(acked), "lost": missing}


def fault_kill(workdir: Path, items: int) -> dict[str, Any]:
    from tests.server.server_process import free_port  # noqa: PLC0415

    port = free_port()
    settings: dict[str, Any] = {"memory": {"cache_semantic": False}}
    holder: dict[str, subprocess.Popen[bytes] | None] = {"proc": None}
    try:
        holder["proc"], url, _ = start_server(workdir, settings, name="killed", port=port)

        def kill() -> None:
            proc = holder["proc"]
            assert proc is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait()

        def restart() -> None:
            holder["proc"], _, _ = start_server(workdir, settings, name="killed", port=port)
            wait_http(url + "/health", 120)

        return asyncio.run(_kill_fault(url, items, kill, restart))
    finally:
        stop(holder["proc"])


# ------------------------------------------------------------------------------ Kafka, PostgreSQL

MEMORY_SETS = (
    "SELECT count(*), count(DISTINCT event_id) FROM analytics_events "
    "WHERE node_id = $1 AND type = 'memory' AND data->>'operation' = 'set'"
)


async def _stored(dsn: str, node_id: str) -> tuple[int, int] | None:
    """(rows, distinct event ids) of this run's memory ``set`` events; None while PG is down."""
    import asyncpg  # noqa: PLC0415

    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    try:
        row = await conn.fetchrow(MEMORY_SETS, node_id)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None  # e.g. the table does not exist yet
    finally:
        await conn.close(timeout=2)
    assert row is not None
    return int(row[0]), int(row[1])


async def _kafka_sets(bootstrap: str, topic: str, node_id: str) -> tuple[int, int]:
    """(records, distinct event ids) of this node's memory ``set`` events in the topic: what
    the producer's re-sends after the fault left in Kafka for the sink to de-duplicate."""
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    records = 0
    ids: set[str] = set()

    async def take(timeout_ms: int) -> None:
        nonlocal records
        for messages in (await consumer.getmany(timeout_ms=timeout_ms)).values():
            for message in messages:
                event = json.loads(message.value or b"{}")
                if event.get("node_id") == node_id and event["data"]["operation"] == "set":
                    records += 1
                    ids.add(event["event_id"])

    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            await take(200)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        for tp, end in ends.items():
            while await consumer.position(tp) < end:
                await take(1000)
    finally:
        await consumer.stop()
    return records, len(ids)


async def _analytics_health(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/api/v1/analytics/health", headers=_auth("reader")) as r:
        body: dict[str, Any] = await r.json()
    return body


async def _analytics_fault(
    url: str, dsn: str, node_id: str, service: Any, rate: float, outage: float, *,
    bootstrap: str, topic: str,
) -> dict[str, Any]:  # fmt: skip
    """Memory PUTs (one ``memory`` ``set`` event each) at ``rate`` before, during and after
    ``service`` (the Kafka broker or PostgreSQL) is SIGKILLed and, ``outage`` s later,
    restarted; then count this run's events in PostgreSQL against the acknowledged PUTs."""
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    acked = 0
    acked_by_phase = {"before": 0, "outage": 0, "after": 0}
    worst = 0.0
    phase = {"name": "before"}
    by_phase: dict[str, dict[str, int]] = {"before": {}, "outage": {}, "after": {}}
    max_backlog = 0
    latencies: dict[str, list[float]] = {"before": [], "outage": [], "after": []}
    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        # Events must flow before the fault: producer and sink connected, the store open.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if (await _analytics_health(session, url)).get("healthy"):
                break
            await asyncio.sleep(0.5)

        async def write(i: int) -> None:
            nonlocal worst, acked
            sent_in = phase["name"]  # a request belongs to the phase it was sent in
            started = time.monotonic()
            try:
                async with session.put(f"{url}/api/v1/memory/items/{ns}/k{i}",
                                       data=json.dumps({"value": {"i": i}}),
                                       headers=_auth()) as r:  # fmt: skip
                    await r.read()
                    label = f"PUT {r.status}"
                    if 200 <= r.status < 300:
                        acked += 1
                        acked_by_phase[sent_in] += 1
            except (aiohttp.ClientError, TimeoutError) as err:
                label = f"PUT {type(err).__name__}"
            took = time.monotonic() - started
            worst = max(worst, took)
            latencies[sent_in].append(took)
            _count(by_phase[sent_in], label)

        stop_writing = asyncio.Event()

        def writer() -> Coroutine[Any, Any, None]:
            return at_rate(rate, stop_writing, write)

        async def watch_backlog() -> None:
            nonlocal max_backlog
            while not stop_writing.is_set():
                health = await _analytics_health(session, url)
                max_backlog = max(max_backlog, int(health["spool"]["backlog_events"]))
                await asyncio.sleep(0.5)

        task = asyncio.create_task(writer())
        watcher = asyncio.create_task(watch_backlog())
        await asyncio.sleep(3.0)
        # At least one event stored before the fault: the pipeline is known to work.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ((await _stored(dsn, node_id)) or (0, 0))[0]:
                break
            await asyncio.sleep(0.5)
        phase["name"] = "outage"
        killed = time.monotonic()
        print(f"  killed at {killed - t0:.1f} s", flush=True)
        await asyncio.to_thread(service.kill)
        await asyncio.sleep(outage)
        await asyncio.to_thread(service.start)  # returns when the service answers again
        restarted = time.monotonic()
        print(f"  answering again at {restarted - t0:.1f} s", flush=True)
        phase["name"] = "after"
        acked_at_restart = acked
        first_stored = caught_up = None
        stored_at_restart = None
        while time.monotonic() - restarted < 120 and (caught_up is None or first_stored is None):
            now = time.monotonic() - restarted
            counts = await _stored(dsn, node_id)
            if counts is not None:
                if stored_at_restart is None:
                    stored_at_restart = counts[0]
                elif first_stored is None and counts[0] > stored_at_restart:
                    first_stored = now
                if counts[0] >= acked_at_restart:
                    caught_up = now
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        stop_writing.set()
        await task
        await watcher
        # Drain: everything acknowledged reaches PostgreSQL, or the count stops moving.
        final = (0, 0)
        last_change = time.monotonic()
        while time.monotonic() - last_change < 30:
            counts = await _stored(dsn, node_id) or final
            if counts != final:
                final, last_change = counts, time.monotonic()
            if final[0] >= acked:
                break
            await asyncio.sleep(0.5)
        health = await _analytics_health(session, url)
    in_kafka = await _kafka_sets(bootstrap, topic, node_id)
    return {
        "phases": by_phase, "acked": acked, "acked_by_phase": acked_by_phase,
        "stored": final[0], "distinct": final[1], "lost": acked - final[1],
        "duplicates": final[0] - final[1], "worst_ms": worst * 1000,
        "p99_ms": {k: percentile(sorted(v), 0.99) * 1000 for k, v in latencies.items()},
        "down_s": restarted - killed, "first_stored": first_stored,
        "backlog_end": health["spool"]["backlog_events"], "caught_up": caught_up,
        "max_backlog": max_backlog, "kafka_records": in_kafka[0], "kafka_distinct": in_kafka[1],
        "dropped": {k: health["events"][k] for k in ("dropped_queue_full", "dropped_spool_error")}
        | {"spool_full": health["spool"]["dropped_events"]},
    }  # fmt: skip


def fault_analytics(workdir: Path, which: str, rate: float, outage: float) -> dict[str, Any]:
    """``which``: ``kafka`` or ``postgres``, the service SIGKILLed and restarted."""
    import shutil  # noqa: PLC0415

    from bench.private_services import PrivateKafka, PrivatePostgres  # noqa: PLC0415

    state = workdir / f"services-{which}-{uuid.uuid4().hex[:6]}"
    run = uuid.uuid4().hex[:8]
    node_id = f"faults-{which}-{run}"
    pg = kafka = None
    proc = None
    try:
        pg = PrivatePostgres(state / "postgres")
        pg.start()
        kafka = PrivateKafka(state / "kafka")
        kafka.start()
        proc, url, _ = start_server(
            workdir,
            {"server": {"node_id": node_id},
             "models": {"default": "absent-model-so-none-loads"},
             "memory": {"cache_semantic": False},
             "analytics": {"kafka_bootstrap": kafka.bootstrap, "postgres_dsn": pg.dsn,
                           "topic_prefix": f"faults{run}", "consumer_group": f"faults{run}",
                           "spool_dir": str(state / "spool")}},
            name=f"{which}-edge", wait_model=False,
        )  # fmt: skip
        service = kafka if which == "kafka" else pg
        return asyncio.run(
            _analytics_fault(url, pg.dsn, node_id, service, rate, outage,
                             bootstrap=kafka.bootstrap, topic=f"faults{run}.memory.v1")
        )  # fmt: skip
    finally:
        stop(proc)
        for svc in (kafka, pg):
            if svc is not None:
                svc.stop()
        shutil.rmtree(state, ignore_errors=True)


# ------------------------------------------------------------------------------ report


def _phases(phases: dict[str, dict[str, int]]) -> str:
    return "; ".join(
        f"{name}: " + (", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "-")
        for name, counts in phases.items()
    )


def _secs(value: float | None) -> str:
    return "not within 60 s" if value is None else f"{value:.2f}"


def render(args: argparse.Namespace, results: dict[str, Any], skipped: list[str]) -> str:
    lines = [
        TITLE, "",
        f"- date: {now_line()}",
        f"- machine: {machine_line()}",
        f"- command: {command_line('bench.faults')}",
        f"- outage: {args.outage:g} s; services: a private redis-server (append-only, fsync "
        "always), a private Kafka broker and PostgreSQL (durable defaults) and the bench's own "
        "prime-spark-server processes, never the shared ones",
        "",
        "| fault | load | what the caller saw (status / route x count, per phase) | "
        "recovery (s) | acknowledged | lost (goal 0) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    if "redis" in results:
        r = results["redis"]
        states = ", ".join(f"{k} {v}" for k, v in sorted(r["task_states"].items())) or "-"
        lines.append(
            f"| Redis (hot tier + agent tasks) stopped, restarted | {args.rate:g} PUT/s + as many "
            f"GET/s of an acknowledged item; {args.task_rate:g} agent task POST/s (`test.sleep`, "
            f"{TASK_SECONDS:g} s) on the same Redis | {_phases(r['phases'])}; slowest PUT "
            f"{r['worst_ms']:.0f} ms | {_secs(r['recovery'])} (Redis restart → hot tier "
            "available); "
            f"{_secs(r['tasks_first_after'])} (→ first task acknowledged) | {r['acked']} items; "
            f"{r['tasks_acked']} tasks (2xx with an id) | {r['lost']} items; {r['tasks_lost']} "
            f"tasks (final states: {states}; duplicates {r['tasks_duplicated']} (work started "
            f"twice), never started {r['tasks_unstarted']}; running when Redis stopped "
            f"{r['tasks_spanning']}; "
            f"{r['tasks_refused']} submits refused with 503 + Retry-After, never acknowledged; "
            f"{r['tasks_unclear']} failed without a clear error) |"
        )
    if "peer" in results:
        r = results["peer"]
        total = sum(sum(c.values()) for c in r["phases"].values())
        lines.append(
            f"| cloud peer (2nd prime-spark-server) SIGKILLed, restarted | {args.chat_rate:g} "
            f"chat/s, cache bypassed | {_phases(r['phases'])} | {_secs(r['recovery'])} (peer "
            f"ready → first request routed to it) | {total} requests | {r['lost']} requests "
            f"unanswered or failed without a clear error ({r['refused']} refused with 429/503 "
            "and Retry-After: the edge's own queue was full) |"
        )
    if "kill" in results:
        r = results["kill"]
        lines.append(
            f"| server SIGKILLed mid-stream, restarted | 1 stream (`/v1/completions`, 256 "
            f"tokens) after {r['acked']} memory PUTs | {r['saw']} | {_secs(r['recovery'])} "
            f"(kill → /health 200 again) | {r['acked']} items | {r['lost']} items (the cut "
            "stream is not resumed: the caller must retry it) |"
        )
    for which, title, recovery in (
        ("kafka", "Kafka broker (analytics) SIGKILLed, restarted",
         "Kafka answers again → first new row in PostgreSQL / → every event acknowledged "
         "before it stored"),
        ("postgres", "PostgreSQL (analytics store) SIGKILLed, restarted",
         "PostgreSQL answers again → first new row / → every event acknowledged before it "
         "stored"),
    ):  # fmt: skip
        if which not in results:
            continue
        r = results[which]
        dropped = ", ".join(f"{k} {v}" for k, v in r["dropped"].items())
        lines.append(
            f"| {title} | {args.rate:g} memory PUT/s (one `memory` `set` event each; Kafka → "
            f"sink → PostgreSQL) | {_phases(r['phases'])}; PUT p99 "
            + "/".join(f"{v:.0f}" for v in r["p99_ms"].values())
            + f" ms (before/outage/after), slowest {r['worst_ms']:.0f} ms; "
            f"down {r['down_s']:.1f} s (kill → answering again); spool backlog peak "
            f"{r['max_backlog']} events, {r['backlog_end']} at the end | "
            f"{_secs(r['first_stored'])} / {_secs(r['caught_up'])} ({recovery}) "
            f"| {r['acked']} events (acknowledged PUTs) | {r['lost']} (stored {r['stored']}, "
            f"distinct {r['distinct']}, duplicates {r['duplicates']}; Kafka held "
            f"{r['kafka_records']} records of {r['kafka_distinct']} events; dropped by the server: "
            f"{dropped}) |"
        )
    lines.append("")
    for reason in skipped:
        lines.append(f"- skipped: {reason}")
    if skipped:
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--chat-rate", type=float, default=3.0)
    parser.add_argument("--task-rate", type=float, default=3.0)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--only", default="redis,peer,kill,kafka,postgres")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    workdir = BENCH_DIR / "faults"
    only = set(args.only.split(","))
    results: dict[str, Any] = {}
    if "redis" in only:
        print("fault: redis", flush=True)
        results["redis"] = fault_redis(workdir, args.rate, args.outage, args.task_rate)
    if "peer" in only:
        print("fault: cloud peer", flush=True)
        results["peer"] = fault_peer(workdir, args.chat_rate, args.outage)
    if "kill" in only:
        print("fault: server killed mid-stream", flush=True)
        results["kill"] = fault_kill(workdir, args.items)
    for which in ("kafka", "postgres"):
        if which in only:
            print(f"fault: {which} (analytics)", flush=True)
            results[which] = fault_analytics(workdir, which, args.rate, args.outage)
    skipped: list[str] = []
    section = render(args, results, skipped)
    print(section)
    if args.out is not None:
        write_section(args.out, TITLE, section)


if __name__ == "__main__":
    main()
