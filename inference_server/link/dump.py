"""Parse ``wg show <interface> dump``: the machine-readable state of a WireGuard interface.

The first line describes the interface (private key, public key, listen port, fwmark), every
further line a peer (public key, preshared key, endpoint, allowed IPs, latest handshake as a
Unix time or 0, bytes received, bytes sent, persistent keepalive or ``off``), separated by tabs.
The private and preshared keys are dropped here and never reach a status or an event.
"""

from __future__ import annotations

from dataclasses import dataclass


class DumpParseError(ValueError):
    """``wg`` printed something that is not a dump (another version, or an error text)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerState:
    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int | None
    """Unix time of the last completed handshake; None when there never was one."""
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class InterfaceState:
    public_key: str
    listen_port: int | None
    fwmark: int | None
    peers: tuple[PeerState, ...]


def _none(value: str) -> str | None:
    return None if value in ("(none)", "") else value


def _int(value: str, what: str, line: int) -> int:
    try:
        return int(value)
    except ValueError as err:
        raise DumpParseError(f"line {line}: {what} '{value}' is not a number") from err


def parse_dump(text: str) -> InterfaceState:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DumpParseError("empty output")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise DumpParseError(f"line 1: expected 4 interface fields, got {len(head)}")
    peers: list[PeerState] = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 8:
            raise DumpParseError(f"line {number}: expected 8 peer fields, got {len(fields)}")
        public_key, _psk, endpoint, allowed, handshake, rx, tx, keepalive = fields
        handshake_at = _int(handshake, "latest handshake", number)
        peers.append(
            PeerState(
                public_key=public_key,
                endpoint=_none(endpoint),
                allowed_ips=tuple(a for a in allowed.split(",") if a and a != "(none)"),
                latest_handshake=handshake_at or None,
                rx_bytes=_int(rx, "rx bytes", number),
                tx_bytes=_int(tx, "tx bytes", number),
                persistent_keepalive=None
                if keepalive == "off"
                else _int(keepalive, "keepalive", number),
            )
        )
    port = _int(head[2], "listen port", 1)
    try:
        fwmark = None if head[3] == "off" else int(head[3], 0)  # printed as hex (0x...)
    except ValueError as err:
        raise DumpParseError(f"line 1: fwmark '{head[3]}' is not a number") from err
    return InterfaceState(
        public_key=head[1], listen_port=port or None, fwmark=fwmark, peers=tuple(peers)
    )
