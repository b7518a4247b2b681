"""Power-aware operation: modes that trade speed for watts, and the board's power telemetry."""
