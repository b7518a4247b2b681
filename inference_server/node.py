"""The running node: its identity, settings, engine and metrics, shared by every route.

One object on the application (``app[NODE_KEY]``) instead of module globals, so a test can run
two nodes in one process and a route reads everything through a typed key.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from inference_server import __version__
from inference_server.config import Settings
from inference_server.events import EventBus
from inference_server.metrics import Metrics
from inference_server.models.registry import ModelRegistry
from inference_server.stats import RequestStats

if TYPE_CHECKING:
    from inference_server.analytics.events import Payload
    from inference_server.analytics.service import Analytics
    from inference_server.power.modes import PowerManager
    from inference_server.power.telemetry import PmicReader
    from inference_server.routing.metrics import RoutingMetrics
    from inference_server.routing.router import Router

_LOGGER = logging.getLogger(__name__)

NODE_ID_FILE = "node_id"
_NODE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def resolve_node_id(settings: Settings) -> str:
    """The configured id, else one generated at first start and kept in the data directory.

    Home Assistant uses it as the config entry's unique id, so it must survive restarts,
    upgrades and address changes.
    """
    if settings.server.node_id:
        return settings.server.node_id
    path: Path = settings.server.data_dir / NODE_ID_FILE
    if path.exists():
        stored = path.read_text(encoding="utf-8").strip()
        if _NODE_ID.match(stored):
            return stored
    settings.server.data_dir.mkdir(parents=True, exist_ok=True)
    node_id = f"ps-{secrets.token_hex(4)}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(node_id + "\n", encoding="utf-8")
    tmp.replace(path)
    return node_id


@dataclass(kw_only=True)
class Node:
    settings: Settings
    node_id: str
    engine: ModelRegistry
    metrics: Metrics
    stats: RequestStats = field(default_factory=RequestStats)
    events: EventBus = field(default_factory=EventBus)
    started_at: int = field(default_factory=lambda: int(time.time()))
    started_monotonic: float = field(default_factory=time.monotonic)
    router: Router | None = None
    power: PowerManager | None = None
    routing_metrics: RoutingMetrics | None = None
    power_watts: float | None = None
    power_reader: PmicReader | None = None
    """Last PMIC reading (refreshed in the background); None where the board has no telemetry."""
    analytics: Analytics | None = None
    """Set when analytics is enabled; subsystems emit through :meth:`emit_event`."""

    def emit_event(self, payload: Payload) -> None:
        """Emit one analytics event; a no-op with analytics off, never raises, never blocks.

        Subsystems call this instead of holding the analytics service, so each works unchanged
        when analytics is disabled, and a schema bug is logged instead of failing the operation
        the event describes (``Analytics.emit`` only validates and enqueues).
        """
        if self.analytics is None:
            return
        try:
            self.analytics.emit(payload)
        except ValueError:
            _LOGGER.exception("%s analytics event rejected", payload.TYPE)

    @property
    def version(self) -> str:
        return __version__

    @property
    def fingerprint(self) -> str:
        """OpenAI's system_fingerprint: which build and node answered."""
        return f"prime-spark-{__version__}-{self.node_id}"

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic

    def state_snapshot(self) -> dict[str, Any]:
        """What an HA entity shows live; compared for equality to decide when to push."""
        state = self.engine.state
        slots = self.engine.slots()
        return {
            "ready": state.ready,
            "state": state.status,
            "reason": state.reason,
            "loaded_models": sorted(self.engine.loaded_model_ids()),
            "slots_busy": sum(1 for s in slots if s.busy),
            "slots_total": len(slots),
            "queue_depth": self.engine.queue_depth(),
            **self._routing_and_power(),
        }

    def _routing_and_power(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.router is not None:
            out.update(self.router.snapshot())
        if self.power is not None:
            threads, slots = self.engine.limits()
            out.update(
                power_mode=self.power.mode,
                threads=threads,
                slot_limit=slots,
                power_watts=None if self.power_watts is None else round(self.power_watts, 1),
            )
        return out

    def stats_snapshot(self) -> dict[str, Any]:
        stats = dataclasses.asdict(self.stats.snapshot())
        if self.router is not None:
            stats["peers"] = self.router.peer_stats()
        return stats


NODE_KEY: Final = web.AppKey("node", Node)
