"""Typed WireGuard client configuration, validated and rendered as a wg-quick file.

Validation happens here, once, with messages that name the field, so a bad key pasted into the
add-on's options is refused with "wireguard.peers[0].public_key: ..." at start instead of a
cryptic ``wg-quick`` failure. The rendered file always carries an MSS clamp: the tunnel's MTU
(1420 by default) is below the LAN's, and TCP through it stalls on paths that drop ICMP
"fragmentation needed" unless SYNs are rewritten to fit.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_MTU = 1420
MIN_MTU = 1280
MAX_MTU = 9000
DEFAULT_KEEPALIVE = 25
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class WireGuardConfigError(ValueError):
    """A field is invalid; ``field`` is its dotted path, ``str()`` the whole message."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.reason = message


def check_key(value: str, field_name: str) -> str:
    """A WireGuard key is 32 bytes in base64 (44 characters ending in '=')."""
    text = value.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise WireGuardConfigError(
            field_name, "expected a WireGuard key: 44 characters of base64 (from `wg genkey`)"
        )
    return text


def check_addresses(values: Sequence[str], field_name: str) -> tuple[str, ...]:
    """Interface addresses with prefix (``10.8.0.2/32``); a bare address gets /32 or /128."""
    out: list[str] = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_interface(value.strip())))
        except ValueError as err:
            raise WireGuardConfigError(
                field_name, f"'{value}' is not an IP address ({err})"
            ) from err
    if not out:
        raise WireGuardConfigError(field_name, "at least one address is needed")
    return tuple(out)


def check_networks(values: Sequence[str], field_name: str) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError as err:
            raise WireGuardConfigError(field_name, f"'{value}' is not a network ({err})") from err
    if not out:
        raise WireGuardConfigError(field_name, "at least one network is needed (0.0.0.0/0 for all)")
    return tuple(out)


def check_dns(values: Sequence[str], field_name: str) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_address(value.strip())))
        except ValueError as err:
            raise WireGuardConfigError(field_name, f"'{value}' is not an IP address") from err
    return tuple(out)


def check_endpoint(value: str, field_name: str) -> str:
    """``host:port`` or ``[v6]:port``; the host may be a name (resolved by wg at bring-up)."""
    text = value.strip()
    match = re.fullmatch(
        r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<port>\d+)|(?P<host>[^:\[\]]+):(?P<p>\d+)", text
    )
    if not match:
        raise WireGuardConfigError(field_name, "expected host:port (or [IPv6]:port)")
    port = int(match.group("port") or match.group("p"))
    if not 1 <= port <= 65535:
        raise WireGuardConfigError(field_name, f"port {port} is outside 1-65535")
    host = match.group("v6") or match.group("host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise WireGuardConfigError(
                field_name, f"'{host}' is neither an IP address nor a host name"
            ) from None
    return text


@dataclass(frozen=True, kw_only=True, slots=True)
class WireGuardPeer:
    public_key: str
    endpoint: str
    allowed_ips: tuple[str, ...]
    persistent_keepalive: int = DEFAULT_KEEPALIVE
    """Seconds between keepalives; keeps the NAT mapping open so the cloud can reach us. 0 = off."""
    preshared_key: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WireGuardConfig:
    private_key: str
    addresses: tuple[str, ...]
    peers: tuple[WireGuardPeer, ...]
    dns: tuple[str, ...] = ()
    mtu: int = DEFAULT_MTU
    listen_port: int | None = None
    mss_clamp: bool = True
    extra_post_up: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        check_key(self.private_key, "private_key")
        if not MIN_MTU <= self.mtu <= MAX_MTU:
            raise WireGuardConfigError(
                "mtu", f"expected {MIN_MTU}-{MAX_MTU} (1420 suits most links)"
            )
        if not self.peers:
            raise WireGuardConfigError("peers", "at least one peer (the cloud node) is needed")
        for index, peer in enumerate(self.peers):
            check_key(peer.public_key, f"peers[{index}].public_key")
            if peer.preshared_key is not None:
                check_key(peer.preshared_key, f"peers[{index}].preshared_key")
            if not 0 <= peer.persistent_keepalive <= 65535:
                raise WireGuardConfigError(
                    f"peers[{index}].persistent_keepalive", "expected 0-65535 seconds"
                )
        if self.listen_port is not None and not 1 <= self.listen_port <= 65535:
            raise WireGuardConfigError("listen_port", "expected 1-65535")


def _mss_rules(config: WireGuardConfig) -> tuple[list[str], list[str]]:
    """iptables rules that clamp TCP MSS to the path MTU on packets leaving through the tunnel.

    POSTROUTING in the mangle table sees both forwarded and locally generated packets, so the
    clamp covers the node's own connections to the cloud and anything routed through it.
    """
    rule = "POSTROUTING -o %i -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"
    tools = ["iptables"]
    if any(ipaddress.ip_interface(a).version == 6 for a in config.addresses):
        tools.append("ip6tables")
    up = [f"{tool} -t mangle -A {rule}" for tool in tools]
    down = [f"{tool} -t mangle -D {rule}" for tool in tools]
    return up, down


def render(config: WireGuardConfig) -> str:
    """The wg-quick file (``wg-quick up FILE``); holds the private key: write it mode 0600."""
    lines = [
        "# Written by Prime Spark from the add-on options; edits are overwritten.",
        "[Interface]",
    ]
    lines.append(f"PrivateKey = {config.private_key}")
    lines.append(f"Address = {', '.join(config.addresses)}")
    if config.listen_port is not None:
        lines.append(f"ListenPort = {config.listen_port}")
    if config.dns:
        lines.append(f"DNS = {', '.join(config.dns)}")
    lines.append(f"MTU = {config.mtu}")
    if config.mss_clamp:
        up, down = _mss_rules(config)
        lines.extend(f"PostUp = {rule}" for rule in up)
        lines.extend(f"PostDown = {rule}" for rule in down)
    lines.extend(f"PostUp = {command}" for command in config.extra_post_up)
    for peer in config.peers:
        lines.extend(["", "[Peer]", f"PublicKey = {peer.public_key}"])
        if peer.preshared_key:
            lines.append(f"PresharedKey = {peer.preshared_key}")
        lines.append(f"Endpoint = {peer.endpoint}")
        lines.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
        if peer.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return "\n".join(lines) + "\n"
