"""Config flow, options flow, discovery, reauth and reconfigure against a real server."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import pytest
from homeassistant.config_entries import SOURCE_HASSIO, SOURCE_USER, SOURCE_ZEROCONF
from homeassistant.const import CONF_HOST, CONF_PORT, CONF_TOKEN
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.prime_spark.const import CONF_SCAN_INTERVAL, DOMAIN
from tests.server.server_process import TOKENS, ServerProcess, free_port

from .helpers import NODE_ID, TITLE
from .test_client import raw_server, reply

OPERATOR = TOKENS["operator"]


def zeroconf_info(port: int, node_id: str | None = NODE_ID) -> ZeroconfServiceInfo:
    properties = {"version": "0.1.0", "api": "/api/v1", "api_version": "1"}
    if node_id is not None:
        properties["node_id"] = node_id
    return ZeroconfServiceInfo(
        ip_address=ip_address("127.0.0.1"),
        ip_addresses=[ip_address("127.0.0.1")],
        hostname="pi.local.",
        name=f"Prime Spark {node_id}._prime-spark._tcp.local.",
        port=port,
        properties=properties,
        type="_prime-spark._tcp.local.",
    )


def hassio_info(config: dict[str, Any]) -> HassioServiceInfo:
    return HassioServiceInfo(
        config=config, name="Prime Spark", slug="a0d7b954_prime_spark", uuid="1234"
    )


async def test_user_flow(hass: HomeAssistant, server: ServerProcess) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {CONF_HOST: " 127.0.0.1 ", CONF_PORT: server.port, CONF_TOKEN: OPERATOR},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == TITLE
    assert result["data"] == {CONF_HOST: "127.0.0.1", CONF_PORT: server.port, CONF_TOKEN: OPERATOR}
    assert result["result"].unique_id == NODE_ID


@pytest.mark.parametrize(
    ("token", "closed_port", "error"),
    [
        ("wrong-token", False, {CONF_TOKEN: "invalid_auth"}),
        (OPERATOR, True, {"base": "cannot_connect"}),
    ],
)
async def test_user_flow_errors(
    hass: HomeAssistant,
    server: ServerProcess,
    token: str,
    closed_port: bool,
    error: dict[str, str],
) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    port = free_port() if closed_port else server.port
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: "127.0.0.1", CONF_PORT: port, CONF_TOKEN: token}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == error

    # The user corrects the input and the flow recovers.
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {CONF_HOST: "127.0.0.1", CONF_PORT: server.port, CONF_TOKEN: OPERATOR},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_user_flow_unknown_error(hass: HomeAssistant) -> None:
    """Something that is no Prime Spark server at all answers."""
    async with raw_server(reply("200 OK", "text/html", b"<html></html>")) as port:
        result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_HOST: "127.0.0.1", CONF_PORT: port, CONF_TOKEN: OPERATOR}
        )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "unknown"}


async def test_user_flow_already_configured(
    hass: HomeAssistant, server: ServerProcess, mock_config_entry: MockConfigEntry
) -> None:
    mock_config_entry.add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {CONF_HOST: "127.0.0.1", CONF_PORT: server.port, CONF_TOKEN: OPERATOR},
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_zeroconf_flow(hass: HomeAssistant, server: ServerProcess) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(server.port)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "zeroconf_confirm"
    assert result["description_placeholders"] == {
        "name": NODE_ID,
        "host": "127.0.0.1",
        "port": str(server.port),
    }
    flows = hass.config_entries.flow.async_progress()
    assert flows[0]["context"]["title_placeholders"] == {"name": NODE_ID}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_TOKEN: "wrong-token"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_TOKEN: "invalid_auth"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_TOKEN: OPERATOR}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == TITLE
    assert result["data"] == {CONF_HOST: "127.0.0.1", CONF_PORT: server.port, CONF_TOKEN: OPERATOR}
    assert result["result"].unique_id == NODE_ID


async def test_zeroconf_updates_moved_node(hass: HomeAssistant, server: ServerProcess) -> None:
    """A configured node seen at a new address gets its entry updated (discovery-update-info)."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=TITLE,
        unique_id=NODE_ID,
        data={CONF_HOST: "192.0.2.10", CONF_PORT: 1234, CONF_TOKEN: OPERATOR},
    )
    entry.add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(server.port)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data == {CONF_HOST: "127.0.0.1", CONF_PORT: server.port, CONF_TOKEN: OPERATOR}
    await hass.async_block_till_done()
    await hass.config_entries.async_unload(entry.entry_id)


async def test_zeroconf_without_node_id(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=zeroconf_info(8780, None)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "invalid_discovery_info"


async def test_hassio_flow_with_token(hass: HomeAssistant, server: ServerProcess) -> None:
    """The add-on posts its token: one click to confirm."""
    config = {"host": "127.0.0.1", "port": server.port, "token": OPERATOR, "node_id": NODE_ID}
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info(config)
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "hassio_confirm"
    assert result["data_schema"] is not None
    assert list(result["data_schema"].schema) == []

    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_HOST: "127.0.0.1", CONF_PORT: server.port, CONF_TOKEN: OPERATOR}
    assert result["result"].unique_id == NODE_ID


async def test_hassio_flow_without_token(hass: HomeAssistant, server: ServerProcess) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_HASSIO},
        data=hassio_info({"host": "127.0.0.1", "port": server.port}),
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "hassio_confirm"
    assert CONF_TOKEN in result["data_schema"].schema

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_TOKEN: OPERATOR}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["result"].unique_id == NODE_ID


