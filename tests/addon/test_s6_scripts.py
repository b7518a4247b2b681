"""The add-on's s6 scripts run with bash against a bashio stand-in and a Supervisor stand-in.

The Supervisor is hardware-like here (there is none on this machine), so a small aiohttp app
plays its ``POST /discovery``; the Prime Spark server is the real one. The discovery script
must wait until the API answers, then post ``prime_spark`` with the host, port, token and node
id the integration's ``async_step_hassio`` reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from inference_server.addon_options import HA_TOKEN_FILE
from tests.server.server_process import ServerProcess, free_port

ADDON = Path(__file__).parents[2] / "addon"
SCRIPTS = ADDON / "rootfs" / "etc" / "s6-overlay" / "scripts"
STUB = Path(__file__).with_name("bashio_stub.sh")
SUPERVISOR_TOKEN = "supervisor-token-for-tests"


async def run_script(script: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        f'source "{STUB}"; source "{script}"',
        # the venv first, as /opt/prime-spark/bin is in the add-on image
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def _pythonpath() -> dict[str, str]:
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


class Supervisor:
    def __init__(self) -> None:
        self.posts: list[tuple[str | None, Any]] = []

    async def discovery(self, request: web.Request) -> web.Response:
        self.posts.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({"result": "ok", "data": {"uuid": "0123abcd"}})


async def test_discovery_waits_for_the_api_then_posts(
    tmp_path: Path, seed_data_dir: Callable[[Path], Path]
) -> None:
    supervisor = Supervisor()
    app = web.Application()
    app.router.add_post("/discovery", supervisor.discovery)
    runner = web.AppRunner(app)
    await runner.setup()
    sup_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", sup_port).start()

    ha_token = "ha-token-from-the-addon-0123456789"
    server = ServerProcess(
        tmp_path,
        {
            "security": {
                "api_tokens": [{"name": "home-assistant", "token": ha_token, "role": "operator"}]
            }
        },
    )
    seed_data_dir(server.data_dir)
    (tmp_path / HA_TOKEN_FILE).write_text(ha_token + "\n")
    env = {
        "ADDON_DATA_DIR": str(tmp_path),
        "API_PORT": str(server.port),
        "SUPERVISOR_TOKEN": SUPERVISOR_TOKEN,
        "__BASHIO_SUPERVISOR_API": f"http://127.0.0.1:{sup_port}",
    }
    proc = await run_script(SCRIPTS / "discovery", env)
    try:
        await asyncio.sleep(3)
        assert proc.returncode is None, "discovery gave up before the API was there"
        assert supervisor.posts == [], "discovery posted before the API answered"
        await asyncio.to_thread(server.start)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert b"Sent discovery information" in err
        [(auth, payload)] = supervisor.posts
        assert auth == f"Bearer {SUPERVISOR_TOKEN}"
        _, _, status = server.request("GET", "/api/v1/status", token=ha_token)
        assert payload == {
            "service": "prime_spark",
            "config": {
                "host": socket.gethostname(),
                "port": server.port,
                "token": ha_token,
                "node_id": status["node_id"],
            },
        }
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.stop()
        await runner.cleanup()


async def test_init_options_stops_the_addon_on_bad_options(tmp_path: Path) -> None:
    (tmp_path / "options.json").write_text(json.dumps({"routing_mode": "cloud_first"}))
    proc = await run_script(SCRIPTS / "init-options", {"ADDON_DATA_DIR": str(tmp_path)})
    _out, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"routing_mode: cloud_first needs at least one entry in cloud_peers" in err
    assert not (tmp_path / "settings.yaml").exists()


async def test_init_options_then_wireguard_off(tmp_path: Path) -> None:
    (tmp_path / "options.json").write_text(json.dumps({"log_level": "debug"}))
    env = {"ADDON_DATA_DIR": str(tmp_path)}
    proc = await run_script(SCRIPTS / "init-options", env)
    _out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "log_level: debug" in (tmp_path / "settings.yaml").read_text()
    proc = await run_script(SCRIPTS / "wireguard-up", env)
    _out, err = await proc.communicate()
    assert proc.returncode == 0
    assert b"WireGuard link is off" in err


@pytest.mark.parametrize("external", [True, False])
async def test_redis_service_respects_redis_url(tmp_path: Path, external: bool) -> None:
    """With redis_url set the bundled Redis stays off (the run script sleeps instead)."""
    options = {"redis_url": "redis://nas:6379/0"} if external else {}
    (tmp_path / "options.json").write_text(json.dumps(options))
    run = ADDON / "rootfs" / "etc" / "s6-overlay" / "s6-rc.d" / "redis" / "run"
    port = free_port()
    script = tmp_path / "redis-run"
    script.write_text(run.read_text().replace("--port 6379", f"--port {port}"))
    proc = await run_script(script, {"ADDON_DATA_DIR": str(tmp_path)})
    try:
        await asyncio.sleep(1.5)
        assert proc.returncode is None  # a longrun keeps running either way
        reachable = True
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
        except OSError:
            reachable = False
        assert reachable is (not external)
    finally:
        proc.terminate()
        await proc.wait()


async def test_rendered_options_boot_the_server(
    tmp_path: Path, seed_data_dir: Callable[[Path], Path]
) -> None:
    """init-options then the server's s6 run script: the server starts from the rendered file,
    and the token handed to HA through discovery is accepted."""
    options = {
        "log_level": "info",
        "default_model": "gemma-3-270m",
        "context_size": 512,
        "slots": 1,
        "api_tokens": [{"name": "grafana", "token": "grafana-token-0123456789", "role": "reader"}],
        "hailo": {"vision_backend": "auto", "device": "/dev/hailo0", "min_score": 0.5},
    }
    (tmp_path / "options.json").write_text(json.dumps(options))
    env = {"ADDON_DATA_DIR": str(tmp_path)}
    proc = await run_script(SCRIPTS / "init-options", env)
    _out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    seed_data_dir(tmp_path)
    # The image has the prime-spark-server console script; here the checkout is run as a module.
    shim = tmp_path / "bin" / "prime-spark-server"
    shim.parent.mkdir()
    shim.write_text(
        f'#!/bin/sh\ncd "{Path.cwd()}" && exec "{sys.executable}" -m inference_server "$@"\n'
    )
    shim.chmod(0o755)
    port = free_port()
    run = ADDON / "rootfs" / "etc" / "s6-overlay" / "s6-rc.d" / "server" / "run"
    server = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        f'source "{STUB}"; source "{run}"',
        env={
            "PATH": f"{shim.parent}:{Path(sys.executable).parent}:/usr/bin:/bin",
            **env,
            # The add-on listens on 0.0.0.0:8780; a test takes a free loopback port.
            "PRIME_SPARK_SERVER__HOST": "127.0.0.1",
            "PRIME_SPARK_SERVER__PORT": str(port),
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    token = (tmp_path / HA_TOKEN_FILE).read_text().strip()
    try:
        status: dict[str, Any] | None = None
        for _ in range(600):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            request = (
                f"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(request.encode())
            raw = await reader.read()
            writer.close()
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), raw[:300]
            status = json.loads(body)
            break
        assert status is not None, "the server never answered"
        assert status["caller"] == {"name": "home-assistant", "role": "operator"}
        assert status["link"]["state"] == "disabled"
        assert status["default_model"] == "gemma-3-270m"
    finally:
        if server.returncode is None:
            os.killpg(server.pid, 15)
            await asyncio.wait_for(server.wait(), 30)
