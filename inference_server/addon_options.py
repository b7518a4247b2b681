"""The add-on's options (``/data/options.json``) → the server's settings file and wg-quick file.

The Supervisor checks each option against its type in ``addon/config.yaml``; what it cannot
check is how options fit together (a WireGuard link without a private key, ``cloud_first``
without a cloud peer, a Hailo backend without a model). That happens here, in Python rather
than in bash string building, and every problem is reported with the option's name as the user
sees it in the add-on's configuration tab, all problems at once. The settings produced are
then validated again by :func:`inference_server.config.load_settings`, the server's own check.

Run by the add-on's s6 ``server`` service before the server starts::

    python -m inference_server.addon_options --options /data/options.json \
        --settings /data/settings.yaml --wireguard /data/wireguard/wg0.conf
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from inference_server import config
from inference_server.link import wgquick

ADDON_PORT = 8780
BUNDLED_REDIS_URL = "redis://127.0.0.1:6379/0"
WIREGUARD_INTERFACE = "wg0"
HA_TOKEN_FILE = "ha.token"  # noqa: S105  # nosec B105: a file name, not a secret
"""The token the add-on hands to Home Assistant through Supervisor discovery."""
HA_TOKEN_NAME = "home-assistant"  # noqa: S105  # nosec B105: a token's name, not a secret

MODEL_ROOTS = ("/share", "/media", "/config", "/data")
"""Where a model file can be inside the add-on container (addon_config is mapped at /config)."""
NAS_ROOTS = ("/share", "/media")
"""HA OS mounts network storage under /share or /media, the only places it can be seen."""

OPTIONAL_SERVICES: dict[str, tuple[str, str]] = {
    # option → (server settings section, key). A section the server does not have yet is
    # reported as "not used by this build" instead of failing the start.
    "redis_url": ("memory", "redis_url"),
    "kafka_bootstrap": ("analytics", "kafka_bootstrap"),
    "postgres_url": ("analytics", "postgres_dsn"),
    "nas_path": ("memory", "warm_path"),
}


_SECTION_OPTIONS: dict[str, tuple[str, ...]] = {
    "routing": ("routing_mode", "cloud_peers"),
    "power": ("power_mode",),
    "memory": ("redis_url", "nas_path"),
    "analytics": ("kafka_bootstrap", "postgres_url"),
}
"""Which options feed which settings section, for the "not used by this build" warning."""


class AddonOptionsError(ValueError):
    """One or more options are invalid; ``problems`` are "option: what is wrong" lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid add-on options:\n  " + "\n  ".join(problems))
        self.problems = list(problems)


@dataclass(kw_only=True)
class AddonConfig:
    settings: dict[str, Any]
    wireguard: str | None
    """The wg-quick file's text, or None when the link is off."""
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Problems:
    items: list[str] = field(default_factory=list)

    def add(self, option: str, message: str) -> None:
        self.items.append(f"{option}: {message}")


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _under(path: str, roots: Sequence[str]) -> bool:
    pure = PurePosixPath(path)
    return (
        pure.is_absolute()
        and ".." not in pure.parts
        and any(
            pure == PurePosixPath(root) or PurePosixPath(root) in pure.parents for root in roots
        )
    )


def _check_url(value: str, schemes: Sequence[str]) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        return f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
    if not parts.hostname:
        return "the URL has no host"
    return None


def _tokens(options: Mapping[str, Any], problems: _Problems) -> list[dict[str, str]]:
    tokens: list[dict[str, str]] = []
    seen_names: set[str] = set()
    seen_tokens: set[str] = set()
    for index, raw in enumerate(options.get("api_tokens") or []):
        where = f"api_tokens[{index}]"
        name, token, role = raw.get("name", ""), raw.get("token", ""), raw.get("role", "")
        if not name:
            problems.add(f"{where}.name", "a name is needed")
        elif name in seen_names or name == HA_TOKEN_NAME:
            problems.add(f"{where}.name", f"'{name}' is used twice (or reserved for HA)")
        if len(token) < 16:
            problems.add(f"{where}.token", "a token must be at least 16 characters long")
        elif token in seen_tokens:
            problems.add(f"{where}.token", "the same token is listed twice")
        if role not in config.ROLES:
            problems.add(f"{where}.role", f"expected one of {', '.join(config.ROLES)}")
        seen_names.add(name)
        seen_tokens.add(token)
        tokens.append({"name": name, "token": token, "role": role})
    return tokens


