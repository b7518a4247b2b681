"""Analytics: typed events → disk spool → Kafka (optional) → PostgreSQL/TimescaleDB or SQLite
→ rollups and the windowed summary HA's sensors read.

Emitters call ``request.app[ANALYTICS_KEY].emit(SomeEvent(...))`` (or ``node``-level code that
holds the :class:`Analytics`); see :mod:`inference_server.analytics.events` for the topics.
"""

from inference_server.analytics.events import (
    AgentTaskEvent,
    InferenceEvent,
    LinkEvent,
    MemoryEvent,
    NodeHealthEvent,
    Payload,
    PowerEvent,
    RoutingEvent,
)
from inference_server.analytics.requests import current_record, note_generation
from inference_server.analytics.schema import EventSchemaError
from inference_server.analytics.service import ANALYTICS_KEY, Analytics

__all__ = [
    "ANALYTICS_KEY",
    "AgentTaskEvent",
    "Analytics",
    "EventSchemaError",
    "InferenceEvent",
    "LinkEvent",
    "MemoryEvent",
    "NodeHealthEvent",
    "Payload",
    "PowerEvent",
    "RoutingEvent",
    "current_record",
    "note_generation",
]
