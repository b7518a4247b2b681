"""Watch the WireGuard interface and tell Home Assistant how the link to the cloud is doing.

``wg show <interface> dump`` is polled every ``link.poll_interval`` seconds; the result becomes
a status (connected, handshake age, traffic, endpoint per peer) served at ``/api/v1/link`` and in
``/api/v1/status``, and a ``link`` event whenever something other than the passing of time
changed. A peer counts as connected while its last handshake is younger than
``link.stale_after``: WireGuard re-handshakes every two minutes on a live link, so a handshake
older than three minutes means the peer stopped answering.

When ``link.manage`` is on the server also brings the interface up with ``wg-quick up`` at start
and down at stop; in the add-on an s6 service owns it instead and the server only watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiohttp import web

from inference_server.analytics.events import LinkEvent
from inference_server.config import LinkSettings
from inference_server.events import EventBus
from inference_server.link.dump import DumpParseError, InterfaceState, parse_dump

_LOGGER = logging.getLogger(__name__)

COMMAND_TIMEOUT = 10.0


class LinkCommandError(RuntimeError):
    """``wg`` or ``wg-quick`` failed; the message carries what it printed."""


async def run_command(*argv: str, limit: float = COMMAND_TIMEOUT) -> str:
    """Run a tool, return its stdout; a missing tool or non-zero exit raises LinkCommandError."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except FileNotFoundError as err:
        raise LinkCommandError(f"'{argv[0]}' is not installed (wireguard-tools)") from err
    try:
        async with asyncio.timeout(limit):
            out, errors = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise LinkCommandError(f"'{' '.join(argv)}' did not finish in {limit:.0f} s") from None
    if proc.returncode != 0:
        message = (errors or out).decode(errors="replace").strip().splitlines()
        raise LinkCommandError(message[-1] if message else f"exit status {proc.returncode}")
    return out.decode(errors="replace")


@dataclass(kw_only=True, slots=True)
class LinkMonitor:
    settings: LinkSettings
    bus: EventBus | None = None
    emit: Callable[[LinkEvent], object] | None = None
    """Where ``link`` analytics events go (the node's ``emit_event``); None sends none."""
    clock: Callable[[], float] = time.time
    state: InterfaceState | None = None
    error: str | None = None
    checked_at: float | None = None

    def _wg_quick(self) -> tuple[str, ...]:
        """``wg-quick`` behind the same prefix as ``wg`` (e.g. ``ip netns exec NS``)."""
        return (*self.settings.wg_command[:-1], "wg-quick")

    async def up(self) -> None:
        if self.settings.config_path is None:
            raise LinkCommandError("link.config_path is not set: nothing to bring up")
        await run_command(*self._wg_quick(), "up", str(self.settings.config_path), limit=60)

    async def down(self) -> None:
        if self.settings.config_path is not None:
            await run_command(*self._wg_quick(), "down", str(self.settings.config_path), limit=60)

    async def refresh(self) -> dict[str, Any]:
        """Read the interface now; a missing interface or tool is a status, not an exception."""
        try:
            text = await run_command(
                *self.settings.wg_command, "show", self.settings.interface, "dump"
            )
            self.state = parse_dump(text)
            self.error = None
        except (LinkCommandError, DumpParseError) as err:
            self.state = None
            self.error = str(err)
        self.checked_at = self.clock()
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The link as HA shows it; keys are stable even when the interface is missing."""
        if not self.settings.enabled:
            return {"enabled": False, "interface": self.settings.interface, "state": "disabled"}
        now = self.clock()
        peers = []
        if self.state is not None:
            for peer in self.state.peers:
                age = (
                    None if peer.latest_handshake is None else max(0.0, now - peer.latest_handshake)
                )
                peers.append(
                    {
                        "public_key": peer.public_key,
                        "endpoint": peer.endpoint,
                        "allowed_ips": list(peer.allowed_ips),
                        "latest_handshake": peer.latest_handshake,
                        "handshake_age_seconds": None if age is None else round(age, 1),
                        "connected": age is not None and age <= self.settings.stale_after,
                        "rx_bytes": peer.rx_bytes,
                        "tx_bytes": peer.tx_bytes,
                        "persistent_keepalive": peer.persistent_keepalive,
                    }
                )
        ages = [p["handshake_age_seconds"] for p in peers if p["handshake_age_seconds"] is not None]
        return {
            "enabled": True,
            "interface": self.settings.interface,
            "state": "down" if self.state is None else "up",
            "reason": self.error,
            "public_key": None if self.state is None else self.state.public_key,
            "listen_port": None if self.state is None else self.state.listen_port,
            "connected": any(p["connected"] for p in peers),
            "handshake_age_seconds": min(ages) if ages else None,
            "rx_bytes": sum(p["rx_bytes"] for p in peers),
            "tx_bytes": sum(p["tx_bytes"] for p in peers),
            "stale_after": self.settings.stale_after,
            "checked_at": self.checked_at,
            "peers": peers,
        }

    async def run(self) -> None:
        """Poll forever; publish a ``link`` event when anything but the clock changed."""
        last: dict[str, Any] | None = None
        while True:
            snapshot = await self.refresh()
            comparable = _without_clock(snapshot)
            if comparable != last:
                last = comparable
                if self.bus is not None:
                    self.bus.publish("link", snapshot)
                if self.emit is not None:
                    self.emit(link_event(snapshot))
            await asyncio.sleep(self.settings.poll_interval)


def link_event(snapshot: dict[str, Any]) -> LinkEvent:
    """The ``link`` analytics event of a status snapshot: sent when it changes (connected,
    peers, traffic), with the handshake age of that moment."""
    if not snapshot.get("enabled", True) or "connected" not in snapshot:
        status: Literal["up", "down", "unknown"] = "unknown"
    else:
        status = "up" if snapshot["connected"] else "down"
    age = snapshot.get("handshake_age_seconds")
    return LinkEvent(
        interface=str(snapshot.get("interface") or "wg0")[:64],
        status=status,
        handshake_age_seconds=None if age is None else max(0.0, float(age)),
        rx_bytes=max(0, int(snapshot.get("rx_bytes") or 0)),
        tx_bytes=max(0, int(snapshot.get("tx_bytes") or 0)),
    )


def _without_clock(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Handshake ages and check times grow every poll; leaving them out keeps events rare."""
    out = {k: v for k, v in snapshot.items() if k not in ("handshake_age_seconds", "checked_at")}
    out["peers"] = [
        {k: v for k, v in p.items() if k != "handshake_age_seconds"}
        for p in snapshot.get("peers", [])
    ]
    return out


LINK_KEY: Final = web.AppKey("link", LinkMonitor)


async def link_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Bring the link up (when managed), watch it while the server runs, take it down after."""
    monitor = app[LINK_KEY]
    if monitor.settings.manage:
        try:
            await monitor.up()
        except LinkCommandError as err:
            _LOGGER.error("WireGuard link %s did not come up: %s", monitor.settings.interface, err)
    task = asyncio.create_task(monitor.run(), name="prime-spark-link-monitor")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if monitor.settings.manage:
        try:
            await monitor.down()
        except LinkCommandError as err:
            _LOGGER.warning(
                "WireGuard link %s did not go down: %s", monitor.settings.interface, err
            )