def _peers(options: Mapping[str, Any], problems: _Problems) -> list[dict[str, Any]]:
    peers: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, raw in enumerate(options.get("cloud_peers") or []):
        where = f"cloud_peers[{index}]"
        name, url = str(raw.get("name", "")), str(raw.get("url", ""))
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            problems.add(f"{where}.name", "expected 1-64 of A-Z a-z 0-9 _ . -")
        elif name in names:
            problems.add(f"{where}.name", f"'{name}' is used twice")
        names.add(name)
        if error := _check_url(url, ("http", "https")):
            problems.add(f"{where}.url", error)
        peer: dict[str, Any] = {"name": name, "url": url.rstrip("/")}
        if raw.get("token"):
            peer["token"] = raw["token"]
        peers.append(peer)
    return peers


def _wireguard(options: Mapping[str, Any], problems: _Problems) -> wgquick.WireGuardConfig | None:
    wg = options.get("wireguard") or {}
    if not wg.get("enabled"):
        return None
    before = len(problems.items)
    if not wg.get("private_key"):
        problems.add("wireguard.private_key", "required when wireguard.enabled is on")
    if not wg.get("address"):
        problems.add(
            "wireguard.address", "required when wireguard.enabled is on (e.g. 10.8.0.2/32)"
        )
    if not wg.get("peers"):
        problems.add("wireguard.peers", "at least one peer (the cloud node) is needed")
    if len(problems.items) > before:
        return None
    try:
        addresses = wgquick.check_addresses(_split(wg["address"]), "address")
        dns = wgquick.check_dns(_split(wg.get("dns")), "dns")
        peers = []
        for index, peer in enumerate(wg["peers"]):
            where = f"peers[{index}]"
            peers.append(
                wgquick.WireGuardPeer(
                    public_key=wgquick.check_key(
                        str(peer.get("public_key", "")), f"{where}.public_key"
                    ),
                    preshared_key=wgquick.check_key(peer["preshared_key"], f"{where}.preshared_key")
                    if peer.get("preshared_key")
                    else None,
                    endpoint=wgquick.check_endpoint(
                        str(peer.get("endpoint", "")), f"{where}.endpoint"
                    ),
                    allowed_ips=wgquick.check_networks(
                        _split(peer.get("allowed_ips")), f"{where}.allowed_ips"
                    ),
                    persistent_keepalive=int(
                        peer.get("persistent_keepalive", wgquick.DEFAULT_KEEPALIVE)
                    ),
                )
            )
        return wgquick.WireGuardConfig(
            private_key=str(wg["private_key"]),
            addresses=addresses,
            dns=dns,
            mtu=int(wg.get("mtu", wgquick.DEFAULT_MTU)),
            peers=tuple(peers),
        )
    except wgquick.WireGuardConfigError as err:
        problems.add(f"wireguard.{err.field}", err.reason)
        return None


def _peer_outside_tunnel(peer: Mapping[str, Any], link: wgquick.WireGuardConfig) -> bool:
    host = urlsplit(str(peer["url"])).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: where it resolves is not known here
    return not any(
        address in ipaddress.ip_network(net) for p in link.peers for net in p.allowed_ips
    )


