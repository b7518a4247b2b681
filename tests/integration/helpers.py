"""Helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from homeassistant.const import CONF_HOST, CONF_PORT, CONF_TOKEN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.const import DOMAIN
from tests.server.server_process import TOKENS, ServerProcess

from .const import NODE_ID, TITLE

VOLATILE = "<volatile>"


def entry_for(proc: ServerProcess, *, token: str = TOKENS["operator"]) -> MockConfigEntry:
    """A config entry for ``proc`` (the node id is fixed in the test server settings)."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=TITLE,
        unique_id=NODE_ID,
        data={CONF_HOST: "127.0.0.1", CONF_PORT: proc.port, CONF_TOKEN: token},
    )


def crash(proc: ServerProcess) -> None:
    """Kill the node outright (blocking: run it in an executor).

    Also sidesteps the server's graceful stop, which waits for open event streams to end: with
    Home Assistant connected, a SIGTERM takes until the 20 s kill in ``ServerProcess.stop``.
    """
    assert proc.process is not None
    proc.process.kill()
    proc.process.wait()


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0, interval: float = 0.02
) -> float:
    """Wait until ``predicate`` holds; returns the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def entity_snapshot(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    entry: MockConfigEntry,
    domain: str,
    *,
    volatile: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Registry and state of the entry's entities of one domain, as plain data.

    Plain dicts keep the snapshots identical across Home Assistant versions (2025.4 and the
    latest), whose registry and state objects serialize differently. Entities whose value
    depends on what ran before (rates, totals, timestamps) are listed in ``volatile``: their
    state is replaced by a marker unless it is unavailable.
    """
    result: dict[str, Any] = {}
    for entity in sorted(
        er.async_entries_for_config_entry(entity_registry, entry.entry_id),
        key=lambda e: e.entity_id,
    ):
        if entity.domain != domain:
            continue
        state = hass.states.get(entity.entity_id)
        value = None if state is None else state.state
        if entity.translation_key in volatile and value != "unavailable":
            value = VOLATILE
        result[entity.entity_id] = {
            "unique_id": entity.unique_id,
            "translation_key": entity.translation_key,
            "device_class": entity.device_class or entity.original_device_class,
            "entity_category": None
            if entity.entity_category is None
            else str(entity.entity_category),
            "disabled_by": None if entity.disabled_by is None else str(entity.disabled_by),
            "unit": entity.unit_of_measurement,
            "capabilities": entity.capabilities,
            "state": value,
            "attributes": None if state is None else dict(state.attributes),
        }
    # Enums become their values: their reprs differ between Home Assistant versions.
    return cast(dict[str, Any], json.loads(json.dumps(result)))
