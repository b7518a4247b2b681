"""Add-on options → server settings and wg-quick file: a table of valid and invalid option sets.

Valid sets must produce settings the server's own loader accepts; invalid ones must fail with
a message that names the option the user has to fix, as it appears in the configuration tab.
"""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference_server import config
from inference_server.addon_options import (
    BUNDLED_REDIS_URL,
    AddonOptionsError,
    main,
    render,
)

ADDON = Path(__file__).parents[2] / "addon"
DEFAULTS: dict[str, Any] = yaml.safe_load((ADDON / "config.yaml").read_text())["options"]

NODE_KEY = "KAbzV/9jDOF4hAo4RxFea/GZYz9taBMAWA+nWSE4gFM="
VPS_PUB = "M6pSpiBm2fBgOx7OW2D9Xy0k7R3/1y+hSoKxxrH2kxM="
PSK = "5ZaPs9KtnkSRVIkUsginvMr4/sXSIQNLOf/m0gZiSpg="
PEER = {
    "endpoint": "vps.example.com:51820",
    "public_key": VPS_PUB,
    "allowed_ips": "10.8.0.0/24",
    "persistent_keepalive": 25,
}
WG_ON = {
    "enabled": True,
    "private_key": NODE_KEY,
    "address": "10.8.0.2/32",
    "mtu": 1420,
    "peers": [PEER],
}
CLOUD = [{"name": "vps", "url": "http://10.8.0.1:8780", "token": "vps-token-0123456789"}]
TOKEN = {"name": "grafana", "token": "grafana-token-0123456789", "role": "reader"}


def options(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(DEFAULTS)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


VALID: list[tuple[str, dict[str, Any]]] = [
    ("defaults", options()),
    (
        "tokens and models",
        options(
            api_tokens=[TOKEN],
            model_paths=["/share/models/qwen.gguf"],
            default_model="qwen",
            threads=4,
        ),
    ),
    ("wireguard", options(wireguard=WG_ON, cloud_peers=CLOUD, routing_mode="cloud_first")),
    (
        "wireguard v6 + dns + psk",
        options(
            wireguard={
                **WG_ON,
                "address": "10.8.0.2/32, fd00::2/128",
                "dns": "10.8.0.1",
                "peers": [{**PEER, "endpoint": "[2001:db8::1]:51820", "preshared_key": PSK}],
            }
        ),
    ),
    (
        "external services",
        options(
            redis_url="redis://nas.local:6379/2",
            kafka_bootstrap="nas.local:9092,10.0.0.5:9092",
            postgres_url="postgresql://ps:pw@nas.local:5432/ps",
            nas_path="/share/prime-spark",
        ),
    ),
    ("hailo", options(hailo={"vision_backend": "hailo", "hef_path": "/share/hailo/yolov8s.hef"})),
    ("cpu vision", options(hailo={"vision_backend": "cpu", "min_score": 0.3})),
]

INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "wg without key",
        options(wireguard={**WG_ON, "private_key": ""}),
        "wireguard.private_key: required",
    ),
    (
        "wg without address",
        options(wireguard={**WG_ON, "address": None}),
        "wireguard.address: required",
    ),
    (
        "wg without peers",
        options(wireguard={**WG_ON, "peers": []}),
        "wireguard.peers: at least one",
    ),
    (
        "wg bad key",
        options(wireguard={**WG_ON, "private_key": "not-a-key"}),
        "wireguard.private_key: expected a WireGuard key",
    ),
    (
        "wg bad peer key",
        options(wireguard={**WG_ON, "peers": [{**PEER, "public_key": "abc="}]}),
        "wireguard.peers[0].public_key",
    ),
    (
        "wg bad psk",
        options(wireguard={**WG_ON, "peers": [{**PEER, "preshared_key": "x"}]}),
        "wireguard.peers[0].preshared_key",
    ),
    (
        "wg bad endpoint",
        options(wireguard={**WG_ON, "peers": [{**PEER, "endpoint": "vps.example.com"}]}),
        "wireguard.peers[0].endpoint: expected host:port",
    ),
    (
        "wg endpoint port",
        options(wireguard={**WG_ON, "peers": [{**PEER, "endpoint": "vps:70000"}]}),
        "wireguard.peers[0].endpoint: port 70000",
    ),
    (
        "wg bad allowed",
        options(wireguard={**WG_ON, "peers": [{**PEER, "allowed_ips": "10.8.0.0/33"}]}),
        "wireguard.peers[0].allowed_ips",
    ),
    (
        "wg bad address",
        options(wireguard={**WG_ON, "address": "10.8.0.300/32"}),
        "wireguard.address: '10.8.0.300/32'",
    ),
    ("wg bad dns", options(wireguard={**WG_ON, "dns": "dns.google"}), "wireguard.dns"),
    ("wg mtu", options(wireguard={**WG_ON, "mtu": 1000}), "wireguard.mtu"),
    ("cloud_first alone", options(routing_mode="cloud_first"), "routing_mode: cloud_first needs"),
    ("peer url", options(cloud_peers=[{"name": "vps", "url": "ftp://x"}]), "cloud_peers[0].url"),
    ("peer twice", options(cloud_peers=CLOUD * 2), "cloud_peers[1].name: 'vps' is used twice"),
    (
        "short token",
        options(api_tokens=[{**TOKEN, "token": "short"}]),
        "api_tokens[0].token: a token must be at least 16",
    ),
    (
        "token twice",
        options(api_tokens=[TOKEN, {**TOKEN, "name": "b"}]),
        "api_tokens[1].token: the same token",
    ),
    (
        "reserved name",
        options(api_tokens=[{**TOKEN, "name": "home-assistant"}]),
        "api_tokens[0].name",
    ),
    ("bad role", options(api_tokens=[{**TOKEN, "role": "root"}]), "api_tokens[0].role"),
    (
        "model outside",
        options(model_paths=["/etc/passwd"]),
        "model_paths[0]: '/etc/passwd' is not inside",
    ),
    ("model escape", options(model_paths=["/share/../etc/x.gguf"]), "model_paths[0]"),
    ("hailo no hef", options(hailo={"vision_backend": "hailo"}), "hailo.hef_path: required when"),
    ("hef outside", options(hailo={"hef_path": "/tmp/x.hef"}), "hailo.hef_path: '/tmp/x.hef'"),
    (
        "redis scheme",
        options(redis_url="http://nas:6379"),
        "redis_url: expected a URL starting with redis://",
    ),
    ("postgres scheme", options(postgres_url="mysql://nas/db"), "postgres_url"),
    (
        "kafka",
        options(kafka_bootstrap="nas.local"),
        "kafka_bootstrap: 'nas.local' is not host:port",
    ),
    (
        "nas outside",
        options(nas_path="/data/warm"),
        "nas_path: '/data/warm' is not inside /share or /media",
    ),
    ("log level", options(log_level="verbose"), "log_level"),
]


