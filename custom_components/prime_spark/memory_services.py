"""Memory actions: ``prime_spark.memory_store``, ``memory_recall`` and ``memory_forget``.

Without a ``namespace`` an action works in the calling user's own one (``user:<HA user id>``),
or ``shared`` when no user called it (an automation); the node keeps namespaces apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv

from .compat import vol
from .const import ATTR_CONFIG_ENTRY_ID, DOMAIN
from .coordinator import PrimeSparkConfigEntry
from .helpers import translated_client_errors

SERVICE_MEMORY_STORE = "memory_store"
SERVICE_MEMORY_RECALL = "memory_recall"
SERVICE_MEMORY_FORGET = "memory_forget"

ATTR_NAMESPACE = "namespace"
ATTR_KEY = "key"
ATTR_VALUE = "value"
ATTR_TAGS = "tags"
ATTR_TTL = "ttl"
ATTR_QUERY = "query"
ATTR_TOP_K = "top_k"

NAMESPACE = vol.All(cv.string, vol.Match(r"^[A-Za-z0-9_:@-][A-Za-z0-9_.:@-]{0,127}$"))
KEY = vol.All(cv.string, vol.Length(min=1, max=512))

STORE_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        vol.Optional(ATTR_NAMESPACE): NAMESPACE,
        vol.Required(ATTR_KEY): KEY,
        vol.Required(ATTR_VALUE): object,
        vol.Optional(ATTR_TAGS, default=list): vol.All(cv.ensure_list, [cv.string]),
        vol.Optional(ATTR_TTL): cv.positive_time_period,
    }
)
RECALL_SCHEMA = vol.All(
    vol.Schema(
        {
            vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
            vol.Optional(ATTR_NAMESPACE): NAMESPACE,
            vol.Exclusive(ATTR_KEY, "what"): KEY,
            vol.Exclusive(ATTR_QUERY, "what"): vol.All(cv.string, vol.Length(min=1, max=2000)),
            vol.Optional(ATTR_TOP_K, default=3): vol.All(vol.Coerce(int), vol.Range(1, 50)),
        }
    ),
    cv.has_at_least_one_key(ATTR_KEY, ATTR_QUERY),
)
FORGET_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string,
        vol.Optional(ATTR_NAMESPACE): NAMESPACE,
        vol.Required(ATTR_KEY): KEY,
    }
)

EntryLookup = Callable[[HomeAssistant, str | None], PrimeSparkConfigEntry]


def namespace_for(call: ServiceCall) -> str:
    """The namespace named, else the calling user's, else ``shared``."""
    if namespace := call.data.get(ATTR_NAMESPACE):
        return str(namespace)
    if call.context.user_id:
        return f"user:{call.context.user_id}"
    return "shared"


def _item(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: data.get(k) for k in ("namespace", "key", "value", "tags", "tier", "updated_at")}
    if "score" in data:
        out["score"] = data["score"]
    return out


@callback
def async_setup_memory_services(hass: HomeAssistant, loaded_entry: EntryLookup) -> None:
    """Register the memory actions; ``loaded_entry`` picks the node like ``generate`` does."""

    async def store(call: ServiceCall) -> ServiceResponse:
        entry = loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID))
        ttl = call.data.get(ATTR_TTL)
        with translated_client_errors(call.hass, entry):
            item = await entry.runtime_data.client.memory_store(
                namespace_for(call),
                call.data[ATTR_KEY],
                call.data[ATTR_VALUE],
                tags=call.data[ATTR_TAGS],
                ttl_seconds=None if ttl is None else ttl.total_seconds(),
            )
        return {"item": _item(item)}

    async def recall(call: ServiceCall) -> ServiceResponse:
        entry = loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID))
        client = entry.runtime_data.client
        namespace = namespace_for(call)
        with translated_client_errors(call.hass, entry):
            if ATTR_KEY in call.data:
                found = await client.memory_get(namespace, call.data[ATTR_KEY])
                items = [] if found is None else [found]
            else:
                items = await client.memory_search(
                    namespace, call.data[ATTR_QUERY], top_k=call.data[ATTR_TOP_K]
                )
        return {"namespace": namespace, "items": [_item(i) for i in items]}

    async def forget(call: ServiceCall) -> ServiceResponse:
        entry = loaded_entry(call.hass, call.data.get(ATTR_CONFIG_ENTRY_ID))
        namespace = namespace_for(call)
        with translated_client_errors(call.hass, entry):
            deleted = await entry.runtime_data.client.memory_forget(namespace, call.data[ATTR_KEY])
        if not deleted:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="memory_not_found",
                translation_placeholders={"key": call.data[ATTR_KEY], "namespace": namespace},
            )
        return {"deleted": True, "namespace": namespace}

    hass.services.async_register(
        DOMAIN, SERVICE_MEMORY_STORE, store, schema=STORE_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )  # fmt: skip
    hass.services.async_register(
        DOMAIN, SERVICE_MEMORY_RECALL, recall, schema=RECALL_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )  # fmt: skip
    hass.services.async_register(
        DOMAIN, SERVICE_MEMORY_FORGET, forget, schema=FORGET_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )  # fmt: skip