def render(
    options: Mapping[str, Any],
    *,
    data_dir: str = "/data",
    ha_token: str = "",
    wireguard_path: str = f"/data/wireguard/{WIREGUARD_INTERFACE}.conf",
    server_sections: Sequence[str] = config.SECTIONS,
) -> AddonConfig:
    """Options → settings (a dict for the YAML file) and the wg-quick text, or every problem."""
    problems = _Problems()
    warnings: list[str] = []
    log_level = str(options.get("log_level", "info"))
    if log_level not in config.LOG_LEVELS:
        problems.add("log_level", f"expected one of {', '.join(config.LOG_LEVELS)}")
    model_paths = [str(p) for p in options.get("model_paths") or []]
    for index, path in enumerate(model_paths):
        if not _under(path, MODEL_ROOTS):
            problems.add(
                f"model_paths[{index}]",
                f"'{path}' is not inside {', '.join(MODEL_ROOTS)} (the folders the add-on sees)",
            )
    tokens = _tokens(options, problems)
    if ha_token:
        tokens.append({"name": HA_TOKEN_NAME, "token": ha_token, "role": "operator"})
    peers = _peers(options, problems)
    routing_mode = str(options.get("routing_mode", "edge_first"))
    if routing_mode == "cloud_first" and not peers:
        problems.add("routing_mode", "cloud_first needs at least one entry in cloud_peers")
    link = _wireguard(options, problems)
    if link is not None:
        for peer in peers:
            if _peer_outside_tunnel(peer, link):
                warnings.append(
                    f"cloud_peers: '{peer['name']}' ({peer['url']}) is outside every "
                    "wireguard.peers allowed_ips: its traffic will not use the tunnel"
                )
    hailo = options.get("hailo") or {}
    backend = str(hailo.get("vision_backend", "auto"))
    if backend not in config.VISION_BACKENDS:
        problems.add("hailo.vision_backend", f"expected one of {', '.join(config.VISION_BACKENDS)}")
    hef = hailo.get("hef_path") or None
    if backend == "hailo" and not hef:
        problems.add("hailo.hef_path", "required when hailo.vision_backend is hailo")
    if hef and not _under(str(hef), MODEL_ROOTS):
        problems.add("hailo.hef_path", f"'{hef}' is not inside {', '.join(MODEL_ROOTS)}")
    services: dict[str, str] = {}
    for option, schemes in (
        ("redis_url", ("redis", "rediss", "unix")),
        ("postgres_url", ("postgres", "postgresql")),
    ):
        if value := options.get(option):
            if (
                error := _check_url(str(value), schemes)
                if not str(value).startswith("unix")
                else None
            ):
                problems.add(option, error)
            services[option] = str(value)
    if value := options.get("kafka_bootstrap"):
        for server in _split(str(value)):
            if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", server):
                problems.add("kafka_bootstrap", f"'{server}' is not host:port")
        services["kafka_bootstrap"] = str(value)
    if value := options.get("nas_path"):
        if not _under(str(value), NAS_ROOTS):
            problems.add(
                "nas_path",
                f"'{value}' is not inside /share or /media (where HA mounts network storage)",
            )
        services["nas_path"] = str(value)
    services.setdefault("redis_url", BUNDLED_REDIS_URL)
    if problems.items:
        raise AddonOptionsError(problems.items)

    models: dict[str, Any] = {
        "default": str(options.get("default_model") or config.DEFAULT_MODEL_ID),
        "paths": model_paths,
    }
    for key in ("context_size", "slots", "threads"):
        if options.get(key):
            models[key] = int(options[key])
    settings: dict[str, Any] = {
        "server": {
            "host": "0.0.0.0",  # noqa: S104  # nosec B104: the add-on serves HA over Docker's network
            "port": ADDON_PORT,
            "data_dir": data_dir,
            "log_level": log_level,
        },
        "models": models,
        "security": {"api_tokens": tokens},
        # zeroconf inside the add-on's Docker network would advertise an address nobody can
        # reach; the add-on announces itself through Supervisor discovery instead.
        "discovery": {"enabled": False},
        "link": {
            "enabled": link is not None,
            "interface": WIREGUARD_INTERFACE,
            "manage": False,
            **({"config_path": wireguard_path} if link is not None else {}),
        },
        "vision": {
            "backend": backend,
            "hailo_device": str(hailo.get("device") or "/dev/hailo0"),
            **({"hailo_hef": str(hef)} if hef else {}),
            **({"min_score": float(hailo["min_score"])} if "min_score" in hailo else {}),
        },
        "routing": {"mode": routing_mode, "peers": peers},
        "power": {"mode": str(options.get("power_mode", "balanced"))},
    }
    for option, value in services.items():
        section, key = OPTIONAL_SERVICES[option]
        settings.setdefault(section, {})[key] = value
    for section in list(settings):
        if section in server_sections:
            continue
        given = [name for name in _SECTION_OPTIONS.get(section, ()) if options.get(name)]
        if given:
            warnings.append(
                f"{', '.join(given)}: this server build has no '{section}' settings yet; "
                "the option is kept but not used"
            )
        del settings[section]
    return AddonConfig(
        settings=settings,
        wireguard=wgquick.render(link) if link is not None else None,
        warnings=warnings,
    )


def ha_token(data_dir: Path) -> str:
    """The token for Home Assistant: made once, kept in the data dir (mode 0600)."""
    path = data_dir / HA_TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if len(token) >= 16:
            return token
    token = secrets.token_urlsafe(32)
    _write_private(path, token + "\n")
    return token


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", type=Path, default=Path("/data/options.json"))
    parser.add_argument("--settings", type=Path, default=Path("/data/settings.yaml"))
    parser.add_argument(
        "--wireguard", type=Path, default=Path(f"/data/wireguard/{WIREGUARD_INTERFACE}.conf")
    )
    parser.add_argument("--data-dir", type=Path, default=Path("/data"))
    args = parser.parse_args(argv)
    try:
        options = json.loads(args.options.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        print(f"cannot read the add-on options {args.options}: {err}", file=sys.stderr)
        return 2
    try:
        result = render(
            options,
            data_dir=str(args.data_dir),
            ha_token=ha_token(args.data_dir),
            wireguard_path=str(args.wireguard),
        )
        config.load_settings(environ={}, overrides=result.settings)
    except (AddonOptionsError, config.ConfigError) as err:
        print(str(err), file=sys.stderr)
        return 1
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    _write_private(args.settings, yaml.safe_dump(result.settings, sort_keys=False))
    if result.wireguard is not None:
        _write_private(args.wireguard, result.wireguard)
    elif args.wireguard.exists():
        args.wireguard.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