@pytest.mark.parametrize(("name", "opts"), VALID, ids=[v[0] for v in VALID])
def test_valid_options_give_settings_the_server_accepts(name: str, opts: dict[str, Any]) -> None:
    result = render(opts, ha_token="ha-token-0123456789abcdef")
    settings = config.load_settings(environ={}, overrides=result.settings)
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 8780
    assert not settings.discovery.enabled
    assert any(
        t.name == "home-assistant" and t.role == "operator" for t in settings.security.api_tokens
    )
    assert settings.link.enabled is (result.wireguard is not None)
    assert settings.vision.backend == opts["hailo"]["vision_backend"]


def test_wireguard_file_from_options() -> None:
    result = render(options(wireguard=WG_ON, cloud_peers=CLOUD))
    assert result.wireguard is not None
    text = result.wireguard
    assert f"PrivateKey = {NODE_KEY}" in text
    assert "Address = 10.8.0.2/32" in text
    assert "MTU = 1420" in text
    assert "--clamp-mss-to-pmtu" in text
    assert (
        f"PublicKey = {VPS_PUB}\nEndpoint = vps.example.com:51820\nAllowedIPs = 10.8.0.0/24" in text
    )
    assert "PersistentKeepalive = 25" in text
    assert result.settings["link"] == {
        "enabled": True,
        "interface": "wg0",
        "manage": False,
        "config_path": "/data/wireguard/wg0.conf",
    }
    assert result.warnings == [] or all("no '" in w for w in result.warnings)


def test_peer_outside_the_tunnel_is_a_warning() -> None:
    peers = [{"name": "lan", "url": "http://192.168.1.10:8780"}]
    result = render(options(wireguard=WG_ON, cloud_peers=peers))
    assert any("'lan'" in w and "outside every" in w for w in result.warnings)


def test_bundled_redis_when_no_url() -> None:
    result = render(options(), server_sections=(*config.SECTIONS, "memory"))
    assert result.settings["memory"]["redis_url"] == BUNDLED_REDIS_URL


def test_options_for_sections_this_build_lacks_warn() -> None:
    result = render(
        options(kafka_bootstrap="k:9092"),
        server_sections=("server", "models", "security", "discovery", "link", "vision"),
    )
    assert "analytics" not in result.settings
    assert any(w.startswith("kafka_bootstrap:") for w in result.warnings)


@pytest.mark.parametrize(("name", "opts", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_options_name_the_option(name: str, opts: dict[str, Any], message: str) -> None:
    with pytest.raises(AddonOptionsError) as caught:
        render(opts)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_all_problems_at_once() -> None:
    with pytest.raises(AddonOptionsError) as caught:
        render(
            options(
                routing_mode="cloud_first",
                nas_path="/data/x",
                wireguard={**WG_ON, "private_key": ""},
            )
        )
    assert len(caught.value.problems) == 3


def test_cli_writes_private_files_and_keeps_the_ha_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "options.json").write_text(json.dumps(options(wireguard=WG_ON, cloud_peers=CLOUD)))
    args = [
        "--options",
        str(tmp_path / "options.json"),
        "--settings",
        str(tmp_path / "settings.yaml"),
        "--wireguard",
        str(tmp_path / "wireguard" / "wg0.conf"),
        "--data-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    for name in ("settings.yaml", "wireguard/wg0.conf", "ha.token"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    token = (tmp_path / "ha.token").read_text().strip()
    settings = config.load_settings(tmp_path / "settings.yaml", environ={})
    assert any(t.token == token for t in settings.security.api_tokens)
    assert settings.link.config_path == tmp_path / "wireguard" / "wg0.conf"
    assert main(args) == 0
    assert (tmp_path / "ha.token").read_text().strip() == token  # stable across restarts

    (tmp_path / "options.json").write_text(json.dumps(options(routing_mode="cloud_first")))
    assert main(args) == 1
    assert "routing_mode: cloud_first needs" in capsys.readouterr().err

    (tmp_path / "options.json").write_text(json.dumps(options()))
    assert main(args) == 0
    assert not (tmp_path / "wireguard" / "wg0.conf").exists()  # link switched off: file gone
