"""The WireGuard link: rendering, ``wg show dump`` parsing, and a real tunnel between namespaces.

The tunnel test brings up the edge side from the file ``wgquick.render`` wrote, through the
monitor's own ``wg-quick up``, then checks what the monitor reads back (handshake, traffic,
endpoint), that TCP flows through the tunnel, and that the MSS clamp rule is in place. It says
in its output whether the kernel module or wireguard-go carried the tunnel.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_server.config import LinkSettings
from inference_server.events import EventBus
from inference_server.link.dump import DumpParseError, parse_dump
from inference_server.link.monitor import LinkMonitor
from inference_server.link.wgquick import (
    WireGuardConfig,
    WireGuardConfigError,
    WireGuardPeer,
    render,
)
from tests.server.wireguard_lab import WireGuardLab, sh

FIXTURES = Path(__file__).parent / "fixtures"
EDGE_KEY = "KAbzV/9jDOF4hAo4RxFea/GZYz9taBMAWA+nWSE4gFM="
EDGE_PUB = "PQrH37fAdjiYcpOK3X+HOnCQz6Sa0RoKIXLAQBaJMHM="
VPS_KEY = "KMtL/ZjynHJGWWEwoWZ7/YA3ypbAKXAShWLpTsiYrV8="
VPS_PUB = "M6pSpiBm2fBgOx7OW2D9Xy0k7R3/1y+hSoKxxrH2kxM="


def edge_config(endpoint: str = "192.0.2.2:51820", keepalive: int = 25) -> WireGuardConfig:
    return WireGuardConfig(
        private_key=EDGE_KEY,
        addresses=("10.77.0.2/32",),
        peers=(
            WireGuardPeer(
                public_key=VPS_PUB,
                endpoint=endpoint,
                allowed_ips=("10.77.0.0/24",),
                persistent_keepalive=keepalive,
            ),
        ),
    )


def test_render_defaults() -> None:
    text = render(edge_config())
    assert text.splitlines()[1:] == [
        "[Interface]",
        f"PrivateKey = {EDGE_KEY}",
        "Address = 10.77.0.2/32",
        "MTU = 1420",
        "PostUp = iptables -t mangle -A POSTROUTING -o %i -p tcp --tcp-flags SYN,RST SYN "
        "-j TCPMSS --clamp-mss-to-pmtu",
        "PostDown = iptables -t mangle -D POSTROUTING -o %i -p tcp --tcp-flags SYN,RST SYN "
        "-j TCPMSS --clamp-mss-to-pmtu",
        "",
        "[Peer]",
        f"PublicKey = {VPS_PUB}",
        "Endpoint = 192.0.2.2:51820",
        "AllowedIPs = 10.77.0.0/24",
        "PersistentKeepalive = 25",
    ]


def test_render_ipv6_clamps_both_families_and_keepalive_zero_is_omitted() -> None:
    config = WireGuardConfig(
        private_key=EDGE_KEY,
        addresses=("10.77.0.2/32", "fd77::2/128"),
        dns=("10.77.0.1",),
        mtu=1380,
        peers=(
            WireGuardPeer(
                public_key=VPS_PUB,
                endpoint="[2001:db8::1]:51820",
                allowed_ips=("::/0",),
                persistent_keepalive=0,
            ),
        ),
    )
    text = render(config)
    assert "DNS = 10.77.0.1" in text and "MTU = 1380" in text
    assert "PostUp = ip6tables -t mangle -A POSTROUTING" in text
    assert "PersistentKeepalive" not in text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"private_key": "short"}, "private_key"),
        ({"mtu": 9001}, "mtu"),
        ({"peers": ()}, "peers"),
    ],
)
def test_config_refuses(change: dict[str, object], field: str) -> None:
    base = {"private_key": EDGE_KEY, "addresses": ("10.77.0.2/32",), "peers": edge_config().peers}
    with pytest.raises(WireGuardConfigError) as caught:
        WireGuardConfig(**{**base, **change})  # type: ignore[arg-type]
    assert caught.value.field == field


def test_parse_real_dump() -> None:
    """Output of `wg show <if> dump` captured from the tunnel test (wireguard-tools 1.0.2021)."""
    state = parse_dump((FIXTURES / "wg_show_dump.txt").read_text())
    assert state.public_key == EDGE_PUB
    assert state.listen_port is not None
    assert state.fwmark is None
    [peer] = state.peers
    assert peer.public_key == VPS_PUB
    assert peer.endpoint == "192.0.2.2:51820"
    assert peer.allowed_ips == ("10.77.0.0/24",)
    assert peer.latest_handshake is not None and peer.latest_handshake > 1_700_000_000
    assert peer.rx_bytes > 0 and peer.tx_bytes > 0
    assert peer.persistent_keepalive == 1
    assert EDGE_KEY not in repr(state)  # the private key is dropped


def test_parse_fresh_interface_and_fwmark() -> None:
    state = parse_dump(
        f"{EDGE_KEY}\t{EDGE_PUB}\t51820\t0xca6c\n{VPS_PUB}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
    )
    assert state.fwmark == 0xCA6C
    [peer] = state.peers
    assert peer.endpoint is None and peer.allowed_ips == () and peer.latest_handshake is None
    assert peer.persistent_keepalive is None


@pytest.mark.parametrize(
    "text",
    ["", "Unable to access interface: No such device", "a\tb\tc\td\nx\ty", "a\tb\tport\toff"],
)
def test_parse_refuses_what_is_not_a_dump(text: str) -> None:
    with pytest.raises(DumpParseError):
        parse_dump(text)


def test_monitor_reports_a_missing_interface_as_down() -> None:
    monitor = LinkMonitor(settings=LinkSettings(enabled=True, interface="wgp-missing"))
    snapshot = asyncio.run(monitor.refresh())
    assert snapshot["state"] == "down"
    assert snapshot["connected"] is False
    assert snapshot["reason"]


def test_monitor_disabled() -> None:
    assert LinkMonitor(settings=LinkSettings()).snapshot()["state"] == "disabled"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WireGuardLab]:
    lab = WireGuardLab(tmp_path_factory.mktemp("wglab"))
    lab.start()
    print(f"\nWireGuard tunnel carried by: {lab.implementation}", file=sys.stderr)
    try:
        yield lab
    finally:
        lab.stop()


def test_real_tunnel_between_namespaces(
    lab: WireGuardLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print(f"\n[test_link] WireGuard implementation: {lab.implementation}")
    suffix = lab.edge.rsplit("-", 1)[1]
    vps_conf = tmp_path / f"wgpv{suffix}.conf"
    vps_conf.write_text(
        f"[Interface]\nPrivateKey = {VPS_KEY}\nAddress = 10.77.0.1/24\nListenPort = 51820\n\n"
        f"[Peer]\nPublicKey = {EDGE_PUB}\nAllowedIPs = 10.77.0.2/32\n"
    )
    vps_conf.chmod(0o600)
    lab.wg_quick(lab.vps, "up", vps_conf)

    edge_conf = tmp_path / f"wgpe{suffix}.conf"
    edge_conf.write_text(render(edge_config(keepalive=1)))
    edge_conf.chmod(0o600)
    bus = EventBus()
    events = bus.subscribe()
    monitor = LinkMonitor(
        settings=LinkSettings(
            enabled=True,
            manage=True,
            interface=edge_conf.stem,
            config_path=edge_conf,
            poll_interval=0.5,
            wg_command=("ip", "netns", "exec", lab.edge, "wg"),
        ),
        bus=bus,
    )

    async def bring_up_and_watch() -> dict[str, object]:
        await monitor.up()
        task = asyncio.create_task(monitor.run())
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                snapshot = monitor.snapshot()
                if snapshot["connected"] and snapshot["rx_bytes"]:
                    return snapshot
                await asyncio.sleep(0.5)
            raise AssertionError(f"no handshake within 30 s: {monitor.snapshot()}")
        finally:
            task.cancel()

    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.vps,
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "10.77.0.1",
            "18780",
            "--directory",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        snapshot = asyncio.run(bring_up_and_watch())
        [peer] = snapshot["peers"]  # type: ignore[misc]
        assert peer["endpoint"] == "192.0.2.2:51820"
        assert peer["handshake_age_seconds"] is not None and peer["handshake_age_seconds"] < 30
        assert snapshot["state"] == "up" and snapshot["public_key"] == EDGE_PUB
        link_events = []
        while not events.queue.empty():
            event = events.queue.get_nowait()
            if event.type == "link":
                link_events.append(event.data)
        assert link_events and link_events[-1]["connected"] in (True, False)
        assert any(e["connected"] for e in link_events)

        # TCP through the tunnel, and the MSS clamp the rendered PostUp installed.
        (tmp_path / "hello.txt").write_text("over the tunnel")
        body = ""
        for _ in range(40):
            body = lab.in_ns(
                lab.edge,
                "curl",
                "-fsS",
                "--max-time",
                "3",
                "http://10.77.0.1:18780/hello.txt",
                check=False,
            )
            if body:
                break
            time.sleep(0.25)
        assert body == "over the tunnel"
        rules = lab.in_ns(lab.edge, "iptables", "-t", "mangle", "-S", "POSTROUTING")
        assert f"-o {edge_conf.stem}" in rules and "TCPMSS --clamp-mss-to-pmtu" in rules
        dump = lab.in_ns(lab.edge, "wg", "show", edge_conf.stem, "dump")
        if os.environ.get("PRIME_SPARK_CAPTURE_WG_DUMP"):
            (FIXTURES / "wg_show_dump.txt").write_text(dump)
        assert parse_dump(dump).peers[0].rx_bytes > 0
    finally:
        server.terminate()
        server.wait(10)
        asyncio.run(monitor.down())
    assert edge_conf.stem not in sh("ip", "netns", "exec", lab.edge, "ip", "link")
    assert "TCPMSS" not in lab.in_ns(lab.edge, "iptables", "-t", "mangle", "-S", "POSTROUTING")
    lab.wg_quick(lab.vps, "down", vps_conf, check=False)


async def test_link_event_of_a_missing_interface_is_down(tmp_path: Path) -> None:
    """No ``wg`` at all: the analytics event says down with no handshake, and is emitted."""
    from inference_server.analytics.events import envelope
    from inference_server.analytics.schema import validate_event
    from inference_server.link.monitor import link_event

    sent: list[object] = []
    monitor = LinkMonitor(
        settings=LinkSettings(enabled=True, wg_command=(str(tmp_path / "no-wg"),)),
        emit=sent.append,
    )
    event = link_event(await monitor.refresh())
    assert (event.status, event.handshake_age_seconds, event.rx_bytes) == ("down", None, 0)
    validate_event(envelope(event, node_id="n1"))
    task = asyncio.create_task(monitor.run())
    try:
        async with asyncio.timeout(5):
            while not sent:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert len(sent) == 1  # one poll so far, or more polls with nothing changed
    assert sent[0] == event