async def test_hassio_flow_refused_token(hass: HomeAssistant, server: ServerProcess) -> None:
    """An add-on token the server refuses: the user is asked for one."""
    config = {"host": "127.0.0.1", "port": server.port, "token": "stale"}
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info(config)
    )
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_TOKEN: "invalid_auth"}
    assert CONF_TOKEN in result["data_schema"].schema

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_TOKEN: OPERATOR}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_TOKEN] == OPERATOR


async def test_hassio_flow_updates_existing(hass: HomeAssistant, server: ServerProcess) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=TITLE,
        unique_id=NODE_ID,
        data={CONF_HOST: "old-host", CONF_PORT: 1, CONF_TOKEN: "old"},
    )
    entry.add_to_hass(hass)
    config = {"host": "127.0.0.1", "port": server.port, "token": OPERATOR, "node_id": NODE_ID}
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info(config)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data == {CONF_HOST: "127.0.0.1", CONF_PORT: server.port, CONF_TOKEN: OPERATOR}
    await hass.async_block_till_done()
    await hass.config_entries.async_unload(entry.entry_id)


async def test_hassio_flow_known_address(
    hass: HomeAssistant, server: ServerProcess, mock_config_entry: MockConfigEntry
) -> None:
    """Without a node id, an entry with the same address is the same node."""
    mock_config_entry.add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_HASSIO},
        data=hassio_info({"host": "127.0.0.1", "port": server.port}),
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


@pytest.mark.parametrize("config", [{"host": "127.0.0.1"}, {"host": "x", "port": "http"}])
async def test_hassio_flow_invalid(hass: HomeAssistant, config: dict[str, Any]) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=hassio_info(config)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "invalid_discovery_info"


async def test_reauth_flow(
    hass: HomeAssistant, server: ServerProcess, mock_config_entry: MockConfigEntry
) -> None:
    mock_config_entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        mock_config_entry, data={**mock_config_entry.data, CONF_TOKEN: "revoked"}
    )
    result = await mock_config_entry.start_reauth_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reauth_confirm"
    assert result["description_placeholders"] == {"name": TITLE}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_TOKEN: "still-wrong"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_TOKEN: "invalid_auth"}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_TOKEN: OPERATOR}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert mock_config_entry.data[CONF_TOKEN] == OPERATOR
    await hass.async_block_till_done()
    await hass.config_entries.async_unload(mock_config_entry.entry_id)


async def test_reauth_other_node(hass: HomeAssistant, other_node: ServerProcess) -> None:
    """The address now answers as another node: refuse to attach the entry to it."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=TITLE,
        unique_id=NODE_ID,
        data={CONF_HOST: "127.0.0.1", CONF_PORT: other_node.port, CONF_TOKEN: "revoked"},
    )
    entry.add_to_hass(hass)
    result = await entry.start_reauth_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_TOKEN: OPERATOR}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert entry.data[CONF_TOKEN] == "revoked"


async def test_reconfigure_flow(
    hass: HomeAssistant, server: ServerProcess, mock_config_entry: MockConfigEntry
) -> None:
    mock_config_entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        mock_config_entry, data={**mock_config_entry.data, CONF_PORT: 1}
    )
    result = await mock_config_entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"

    # A wrong address first: the form comes back with the error.
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: "127.0.0.1", CONF_PORT: free_port()}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}

    # No token given: the current one is kept.
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: "127.0.0.1", CONF_PORT: server.port}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert mock_config_entry.data == {
        CONF_HOST: "127.0.0.1",
        CONF_PORT: server.port,
        CONF_TOKEN: OPERATOR,
    }
    await hass.async_block_till_done()
    await hass.config_entries.async_unload(mock_config_entry.entry_id)


async def test_reconfigure_new_token(
    hass: HomeAssistant, server: ServerProcess, mock_config_entry: MockConfigEntry
) -> None:
    mock_config_entry.add_to_hass(hass)
    result = await mock_config_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {CONF_HOST: "127.0.0.1", CONF_PORT: server.port, CONF_TOKEN: TOKENS["admin"]},
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert mock_config_entry.data[CONF_TOKEN] == TOKENS["admin"]
    await hass.async_block_till_done()
    await hass.config_entries.async_unload(mock_config_entry.entry_id)


async def test_reconfigure_other_node(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry, other_node: ServerProcess
) -> None:
    mock_config_entry.add_to_hass(hass)
    result = await mock_config_entry.start_reconfigure_flow(hass)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_HOST: "127.0.0.1", CONF_PORT: other_node.port}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "unique_id_mismatch"
    assert mock_config_entry.data[CONF_PORT] != other_node.port


async def test_options_flow(hass: HomeAssistant, init_integration: MockConfigEntry) -> None:
    coordinator = init_integration.runtime_data.status_coordinator
    result = await hass.config_entries.options.async_init(init_integration.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"

    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_SCAN_INTERVAL: 90}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert init_integration.options == {CONF_SCAN_INTERVAL: 90}
    await hass.async_block_till_done()
    # Applied at once, without a reload: the fallback poll interval changed.
    assert coordinator is init_integration.runtime_data.status_coordinator
    assert coordinator.fallback_interval.total_seconds() == 90
