"""Where analytics events land: PostgreSQL (TimescaleDB when present) or embedded SQLite."""

from inference_server.analytics.store.base import (
    RetentionPolicy,
    Store,
    StoreError,
    StoreRefused,
    WindowTotals,
)

__all__ = ["RetentionPolicy", "Store", "StoreError", "StoreRefused", "WindowTotals"]
