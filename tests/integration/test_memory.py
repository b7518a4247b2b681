"""Memory in Home Assistant: actions, tier devices, the cache button and sensor, the repair issue.

Against the real server (in-process hot tier written through to its directory warm tier, the
real embedding model for recall by meaning)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers import llm
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.compat import vol
from custom_components.prime_spark.const import DOMAIN
from custom_components.prime_spark.memory_llm import MEMORY_API_ID
from tests.server.server_process import ServerProcess

from .conftest import real_sockets
from .helpers import entry_for, wait_for


@pytest.fixture(scope="module")
def memory_server(
    tmp_path_factory: pytest.TempPathFactory, server_settings: dict[str, Any]
) -> Iterator[ServerProcess]:
    """A node of this module's own: memory with the semantic cache and the embedding model."""
    with real_sockets():
        proc = ServerProcess(tmp_path_factory.mktemp("memory"), {**server_settings, "memory": {}},
                             name="memory")  # fmt: skip
        proc.start()
        # The embedding model loads after /health says ready: wait for it here, not in a test.
        status, _, _ = proc.request("POST", "/v1/embeddings",
                                    {"model": "all-minilm-l6-v2", "input": "warm up"})  # fmt: skip
        assert status == 200
    yield proc
    proc.stop()


@pytest.fixture
async def init_integration(
    hass: HomeAssistant, memory_server: ServerProcess
) -> AsyncIterator[MockConfigEntry]:
    entry = entry_for(memory_server)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    yield entry
    await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


async def _call(hass: HomeAssistant, service: str, user: str | None = "alice-id",
                **data: Any) -> dict[str, Any]:  # fmt: skip
    response = await hass.services.async_call(
        DOMAIN, service, data, blocking=True, return_response=True,
        context=Context(user_id=user),
    )  # fmt: skip
    assert isinstance(response, dict)
    return response


