"""Two network namespaces joined by a veth pair, for a real WireGuard tunnel between them.

Namespace ``vps`` plays the cloud node (WireGuard listening on UDP 51820), namespace ``edge``
plays the add-on (the client configuration rendered by ``inference_server.link.wgquick``).
The tunnel is WireGuard itself: the kernel module where the kernel has one, otherwise
``wireguard-go`` through /dev/net/tun (wg-quick picks; :attr:`implementation` says which).

Inside the project's bubblewrap sandbox /dev is a ``nodev`` tmpfs, so /dev/net/tun cannot be
opened there; the lab then bind-mounts a tun node made on a fresh tmpfs over it. That mount
lives in the sandbox's private mount namespace and disappears with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

TOOLS = ("ip", "wg", "wg-quick", "iptables", "mount")


class LabUnavailableError(RuntimeError):
    pass


def sh(*argv: str, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def kernel_module() -> bool:
    return Path("/sys/module/wireguard").exists()


def _tun_usable() -> bool:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


class WireGuardLab:
    def __init__(self, workdir: Path) -> None:
        suffix = f"{os.getpid() % 100000}"
        self.edge = f"ps-edge-{suffix}"
        self.vps = f"ps-vps-{suffix}"
        self.veth = (f"psve{suffix}", f"psvv{suffix}")
        self.workdir = workdir
        self.mounts: list[str] = []
        self.implementation = ""

    def check(self) -> None:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if os.geteuid() != 0:
            missing.append("root")
        if not kernel_module() and shutil.which("wireguard-go") is None:
            missing.append("wireguard kernel module or wireguard-go")
        if missing:
            raise LabUnavailableError(
                "a real WireGuard tunnel needs "
                + ", ".join(missing)
                + " (scripts/setup installs wireguard-tools, wireguard-go, iptables in the rootfs)"
            )
        self.implementation = "kernel module" if kernel_module() else "wireguard-go (userspace)"

    def _ensure_tun(self) -> None:
        if kernel_module() or _tun_usable():
            return
        devdir = self.workdir / "dev"
        devdir.mkdir()
        sh("mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", str(devdir))
        self.mounts.append(str(devdir))
        sh("mknod", str(devdir / "tun"), "c", "10", "200")
        Path("/dev/net").mkdir(exist_ok=True)
        Path("/dev/net/tun").touch(exist_ok=True)
        sh("mount", "--bind", str(devdir / "tun"), "/dev/net/tun")
        self.mounts.insert(0, "/dev/net/tun")
        if not _tun_usable():
            raise LabUnavailableError("/dev/net/tun cannot be opened even after the bind mount")

    def in_ns(self, ns: str, *argv: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", ns, *argv, check=check)

    def start(self) -> None:
        self.check()
        self._ensure_tun()
        for ns in (self.edge, self.vps):
            sh("ip", "netns", "add", ns)
            self.in_ns(ns, "ip", "link", "set", "lo", "up")
        a, b = self.veth
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", self.edge)
        sh("ip", "link", "set", b, "netns", self.vps)
        self.in_ns(self.edge, "ip", "addr", "add", "192.0.2.1/30", "dev", a)
        self.in_ns(self.vps, "ip", "addr", "add", "192.0.2.2/30", "dev", b)
        self.in_ns(self.edge, "ip", "link", "set", a, "up")
        self.in_ns(self.vps, "ip", "link", "set", b, "up")

    def wg_quick(self, ns: str, action: str, config: Path, check: bool = True) -> str:
        return self.in_ns(ns, "wg-quick", action, str(config), check=check)

    def stop(self) -> None:
        for ns in (self.edge, self.vps):
            sh("ip", "netns", "del", ns, check=False)
        for mount in self.mounts:
            sh("umount", mount, check=False)
        with contextlib.suppress(OSError):
            for sock in Path("/var/run/wireguard").glob("wgp[ev][0-9]*.sock"):
                sock.unlink()
