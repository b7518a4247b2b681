"""zeroconf advertisement of ``_prime-spark._tcp.local.`` so Home Assistant finds the node itself.

The TXT record carries what the integration needs to pick a unique id and an API path before it
has a token: the node id, the server version and the API base path.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

import ifaddr
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from inference_server import __version__

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_prime-spark._tcp.local."
API_BASE = "/api/v1"
API_VERSION = "1"


def advertised_addresses(host: str) -> list[str]:
    """The bound address, or every non-loopback IPv4 address when bound to all interfaces."""
    if host not in ("0.0.0.0", "", "::"):  # noqa: S104  # nosec B104: comparing, not binding
        return [host]
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                found.append(ip.ip)
    return found or ["127.0.0.1"]


class Advertiser:
    """Registers the service while the server runs; a failure is logged, never fatal."""

    def __init__(
        self, *, node_id: str, host: str, port: int, instance_name: str | None = None
    ) -> None:
        self._addresses = advertised_addresses(host)
        name = instance_name or f"Prime Spark {node_id}"
        self.info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            port=port,
            addresses=[socket.inet_pton(_family(a), a) for a in self._addresses],
            properties={
                "node_id": node_id,
                "version": __version__,
                "api": API_BASE,
                "api_version": API_VERSION,
            },
            server=f"{socket.gethostname().split('.')[0]}.local.",
        )
        self._zeroconf: AsyncZeroconf | None = None

    async def start(self) -> None:
        try:
            self._zeroconf = AsyncZeroconf(
                interfaces=list(self._addresses), ip_version=IPVersion.V4Only
            )
            await self._zeroconf.async_register_service(self.info, allow_name_change=True)
        except (OSError, ValueError) as err:
            _LOGGER.warning("zeroconf advertisement failed, discovery is off: %s", err)
            await self.stop()
            return
        _LOGGER.info("Advertising %s on %s", self.info.name, ", ".join(self._addresses))

    async def stop(self) -> None:
        if self._zeroconf is None:
            return
        try:
            await self._zeroconf.async_unregister_all_services()
        finally:
            await self._zeroconf.async_close()
            self._zeroconf = None


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET
