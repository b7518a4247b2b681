"""Push from the node's event stream, polling as the fallback, availability, reauth at runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
import yaml
from homeassistant.config_entries import SOURCE_REAUTH
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark import coordinator as coordinator_module
from custom_components.prime_spark.client import NodeState, StateEvent
from custom_components.prime_spark.const import CONF_SCAN_INTERVAL, DOMAIN
from tests.server.server_process import TOKENS, ServerProcess

from .helpers import crash, entry_for, wait_for

BUSY_SLOTS = "sensor.prime_spark_edge_busy_slots"
READY = "binary_sensor.prime_spark_edge_ready"
MODEL_LOADED = "binary_sensor.prime_spark_edge_default_model_loaded"


@pytest.fixture
def fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnect within a fraction of a second instead of the production backoff."""
    monkeypatch.setattr(coordinator_module, "EVENT_STREAM_RETRY_MINIMUM", timedelta(seconds=0.1))
    monkeypatch.setattr(coordinator_module, "EVENT_STREAM_RETRY_MAXIMUM", timedelta(seconds=0.4))


def _edit_settings(proc: ServerProcess, edit: Callable[[dict[str, Any]], None]) -> None:
    settings = yaml.safe_load(proc.config_path.read_text(encoding="utf-8"))
    edit(settings)
    proc.config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")


async def _setup(hass: HomeAssistant, proc: ServerProcess) -> MockConfigEntry:
    await hass.async_add_executor_job(proc.start)
    entry = entry_for(proc)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    await wait_for(lambda: entry.runtime_data.status_coordinator.stream_connected)
    return entry


async def test_push_latency(
    hass: HomeAssistant, server: ServerProcess, init_integration: MockConfigEntry
) -> None:
    """A generation starting on the node shows up in Home Assistant within a second."""
    assert hass.states.get(BUSY_SLOTS).state == "0"
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Write a long story about a robot."}],
        "max_tokens": 512,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {TOKENS['operator']}"}

    async def generate(session: aiohttp.ClientSession) -> None:
        url = server.url + "/v1/chat/completions"
        async with session.post(url, json=body, headers=headers) as response:
            assert response.status == 200
            async for _ in response.content:
                pass

    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        generation = asyncio.create_task(generate(session))
        await wait_for(lambda: hass.states.get(BUSY_SLOTS).state == "1", timeout=5)
        latency = time.monotonic() - started
        # Hanging up frees the slot on the node (once its engine notices); pushed as well.
        generation.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await generation
        await wait_for(lambda: hass.states.get(BUSY_SLOTS).state == "0", timeout=10)
    # From sending the request (so this includes the node's own admission work) to the state.
    assert latency < 1.0, f"the busy slot reached Home Assistant after {latency:.2f} s"
    # Pushed, not polled: nothing was scheduled to poll while the stream was up.
    assert init_integration.runtime_data.status_coordinator.update_interval is None


async def test_unavailable_and_back(
    hass: HomeAssistant,
    own_server: ServerProcess,
    fast_reconnect: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The node stops: entities go unavailable, logged once; it returns: they come back."""
    entry = await _setup(hass, own_server)
    coordinator = entry.runtime_data.status_coordinator
    assert hass.states.get(READY).state == STATE_ON

    caplog.set_level(logging.INFO)
    await hass.async_add_executor_job(crash, own_server)
    await wait_for(lambda: hass.states.get(READY).state == STATE_UNAVAILABLE, timeout=10)
    assert hass.states.get(BUSY_SLOTS).state == STATE_UNAVAILABLE
    assert not coordinator.stream_connected
    # Polling takes over while the stream is down, at the interval the options set.
    assert coordinator.update_interval == coordinator.fallback_interval
    hass.config_entries.async_update_entry(entry, options={CONF_SCAN_INTERVAL: 5})
    await hass.async_block_till_done()
    assert coordinator.update_interval == timedelta(seconds=5)

    # More failed polls do not log again.
    await coordinator.async_refresh()
    await coordinator.async_refresh()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "prime_spark" in r.name]
    assert len(errors) == 1, [
        (r.created, r.getMessage(), r.stack_info) for r in caplog.records if "prime_spark" in r.name
    ]

    # Same port, same data dir: the node is back.
    await hass.async_add_executor_job(own_server.start)
    await wait_for(lambda: hass.states.get(READY).state == STATE_ON, timeout=30)
    await wait_for(lambda: coordinator.stream_connected, timeout=10)
    assert coordinator.update_interval is None
    assert coordinator.stream_connects == 2
    assert sum("recovered" in r.getMessage() for r in caplog.records) == 1

    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_token_revoked_while_running(
    hass: HomeAssistant, own_server: ServerProcess, fast_reconnect: None
) -> None:
    """The node comes back with the token revoked: reauth starts, entities go unavailable."""
    entry = await _setup(hass, own_server)

    await hass.async_add_executor_job(crash, own_server)

    def rotate(settings: dict[str, Any]) -> None:
        for token in settings["security"]["api_tokens"]:
            if token["role"] == "operator":
                token["token"] = "rotated-operator-token-0123456789"

    _edit_settings(own_server, rotate)
    await hass.async_add_executor_job(own_server.start)

    def reauth_started() -> bool:
        flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
        return any(flow["context"]["source"] == SOURCE_REAUTH for flow in flows)

    await wait_for(reauth_started, timeout=30)
    assert hass.states.get(READY).state == STATE_UNAVAILABLE
    await hass.config_entries.async_unload(entry.entry_id)


async def test_other_node_takes_the_address(
    hass: HomeAssistant, own_server: ServerProcess, fast_reconnect: None
) -> None:
    """Another node answers after a restart: its pushed state never shows up as ours."""
    entry = await _setup(hass, own_server)
    coordinator = entry.runtime_data.status_coordinator

    await hass.async_add_executor_job(crash, own_server)
    _edit_settings(own_server, lambda settings: settings["server"].update(node_id="imposter"))
    await hass.async_add_executor_job(own_server.start)

    # The stream opens again (the node answers) but its status is refused, so no push.
    await wait_for(lambda: "imposter" in str(coordinator.last_exception), timeout=15)
    await asyncio.sleep(0.5)  # a few more reconnects: none of them switches to push
    assert not coordinator.stream_connected
    assert coordinator.stream_connects == 1
    assert hass.states.get(READY).state == STATE_UNAVAILABLE
    await hass.config_entries.async_unload(entry.entry_id)


async def test_event_with_unknown_model(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """A state event naming a model the last status did not list makes it read the status."""
    coordinator = init_integration.runtime_data.status_coordinator
    loaded = coordinator.data.loaded_models
    coordinator.async_handle_event(
        StateEvent(
            id=None,
            resync=True,
            state=NodeState(
                ready=True,
                state="ready",
                reason=None,
                loaded_models=("brand-new-model",),
                slots_busy=0,
                slots_total=2,
                queue_depth=0,
            ),
        )
    )
    assert coordinator.data.loaded_models == ()
    assert hass.states.get(MODEL_LOADED).state == STATE_OFF
    # The node pushes nothing new (its state did not change): only the status read restores it.
    await wait_for(lambda: coordinator.data.loaded_models == loaded, timeout=5)
    await hass.async_block_till_done()
    assert hass.states.get(MODEL_LOADED).state == STATE_ON
