"""Settings: file < environment < overrides, and every bad value named with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_server.config import ConfigError, load_settings


def test_defaults_need_nothing() -> None:
    settings = load_settings(environ={})
    assert settings.server.port == 8780
    assert settings.server.host == "127.0.0.1"
    assert settings.models.default == "gemma-3-270m"
    assert settings.server.cors_origins == ()
    assert settings.discovery.enabled


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("server:\n  port: 9001\n  log_level: DEBUG\nmodels:\n  slots: 2\n")
    env = {
        "PRIME_SPARK_CONFIG": str(path),
        "PRIME_SPARK_SERVER__PORT": "9002",
        "PRIME_SPARK_SERVER__CORS_ORIGINS": "http://a, http://b",
        "PRIME_SPARK_SECURITY__API_TOKENS": '[{"name": "ha", "token": "0123456789abcdef0", "role": "operator"}]',
        "PRIME_SPARK_DISCOVERY__ENABLED": "off",
    }
    settings = load_settings(environ=env, overrides={"models": {"slots": 3}})
    assert settings.server.port == 9002
    assert settings.server.log_level == "debug"
    assert settings.server.cors_origins == ("http://a", "http://b")
    assert settings.models.slots == 3
    assert settings.security.api_tokens[0].role == "operator"
    assert settings.discovery.enabled is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PRIME_SPARK_SERVER__PORT": "eighty"}, "server.port: expected int"),
        ({"PRIME_SPARK_SERVER__PORT": "70000"}, "server.port: value must be at most 65535"),
        ({"PRIME_SPARK_MODELS__SLOTS": "0"}, "models.slots: value must be at least 1"),
        ({"PRIME_SPARK_SERVER__LOG_LEVEL": "loud"}, "server.log_level: expected one of debug"),
        ({"PRIME_SPARK_SERVER__COLOUR": "red"}, "server.colour: unknown setting"),
        ({"PRIME_SPARK_SERVER_PORT": "1"}, "e.g. PRIME_SPARK_SERVER__PORT"),
        ({"PRIME_SPARK_MODELS__": "1"}, "the setting name after '__' is missing"),
        (
            {"PRIME_SPARK_SECURITY__JWT_SECRET": "short"},
            "security.jwt_secret: a JWT secret needs 32+",
        ),
        (
            {
                "PRIME_SPARK_SECURITY__API_TOKENS": '[{"name": "x", "token": "short", "role": "admin"}]'
            },
            "security.api_tokens.0.token: a token must be at least 16",
        ),
        (
            {
                "PRIME_SPARK_SECURITY__API_TOKENS": '[{"name": "x", "token": "0123456789abcdef", "role": "god"}]'
            },
            "security.api_tokens.0.role: expected one of admin, operator, reader",
        ),
        ({"PRIME_SPARK_SECURITY__API_TOKENS": "[oops"}, "expected a JSON list of tokens"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ=env)
    assert message in str(err.value)


def test_script_variables_are_not_settings() -> None:
    """The scripts and tests use PRIME_SPARK_* names too; they must not stop the server."""
    settings = load_settings(
        environ={"PRIME_SPARK_CACHE": "/var/cache", "PRIME_SPARK_TEST_REDIS_URL": "redis://x"}
    )
    assert settings.server.port == 8780


def test_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("server: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path, environ={})
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(path, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", environ={})


def test_routing_and_power_settings() -> None:
    peers = (
        '[{"name": "vps", "url": "http://10.8.0.1:8780/v1/", "token": "t", "models": "big, small",'
        ' "priority": 2}]'
    )
    settings = load_settings(
        environ={
            "PRIME_SPARK_ROUTING__PEERS": peers,
            "PRIME_SPARK_ROUTING__MODE": "cloud_first",
            "PRIME_SPARK_ROUTING__PRIVATE_TOKENS": "home-assistant",
            "PRIME_SPARK_POWER__MODE": "power_save",
        }
    )
    (peer,) = settings.routing.peers
    assert peer.url == "http://10.8.0.1:8780"  # a trailing /v1 is the API root, not the peer's
    assert peer.models == ("big", "small")
    assert peer.priority == 2
    assert settings.routing.mode == "cloud_first"
    assert settings.routing.private_tokens == ("home-assistant",)
    assert settings.power.mode == "power_save"
    defaults = load_settings(environ={})
    assert defaults.routing.mode == "edge_first"
    assert defaults.routing.peers == ()
    assert defaults.power.mode == "balanced"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PRIME_SPARK_ROUTING__MODE": "cloudy"}, "routing.mode: expected one of edge_first"),
        ({"PRIME_SPARK_POWER__MODE": "turbo"}, "power.mode: expected one of performance"),
        (
            {"PRIME_SPARK_ROUTING__PEERS": '[{"name": "a", "url": "ftp://x"}]'},
            "routing.peers.0.url: expected an http:// or https:// URL",
        ),
        (
            {
                "PRIME_SPARK_ROUTING__PEERS": '[{"name": "a", "url": "http://x"},'
                ' {"name": "a", "url": "http://y"}]'
            },
            "peer names must be unique",
        ),
        ({"PRIME_SPARK_ROUTING__PEERS": "[oops"}, "expected a JSON list of peers"),
        ({"PRIME_SPARK_ROUTING__COOLDOWN": "0"}, "routing.cooldown: value must be at least 0.1"),
    ],
)
def test_bad_routing_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ=env)
    assert message in str(err.value)
