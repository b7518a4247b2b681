"""The ``agents`` settings section: defaults keep one node working, bad values are named."""

from __future__ import annotations

import pytest

from inference_server.agents.base import BUILTIN_MODULES, load_agent_types
from inference_server.config import ConfigError, load_settings


def test_defaults_are_the_embedded_single_node() -> None:
    agents = load_settings(environ={}).agents
    assert agents.redis_url is None  # in-process queue
    assert agents.enabled is None  # every agent type this node can run
    assert agents.capacity == {}
    assert agents.reclaim_idle >= 2 * agents.heartbeat_interval


def test_environment_values() -> None:
    env = {
        "PRIME_SPARK_AGENTS__REDIS_URL": "redis://127.0.0.1:6379/3",
        "PRIME_SPARK_AGENTS__ENABLED": "llm, memory",
        "PRIME_SPARK_AGENTS__CAPACITY": "llm=2,embed=4",
        "PRIME_SPARK_AGENTS__TIER": "cloud",
        "PRIME_SPARK_AGENTS__MAX_DELIVERIES": "5",
    }
    agents = load_settings(environ=env).agents
    assert agents.redis_url == "redis://127.0.0.1:6379/3"
    assert agents.enabled == ("llm", "memory")
    assert agents.capacity == {"llm": 2, "embed": 4}
    assert agents.tier == "cloud"
    assert agents.max_deliveries == 5
    json_capacity = {"PRIME_SPARK_AGENTS__CAPACITY": '{"vision": 3}'}
    assert load_settings(environ=json_capacity).agents.capacity == {"vision": 3}
    assert load_settings(environ={"PRIME_SPARK_AGENTS__ENABLED": ""}).agents.enabled == ()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis_url": "http://x"}, "agents.redis_url: expected a redis://"),
        ({"capacity": "llm"}, "capability=count pairs"),
        ({"capacity": {"llm": 0}}, "agents.capacity.llm"),
        ({"max_deliveries": 0}, "agents.max_deliveries"),
        ({"heartbeat_interval": 5, "reclaim_idle": 6}, "twice agents.heartbeat_interval"),
        ({"reclaim": 5}, "agents.reclaim: unknown setting"),
    ],
)
def test_bad_values_are_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(environ={}, overrides={"agents": values})


def test_builtin_agent_types_and_a_bad_module() -> None:
    types = load_agent_types(())
    assert set(types) == {"llm", "embed", "memory", "vision"}
    assert len(BUILTIN_MODULES) == 4
    with pytest.raises(TypeError, match="no AGENT"):
        load_agent_types(("inference_server.agents.model",))
