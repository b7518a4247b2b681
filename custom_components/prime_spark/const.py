"""Constants for the Prime Spark integration."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Final

DOMAIN: Final = "prime_spark"
LOGGER = logging.getLogger(__package__)

MANUFACTURER: Final = "Prime Spark"
DOCUMENTATION_URL: Final = "https://github.com/prime-spark/prime-spark"

CONF_SCAN_INTERVAL: Final = "scan_interval"
"""Option: seconds between polls while the event stream is down (the fallback)."""
DEFAULT_SCAN_INTERVAL: Final = 30
MIN_SCAN_INTERVAL: Final = 5
MAX_SCAN_INTERVAL: Final = 3600

EVENT_STREAM_RETRY_MINIMUM: Final = timedelta(seconds=2)
"""First wait before opening the event stream again (the server's own ``retry`` hint)."""
EVENT_STREAM_RETRY_MAXIMUM: Final = timedelta(minutes=2)

ZEROCONF_TYPE: Final = "_prime-spark._tcp.local."

# --- Assist (the conversation agent) and the generate action ------------------------------

CONF_PROMPT: Final = "prompt"
"""Option: the agent's instructions, a template (Home Assistant's default when unset)."""
CONF_CHAT_MODEL: Final = "chat_model"
"""Option: the model the agent talks to (the node's default model when unset)."""
CONF_MAX_TOKENS: Final = "max_tokens"
DEFAULT_MAX_TOKENS: Final = 256
MAX_MAX_TOKENS: Final = 32768
MIN_TOOL_CALL_TOKENS: Final = 96
"""Room a request with tools always gets: a call cut short is no call (and no answer either)."""
CONF_TEMPERATURE: Final = "temperature"
DEFAULT_TEMPERATURE: Final = 0.7
CONF_MAX_HISTORY: Final = "max_history"
"""Option: how many earlier turns (question and answer) go with each request; 0 = all."""
DEFAULT_MAX_HISTORY: Final = 5
CONF_COMPACT_TOOLS: Final = "compact_tools"
"""Option: send each tool with the first sentence of its description only (small contexts)."""
DEFAULT_COMPACT_TOOLS: Final = True
CONF_FORCE_TOOL_FIRST: Final = "force_tool_first"
"""Option: the first reply to a request must be a tool call (``tool_choice: required``).

Small base models almost never pick a tool when free to answer in text; with this on they
must act, then answer from the tool's result. Off by default: questions that need no tool
then still cost a call.
"""
DEFAULT_FORCE_TOOL_FIRST: Final = False

MAX_TOOL_ITERATIONS: Final = 10
"""Requests to the model for one user message at most (each tool result costs one)."""

SERVICE_GENERATE: Final = "generate"
ATTR_CONFIG_ENTRY_ID: Final = "config_entry_id"
ATTR_PROMPT: Final = "prompt"
ATTR_MESSAGES: Final = "messages"
ATTR_SYSTEM_PROMPT: Final = "system_prompt"
ATTR_MODEL: Final = "model"
ATTR_MAX_TOKENS: Final = "max_tokens"
ATTR_TEMPERATURE: Final = "temperature"
ATTR_PRIVATE: Final = "private"
ATTR_MODE: Final = "mode"

SERVICE_SET_ROUTING_MODE: Final = "set_routing_mode"
SERVICE_SET_POWER_MODE: Final = "set_power_mode"
INTENT_SET_ROUTING_MODE: Final = "PrimeSparkSetRoutingMode"
INTENT_SET_POWER_MODE: Final = "PrimeSparkSetPowerMode"
MODE_WORDS: Final = {
    "edge_first": "edge first",
    "cloud_first": "cloud first",
    "balanced": "balanced",
    "performance": "performance",
    "power_save": "power save",
    "critical": "critical",
}
"""How a mode is said (voice sentences and spoken confirmations)."""
ROUTING_SENTENCES: Final = (
    "set AI routing to {mode}",
    "set the AI routing to {mode}",
    "set AI routing mode to {mode}",
    "switch AI routing to {mode}",
)
POWER_SENTENCES: Final = (
    "set AI power mode to {mode}",
    "set the AI power mode to {mode}",
    "set AI power to {mode}",
    "switch AI power mode to {mode}",
)
"""Sentence patterns; ``{mode}`` is each mode's words (no punctuation: hassil)."""

INTENT_STATUS: Final = "PrimeSparkStatus"
STATUS_SENTENCES: Final = (
    "what is the AI status",
    "what's the AI status",
    "what is the status of the AI",
    "AI status",
    "how is the AI doing",
)
"""What Assist's default agent answers with the node's status (no punctuation: hassil)."""