async def test_store_recall_forget_in_the_callers_namespace(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    stored = await _call(hass, "memory_store", key="garage_code",
                         value="The garage code is 4411", tags=["codes"])  # fmt: skip
    assert stored["item"]["namespace"] == "user:alice-id"
    assert stored["item"]["tier"] == "hot"
    await _call(hass, "memory_store", key="wifi", value="The guest wifi password is sunflower")
    await _call(hass, "memory_store", user="bob-id", key="garage_code", value="Bob's is 1234")

    by_key = await _call(hass, "memory_recall", key="garage_code")
    assert [i["value"] for i in by_key["items"]] == ["The garage code is 4411"]
    by_meaning = await _call(hass, "memory_recall", query="what's the garage code?", top_k=1)
    assert by_meaning["items"][0]["key"] == "garage_code"
    assert by_meaning["items"][0]["value"] == "The garage code is 4411"  # never Bob's
    assert 0 < by_meaning["items"][0]["score"] <= 1
    # An automation (no user) works in the shared namespace.
    assert (await _call(hass, "memory_recall", user=None, key="garage_code"))["items"] == []

    forgotten = await _call(hass, "memory_forget", key="garage_code")
    assert forgotten == {"deleted": True, "namespace": "user:alice-id"}
    assert (await _call(hass, "memory_recall", key="garage_code"))["items"] == []
    with pytest.raises(ServiceValidationError) as err:
        await _call(hass, "memory_forget", key="garage_code")
    assert err.value.translation_key == "memory_not_found"
    bob = await _call(hass, "memory_recall", user="bob-id", key="garage_code")
    assert bob["items"][0]["value"] == "Bob's is 1234"


@pytest.mark.parametrize(
    ("service", "data"),
    [
        ("memory_store", {"value": "x"}),
        ("memory_store", {"key": "k"}),
        ("memory_store", {"key": "k", "value": "x", "namespace": "../etc"}),
        ("memory_recall", {}),
        ("memory_recall", {"key": "k", "query": "q"}),
        ("memory_recall", {"query": "q", "top_k": 0}),
        ("memory_forget", {}),
    ],
)
async def test_memory_actions_invalid_input(
    hass: HomeAssistant, init_integration: MockConfigEntry, service: str, data: dict[str, Any]
) -> None:
    with pytest.raises(vol.Invalid):
        await _call(hass, service, **data)


async def test_tier_devices_cache_sensor_and_flush_button(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
    memory_server: ServerProcess,
) -> None:
    devices = {d.name for d in dr.async_entries_for_config_entry(device_registry,
                                                                 init_integration.entry_id)}  # fmt: skip
    assert {"Prime Spark memory hot", "Prime Spark memory warm"} <= {
        name.replace(init_integration.title, "Prime Spark") for name in devices if name
    }
    entries = er.async_entries_for_config_entry(entity_registry, init_integration.entry_id)
    ids = {e.unique_id: e.entity_id for e in entries}
    node_id = init_integration.unique_id
    warm_items = ids[f"{node_id}_memory_warm_items"]
    assert f"{node_id}_memory_cold_items" not in ids  # no cold tier configured
    hit_rate = ids[f"{node_id}_response_cache_hit_rate"]

    await _call(hass, "memory_store", key="sensor_probe", value="v")
    coordinator = init_integration.runtime_data.memory_coordinator
    assert coordinator is not None
    await coordinator.async_refresh()
    await hass.async_block_till_done()
    assert int(hass.states.get(warm_items).state) >= 1

    # Two identical deterministic requests: a miss, then a hit.
    body = {"messages": [{"role": "user", "content": "say hi"}], "temperature": 0, "max_tokens": 2}
    for _ in range(2):
        status, headers, _ = await hass.async_add_executor_job(
            lambda: memory_server.request("POST", "/v1/chat/completions", body)
        )
        assert status == 200
    assert headers["x-prime-spark-cache"] == "hit"
    await coordinator.async_refresh()
    await hass.async_block_till_done()
    assert 0 < float(hass.states.get(hit_rate).state) <= 100

    button = ids[f"{node_id}_flush_response_cache"]
    await hass.services.async_call("button", "press", {"entity_id": button}, blocking=True)
    _, _, stats = await hass.async_add_executor_job(
        lambda: memory_server.request("GET", "/api/v1/memory/cache")
    )
    assert stats["entries"] == 0


async def test_warm_tier_missing_raises_a_repair_issue(
    hass: HomeAssistant, tmp_path: Path, server_settings: dict[str, Any]
) -> None:
    share = tmp_path / "nas-share"
    proc = ServerProcess(tmp_path, {**server_settings, "memory": {"warm_path": str(share)}},
                         name="nonas")  # fmt: skip
    await hass.async_add_executor_job(proc.start)
    try:
        entry = entry_for(proc)
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        issue_id = f"warm_tier_{entry.entry_id}"
        issue = ir.async_get(hass).async_get_issue(DOMAIN, issue_id)
        assert issue is not None
        assert issue.translation_key == "warm_tier_missing"
        assert issue.translation_placeholders == {"name": entry.title, "path": str(share)}
        # The share gets mounted: the node uses it and the issue goes away.
        share.mkdir()
        coordinator = entry.runtime_data.memory_coordinator
        assert coordinator is not None

        async def healed() -> bool:
            await coordinator.async_refresh()
            return ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None

        await wait_for(healed, timeout=60, interval=0.5)
        await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
    finally:
        await hass.async_add_executor_job(proc.stop)


def _llm_context(user_id: str | None) -> llm.LLMContext:
    """An LLMContext for this Home Assistant version (its fields changed across releases)."""
    values = {"platform": DOMAIN, "context": Context(user_id=user_id), "user_prompt": None,
              "language": "en", "assistant": "conversation", "device_id": None}  # fmt: skip
    names = {f.name for f in dataclasses.fields(llm.LLMContext)}
    return llm.LLMContext(**{k: v for k, v in values.items() if k in names})


async def _tool(api: llm.APIInstance, name: str, **args: Any) -> Any:
    """A tool's result data (newer Home Assistant wraps it in a ToolResult)."""
    result = await api.async_call_tool(llm.ToolInput(tool_name=name, tool_args=args))
    return getattr(result, "data", result)


async def test_assist_remembers_and_recalls_per_user(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    alice = await llm.async_get_api(hass, MEMORY_API_ID, _llm_context("alice-llm"))
    assert {tool.name for tool in alice.tools} == {"remember", "recall"}
    stored = await _tool(alice, "remember", about="garage code", fact="The garage code is 4411")
    assert stored == {"success": True, "remembered": "The garage code is 4411",
                      "key": "garage_code"}  # fmt: skip
    await _tool(alice, "remember", about="dentist", fact="Dentist on Friday at 3 pm")
    recalled = await _tool(alice, "recall", question="what's the garage code?")
    assert recalled["memories"][0] == {"about": "garage code", "fact": "The garage code is 4411"}
    bob = await llm.async_get_api(hass, MEMORY_API_ID, _llm_context("bob-llm"))
    assert await _tool(bob, "recall", question="what's the garage code?") == {"memories": []}
