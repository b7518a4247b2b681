"""A small async client for the Prime Spark node (python-wled style).

Kept inside the integration because HACS installs no private packages; written so it could
move to its own package unchanged: no Home Assistant imports in here.
"""

from .analytics import AnalyticsSummary, AnalyticsWindow
from .client import (
    API_BASE,
    DEFAULT_PORT,
    SUPPORTED_API_VERSION,
    ChatOptions,
    PrimeSpark,
)
from .exceptions import (
    PrimeSparkAuthenticationError,
    PrimeSparkConnectionError,
    PrimeSparkError,
    PrimeSparkInvalidResponseError,
    PrimeSparkPermissionError,
    PrimeSparkResponseError,
    PrimeSparkTimeoutError,
)
from .models import (
    ChatCompletion,
    ChatCompletionDelta,
    ChatMessage,
    ModelInfo,
    ModelList,
    NodeState,
    Peer,
    Power,
    RouteDecision,
    RouteEvent,
    Routing,
    ServerEvent,
    StateEvent,
    Stats,
    StatsEvent,
    Status,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from .vision import DetectedObject, Detections, LinkPeer, LinkStatus

__all__ = [
    "API_BASE",
    "DEFAULT_PORT",
    "SUPPORTED_API_VERSION",
    "AnalyticsSummary",
    "AnalyticsWindow",
    "ChatCompletion",
    "ChatCompletionDelta",
    "ChatMessage",
    "ChatOptions",
    "DetectedObject",
    "Detections",
    "LinkPeer",
    "LinkStatus",
    "ModelInfo",
    "ModelList",
    "NodeState",
    "Peer",
    "Power",
    "PrimeSpark",
    "PrimeSparkAuthenticationError",
    "PrimeSparkConnectionError",
    "PrimeSparkError",
    "PrimeSparkInvalidResponseError",
    "PrimeSparkPermissionError",
    "PrimeSparkResponseError",
    "PrimeSparkTimeoutError",
    "RouteDecision",
    "RouteEvent",
    "Routing",
    "ServerEvent",
    "StateEvent",
    "Stats",
    "StatsEvent",
    "Status",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]
