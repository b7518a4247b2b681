"""Runs the real ``prime-spark-server`` as a subprocess on a free loopback port for tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

JWT_SECRET = "a-test-only-jwt-secret-that-is-long-enough"
TOKENS = {
    "admin": "admin-token-0123456789abcdef",
    "operator": "operator-token-0123456789abcdef",
    "reader": "reader-token-0123456789abcdef",
}


SERVER_COMMAND_ENV = "PRIME_SPARK_SERVER_COMMAND"
"""How to start the server when this Python cannot (a test lane without ``inference_server``).

E.g. ``/path/to/repo/scripts/shell python -m inference_server``: split with shlex; ``--config
FILE`` is appended. Such a command may be a wrapper (scripts/shell → bubblewrap → python), so
signals go to its whole process group and a wait lasts until every process of it has exited.
"""


def server_command() -> tuple[list[str], bool]:
    """The command that starts the server, and whether it came from ``SERVER_COMMAND_ENV``."""
    if given := os.environ.get(SERVER_COMMAND_ENV, "").strip():
        return shlex.split(given), True
    return [sys.executable, "-m", "inference_server"], False


class _GroupPopen(subprocess.Popen[bytes]):
    """A process started in a session of its own, signalled and waited for as a process group.

    bubblewrap neither forwards signals to the sandboxed process nor takes it down when killed.
    """

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        returncode = super().wait(timeout)
        while _group_alive(self.pid):
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(0.05)
        return returncode


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies awaiting their reaper do not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server with its own data dir and settings; ``start()`` waits until /health says ready."""

    def __init__(self, tmp: Path, settings: dict[str, Any], *, name: str = "server") -> None:
        self.port = free_port()
        self.data_dir = tmp / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        base: dict[str, Any] = {
            "server": {"host": "127.0.0.1", "port": self.port, "data_dir": str(self.data_dir)},
            "security": {
                "api_tokens": [
                    {"name": role, "token": token, "role": role} for role, token in TOKENS.items()
                ],
                "rate_limit_per_minute": 0,
                "jwt_secret": JWT_SECRET,
            },
            "discovery": {"enabled": False},
        }
        for section, values in settings.items():
            base.setdefault(section, {}).update(values)
        self.config_path = self.data_dir / "settings.yaml"
        self.config_path.write_text(yaml.safe_dump(base), encoding="utf-8")
        self.log_path = self.data_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240.0) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRIME_SPARK_")}
        log = self.log_path.open("ab")
        command, wrapped = server_command()
        popen = _GroupPopen if wrapped else subprocess.Popen
        self.process = popen(
            [*command, "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=wrapped,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKENS["admin"],
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """A plain HTTP call (stdlib), returning status, headers and the decoded JSON body."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, got_headers, payload = (
                    response.status,
                    dict(response.headers),
                    response.read(),
                )
        except urllib.error.HTTPError as err:
            status, got_headers, payload = err.code, dict(err.headers), err.read()
        content_type = got_headers.get("Content-Type", "")
        decoded: Any = json.loads(payload) if "json" in content_type else payload.decode()
        return status, got_headers, decoded


def until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail naming ``what``."""
    import pytest

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def first_peer_reachable(proc: ServerProcess) -> bool:
    """Whether the node's first routing peer passed a health check (its routing status)."""
    status, _, body = proc.request("GET", "/api/v1/routing", token=TOKENS["reader"])
    return status == 200 and body["peers"][0]["reachable"] is True


def peer_settings(peer: ServerProcess, name: str = "cloud") -> dict[str, Any]:
    """``routing.peers`` entry for a second server as the cloud peer: operator token, a short
    connect timeout (a killed peer fails fast) and a long first byte (the model may be cold)."""
    return {
        "name": name,
        "url": peer.url,
        "token": TOKENS["operator"],
        "connect_timeout": 1,
        "first_byte_timeout": 60,
    }


def first_peer(proc: ServerProcess) -> dict[str, Any]:
    """The node's first routing peer as its routing status shows it."""
    status, _, body = proc.request("GET", "/api/v1/routing", token=TOKENS["reader"])
    assert status == 200, body
    return body["peers"][0]  # type: ignore[no-any-return]


_REQUESTS_TOTAL = re.compile(
    r"^prime_spark_http_requests_total\{([^}]*)\} ([0-9.e+]+)$", re.MULTILINE
)


def requests_served(proc: ServerProcess, route: str = "/v1/chat/completions", **labels: str) -> int:
    """Requests the node answered on ``route`` (and ``labels``), from its Prometheus counter."""
    _, _, text = proc.request("GET", "/metrics", token=TOKENS["reader"])
    wanted = [f'route="{route}"', *(f'{k}="{v}"' for k, v in labels.items())]
    return int(
        sum(
            float(value)
            for found, value in _REQUESTS_TOTAL.findall(text)
            if all(w in found for w in wanted)
        )
    )
