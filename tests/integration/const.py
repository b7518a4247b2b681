"""Constants of the integration tests (no Home Assistant imports: conftest uses them)."""

NODE_ID = "edge"
"""The node id every test server is configured with (the config entry's unique id)."""
TITLE = f"Prime Spark {NODE_ID}"
OTHER_NODE_ID = "other"
"""The node id of the second node some tests start (``other_node``)."""
