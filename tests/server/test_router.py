"""Routing decisions on their own: every rule and its reason, without a network.

The two-node tests (tests/server/api/test_routing.py) show the same rules over real HTTP; here
each branch is pinned down with an edge whose load and models the test sets directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from inference_server.config import PeerSettings, RoutingMode, Settings, load_settings
from inference_server.power.modes import PowerManager
from inference_server.routing.router import (
    REASONS,
    EdgeView,
    Router,
    RouteRefused,
    RouteRequest,
)


@dataclass
class Edge:
    models: set[str] = field(default_factory=lambda: {"small"})
    ready: bool = True
    capacity: int = 4
    slots: int = 2

    def view(self) -> EdgeView:
        async def has_model(model: str | None) -> bool:
            return model is None or model in self.models

        return EdgeView(
            has_model=has_model,
            ready=lambda: self.ready,
            capacity=lambda: self.capacity,
            slots=lambda: self.slots,
            default_model="small",
        )


def _settings(tmp_path: Path, **routing: object) -> Settings:
    return load_settings(
        environ={},
        overrides={"server": {"data_dir": str(tmp_path)}, "routing": routing},
    )


async def _router(
    tmp_path: Path, edge: Edge, mode: RoutingMode = "edge_first", *, peers: int = 1
) -> tuple[Router, PowerManager]:
    peer_list = [
        {"name": f"p{i}", "url": f"http://127.0.0.1:{9 + i}", "models": ["small", "big"]}
        for i in range(peers)
    ]
    settings = _settings(tmp_path, mode=mode, peers=peer_list, failure_threshold=1, cooldown=60)
    power = PowerManager(settings, lambda threads, slots: None)
    router = Router(settings, edge.view(), power, node_id="test")
    await router.start()
    return router, power


def _request(model: str | None = None, *, private: bool = False) -> RouteRequest:
    return RouteRequest(kind="chat", model=model, private=private, forwarded=False, stream=False)


async def _reasons(router: Router, request: RouteRequest) -> list[str]:
    plan = await router.plan(request)
    return [a.reason for a in plan.attempts]


async def test_single_node_never_looks_further(tmp_path: Path) -> None:
    edge = Edge()
    router, _ = await _router(tmp_path, edge, peers=0)
    assert await _reasons(router, _request()) == ["edge: edge first"]
    assert await _reasons(router, _request(private=True)) == ["edge: private"]
    router.set_mode("balanced")
    assert await _reasons(router, _request()) == ["edge: no cloud peer"]
    await router.close()


async def test_edge_first(tmp_path: Path) -> None:
    edge = Edge()
    router, _ = await _router(tmp_path, edge)
    assert await _reasons(router, _request()) == ["edge: edge first", "cloud: edge failed"]
    router.edge_inflight = 4
    assert await _reasons(router, _request()) == ["cloud: edge queue full", "edge: cloud failed"]
    router.edge_inflight = 0
    edge.ready = False
    assert await _reasons(router, _request()) == ["cloud: edge not ready", "edge: cloud failed"]
    await router.close()


async def test_models_decide_before_modes(tmp_path: Path) -> None:
    edge = Edge(models={"small", "local-only"})
    router, _ = await _router(tmp_path, edge, "cloud_first")
    assert await _reasons(router, _request("big")) == ["cloud: model only on cloud"]
    assert await _reasons(router, _request("local-only")) == ["edge: model not on cloud"]
    with pytest.raises(RouteRefused) as err:
        await router.plan(_request("big", private=True))
    assert (err.value.status, err.value.code) == (400, "model_not_on_edge")
    router.upstreams[0].breaker.record_failure("refused")
    with pytest.raises(RouteRefused) as err:
        await router.plan(_request("big"))
    assert (err.value.status, err.value.reason) == (503, "refused: cloud breaker open")
    assert await _reasons(router, _request()) == ["edge: cloud breaker open"]
    await router.close()


async def test_priority_orders_peers_and_fallbacks(tmp_path: Path) -> None:
    edge = Edge()
    router, _ = await _router(tmp_path, edge, "cloud_first", peers=2)
    plan = await router.plan(_request())
    assert [(a.reason, a.upstream.name if a.upstream else None) for a in plan.attempts] == [
        ("cloud: cloud first", "p0"),
        ("cloud: previous peer failed", "p1"),
        ("edge: cloud failed", None),
    ]
    await router.close()


async def test_balanced_weighs_load_and_power(tmp_path: Path) -> None:
    edge = Edge()
    router, power = await _router(tmp_path, edge, "balanced")
    assert (await _reasons(router, _request()))[0] == "edge: balanced, edge less loaded"
    router.edge_inflight = 1  # one of the edge's two slots is busy: the idle cloud is better
    assert (await _reasons(router, _request()))[0] == "cloud: balanced, cloud less loaded"
    router.upstreams[0].inflight = 2  # now the cloud is as busy (2 of its 4): a tie stays home
    assert (await _reasons(router, _request()))[0] == "edge: balanced, edge less loaded"
    router.upstreams[0].probe_latency = 0.5  # and a far cloud loses more clearly
    router.upstreams[0].inflight = 3
    power.set_mode("performance")  # performance favours the edge (x0.75): 1.125 < 2.25
    assert (await _reasons(router, _request()))[0] == "edge: balanced, edge less loaded"
    router.edge_inflight = 0
    router.upstreams[0].inflight = 0
    router.upstreams[0].probe_latency = None
    power.set_mode("power_save")  # power_save favours the cloud (x2): 2 > 1
    assert (await _reasons(router, _request()))[0] == "cloud: balanced, cloud less loaded"
    power.set_mode("critical")
    assert await _reasons(router, _request()) == ["cloud: power critical", "edge: cloud failed"]
    assert await _reasons(router, _request(private=True)) == ["edge: private"]
    await router.close()


async def test_half_open_peer_takes_one_probe(tmp_path: Path) -> None:
    edge = Edge()
    router, _ = await _router(tmp_path, edge, "cloud_first")
    upstream = router.upstreams[0]
    upstream.breaker.record_failure("refused")
    upstream.breaker._opened_at -= 60
    assert upstream.breaker.state == "half_open"
    assert (await _reasons(router, _request()))[0] == "cloud: cloud first"
    assert upstream.admit()
    assert not upstream.admit()  # the probe is taken: the next request stays home
    assert await _reasons(router, _request()) == ["edge: cloud breaker open"]
    await router.close()


async def test_modes_persist(tmp_path: Path) -> None:
    edge = Edge()
    router, power = await _router(tmp_path, edge)
    router.set_mode("balanced")
    power.set_mode("power_save")
    await router.close()
    again, power_again = await _router(tmp_path, edge, "edge_first")
    assert again.mode == "balanced"  # the stored choice wins over the settings' start value
    assert power_again.mode == "power_save"
    await again.close()


def test_peer_settings_are_typed() -> None:
    peer = PeerSettings(name="x", url="http://x")
    assert (peer.priority, peer.models, peer.max_concurrency) == (0, (), 4)


def test_readme_lists_every_reason() -> None:
    """Users read the reasons in the README: it must list exactly the ones the router gives."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `((?:edge|cloud|refused): [^`]+)` \|", readme, re.M))
    assert documented == set(REASONS)


def test_critical_names_the_smallest_model(tmp_path: Path) -> None:
    """Critical serves only the smallest local model; another one is refused, naming it."""
    from inference_server.power.modes import HeavyWorkRefused

    power = PowerManager(_settings(tmp_path), lambda threads, slots: None)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    power.check_heavy("chat", body, model_loaded=True, model="big", smallest="small")  # balanced
    power.set_mode("critical")
    power.check_heavy("chat", body, model_loaded=True, model="small", smallest="small")
    with pytest.raises(HeavyWorkRefused, match="'small'"):
        power.check_heavy("chat", body, model_loaded=True, model="big", smallest="small")
