"""The real server advertises itself over mDNS (on loopback here) and can be told not to."""

from __future__ import annotations

import asyncio

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

from inference_server.discovery import SERVICE_TYPE
from tests.server.api.conftest import MakeServer


async def _browse(seconds: float) -> dict[str, dict[bytes, bytes | None]]:
    found: dict[str, dict[bytes, bytes | None]] = {}
    zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    names: list[str] = []

    def on_change(zeroconf: object, service_type: str, name: str, state_change: object) -> None:
        names.append(name)

    browser = AsyncServiceBrowser(zeroconf.zeroconf, SERVICE_TYPE, handlers=[on_change])
    await asyncio.sleep(seconds)
    for name in set(names):
        info = await zeroconf.async_get_service_info(SERVICE_TYPE, name, 3000)
        if info is not None:
            found[name] = dict(info.properties) | {b"port": str(info.port).encode()}
    await browser.async_cancel()
    await zeroconf.async_close()
    return found


async def test_advertises_node(make_server: MakeServer) -> None:
    proc = make_server(
        {"discovery": {"enabled": True, "instance_name": "Test Node"}}, name="zeroconf"
    )
    await asyncio.to_thread(proc.start)
    try:
        found = await _browse(2.0)
    finally:
        proc.stop()
    ours = found[f"Test Node.{SERVICE_TYPE}"]
    node_id = (proc.data_dir / "node_id").read_text().strip()
    assert ours[b"node_id"] == node_id.encode()
    assert ours[b"api"] == b"/api/v1"
    assert ours[b"port"] == str(proc.port).encode()


async def test_discovery_can_be_off(make_server: MakeServer) -> None:
    proc = make_server({"discovery": {"instance_name": "Silent Node"}}, name="silent")
    await asyncio.to_thread(proc.start)
    try:
        found = await _browse(1.5)
    finally:
        proc.stop()
    assert f"Silent Node.{SERVICE_TYPE}" not in found
