"""The agents control API under ``/api/v1/agents``: who runs what, and tasks for them.

Submitting is inference (``operator``); reading is ``reader``. Any node of a cluster answers for
the whole cluster, because registry and tasks live in the shared broker. A bad field is a 400
naming it; a capability no live agent offers is a 404 (the task would only wait); a cancel of a
finished task is a 409; the shared broker being unreachable is a 503 the client may retry.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import voluptuous as vol
from aiohttp import web

from inference_server.agents.base import describe_invalid
from inference_server.agents.model import (
    CAPABILITY_PATTERN,
    PRIORITIES,
    TASK_STATES,
    AgentInfo,
    BrokerUnavailableError,
    TaskRecord,
    TaskSpec,
)
from inference_server.agents.service import AGENTS_KEY, AgentService
from inference_server.api.errors import ApiError
from inference_server.api.validation import nullable, query_integer, read_json, validate
from inference_server.node import NODE_KEY
from inference_server.routing.dispatch import is_private
from inference_server.security.middleware import requires

routes = web.RouteTableDef()

MAX_WAIT = 300.0
MAX_TIMEOUT = 7 * 24 * 3600.0
MIN_TIMEOUT = 0.001


def _number(minimum: float, maximum: float) -> vol.All:
    def number(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise vol.Invalid("expected a number")
        return float(value)

    return vol.All(number, vol.Range(min=minimum, max=maximum))


SUBMIT_SCHEMA = vol.Schema(
    {
        vol.Required("capability"): vol.All(
            str, vol.Match(CAPABILITY_PATTERN, msg="expected a capability name such as llm")
        ),
        vol.Optional("payload", default={}): vol.Any(dict, msg="expected a JSON object"),
        vol.Optional("priority", default="normal"): vol.In(
            PRIORITIES, msg=f"expected one of {', '.join(PRIORITIES)}"
        ),
        vol.Optional("timeout"): nullable(_number(MIN_TIMEOUT, MAX_TIMEOUT)),
        vol.Optional("idempotency_key"): nullable(
            vol.All(
                vol.Any(str, msg="expected a string"),
                vol.Length(min=1, max=200, msg="1 to 200 characters"),
            )
        ),
        vol.Optional("wait"): _number(0, MAX_WAIT),
    }
)


@asynccontextmanager
async def _broker_call() -> AsyncIterator[None]:
    try:
        yield
    except BrokerUnavailableError as err:
        raise ApiError(
            503,
            f"The agent broker is unavailable: {err}",
            type_="server_error",
            code="broker_unavailable",
            headers={"Retry-After": "2"},
        ) from err


def _query_number(request: web.Request, name: str, default: float, maximum: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name}: expected a number", param=name) from None
    if not 0 <= value <= maximum:
        raise ApiError(400, f"{name}: must be between 0 and {maximum:g}", param=name)
    return value


def _task_response(task: TaskRecord, *, created: bool | None = None) -> web.Response:
    body = task.to_json()
    if created is not None:
        body["created"] = created
    return web.json_response(body, status=200 if task.final else 202)


@routes.get("/api/v1/agents")
@requires("reader")
async def list_agents(request: web.Request) -> web.Response:
    service = request.app[AGENTS_KEY]
    async with _broker_call():
        agents = await service.broker.agents()
        counts = await service.broker.counts()
    capabilities: dict[str, dict[str, Any]] = {}
    for agent in agents:
        for capability in agent.capabilities:
            entry = capabilities.setdefault(
                capability, {"agents": 0, "capacity": 0, "load": 0, "pending": 0}
            )
            entry["agents"] += 1
            entry["capacity"] += agent.capacity
            entry["load"] += agent.load
    for capability in counts.live:
        entry = capabilities.setdefault(
            capability, {"agents": 0, "capacity": 0, "load": 0, "pending": 0}
        )
        entry["pending"] = counts.pending(capability)
    return web.json_response(
        {
            "broker": service.broker.kind,
            "agents": [a.to_json() for a in agents],
            "capabilities": capabilities,
            "unavailable": service.unavailable,
            "finished": counts.finished,
        }
    )


def _offers(agents: Iterable[AgentInfo], capability: str) -> bool:
    return any(capability in a.capabilities for a in agents)


async def _require_agent(service: AgentService, capability: str) -> None:
    """This node's own agents, then the watcher's snapshot (a second old) answer most submits
    without a Redis round trip; only a capability missing from both is checked against the
    registry itself. The node's own agents come first because after a Redis outage longer
    than ``agent_timeout`` their registry entries are gone until the next heartbeat, and a 404
    then would tell the caller no agent exists while one is about to take the task."""
    if (
        capability in service.local_capabilities
        or _offers(service.known_agents.values(), capability)
        or _offers(await service.broker.agents(), capability)
    ):
        return
    hint = service.unavailable.get(capability)
    detail = f" ({hint} on this node)" if hint else ""
    raise ApiError(
        404,
        f"No live agent offers the capability '{capability}'{detail}",
        code="no_agent",
        param="capability",
    )


@routes.post("/api/v1/agents/tasks")
@requires("operator")
async def submit_task(request: web.Request) -> web.Response:
    service = request.app[AGENTS_KEY]
    body = validate(SUBMIT_SCHEMA, await read_json(request))
    capability = body["capability"]
    try:
        payload = service.validate_payload(capability, body["payload"])
    except vol.Invalid as err:
        param, message = describe_invalid(err)
        raise ApiError(400, message, param=param) from err
    if capability == "llm":
        # Privacy is decided here, where the caller is known, as for an HTTP chat request:
        # the payload's flag, the X-Prime-Spark-Private header, else this node's default for
        # the caller's token. The node that runs the task only reads the result.
        payload["private"] = is_private(request, payload, request.app[NODE_KEY])
    timeout = body.get("timeout")
    spec = TaskSpec(
        capability=capability,
        payload=payload,
        priority=body["priority"],
        deadline=None if timeout is None else time.time() + timeout,
        idempotency_key=body.get("idempotency_key"),
    )
    async with _broker_call():
        await _require_agent(service, capability)
        task, created = await service.broker.submit(spec)
        if body.get("wait"):
            task = await service.wait(task.id, body["wait"]) or task
    return _task_response(task, created=created)


@routes.get("/api/v1/agents/tasks")
@requires("reader")
async def list_tasks(request: web.Request) -> web.Response:
    service = request.app[AGENTS_KEY]
    state = request.query.get("state")
    if state is not None and state not in TASK_STATES:
        raise ApiError(400, f"state: expected one of {', '.join(TASK_STATES)}", param="state")
    capability = request.query.get("capability")
    if capability is not None and not CAPABILITY_PATTERN.match(capability):
        raise ApiError(400, "capability: expected a capability name", param="capability")
    limit = query_integer(request, "limit", 50, 0, 500)
    async with _broker_call():
        tasks = await service.broker.list_tasks(state=state, capability=capability, limit=limit)
    return web.json_response({"tasks": [t.to_json() for t in tasks]})


async def _task_or_404(service: AgentService, task_id: str) -> TaskRecord:
    task = await service.broker.get(task_id)
    if task is None:
        raise ApiError(
            404, f"No task '{task_id}' (unknown, or its result expired)", code="task_not_found"
        )
    return task


@routes.get("/api/v1/agents/tasks/{task_id}")
@requires("reader")
async def get_task(request: web.Request) -> web.Response:
    service = request.app[AGENTS_KEY]
    wait = _query_number(request, "wait", 0, MAX_WAIT)
    task_id = request.match_info["task_id"]
    async with _broker_call():
        task = await _task_or_404(service, task_id)
        if wait and not task.final:
            task = await service.wait(task_id, wait) or task
    return _task_response(task)


@routes.post("/api/v1/agents/tasks/{task_id}/cancel")
@requires("operator")
async def cancel_task(request: web.Request) -> web.Response:
    service = request.app[AGENTS_KEY]
    task_id = request.match_info["task_id"]
    async with _broker_call():
        before = await _task_or_404(service, task_id)
        if before.final:
            raise ApiError(
                409, f"The task is already {before.state}", code="task_final", param="task_id"
            )
        task = await service.broker.cancel(task_id)
    if task is None:
        raise ApiError(404, f"No task '{task_id}'", code="task_not_found")
    if task.state != "cancelled":
        raise ApiError(409, f"The task is already {task.state}", code="task_final")
    return web.json_response(task.to_json())


@routes.get("/api/v1/agents/dead-letters")
@requires("reader")
async def dead_letters(request: web.Request) -> web.Response:
    service = request.app[AGENTS_KEY]
    limit = query_integer(request, "limit", 50, 0, 500)
    async with _broker_call():
        letters = await service.broker.dead_letters(limit)
    return web.json_response({"dead_letters": [d.to_json() for d in letters]})
