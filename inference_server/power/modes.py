"""Power modes: what each one changes on the node, applied at once and kept across restarts.

| mode        | threads        | slots          | max_tokens cap | routing bias                  |
|-------------|----------------|----------------|----------------|-------------------------------|
| performance | every core     | as configured  | none           | edge favoured (balanced x0.75)|
| balanced    | as configured  | as configured  | none           | none                          |
| power_save  | half, >= 1     | half, >= 1     | 256            | cloud favoured (balanced x2)  |
| critical    | 1              | 1              | 64             | cloud whenever a peer is up   |

Critical also refuses heavy work on the edge with HTTP 409 ``power_critical``: a ``max_tokens``
above the cap, more than 8 embedding inputs, a prompt over 8000 characters, or a model that is
not loaded (loading one is the heaviest thing a node does). The cap elsewhere clamps silently,
like a context limit: the answer's ``finish_reason`` is ``length``.

Critical also serves only the smallest local model (by file size, ties by id): a chat,
completion or embedding request for any other local model gets the same 409 ``power_critical``
naming the smallest one, so the client can ask for it (or go to a cloud peer, which the router
prefers in critical anyway). Nothing is swapped silently: an answer from another model than the
one asked for would be a lie.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_server.config import POWER_MODES, PowerMode, Settings
from inference_server.runtime_state import load_state, save_state

_LOGGER = logging.getLogger(__name__)

STATE_FILE = "power.json"
HEAVY_EMBEDDING_INPUTS = 8
HEAVY_PROMPT_CHARS = 8000


@dataclass(frozen=True, kw_only=True, slots=True)
class PowerProfile:
    mode: PowerMode
    max_tokens_cap: int | None
    edge_weight: float
    """Multiplies the edge's estimated wait in balanced routing (>1 favours the cloud)."""
    prefer_cloud: bool
    refuse_heavy: bool


PROFILES: dict[PowerMode, PowerProfile] = {
    "performance": PowerProfile(
        mode="performance",
        max_tokens_cap=None,
        edge_weight=0.75,
        prefer_cloud=False,
        refuse_heavy=False,
    ),
    "balanced": PowerProfile(
        mode="balanced",
        max_tokens_cap=None,
        edge_weight=1.0,
        prefer_cloud=False,
        refuse_heavy=False,
    ),
    "power_save": PowerProfile(
        mode="power_save",
        max_tokens_cap=256,
        edge_weight=2.0,
        prefer_cloud=False,
        refuse_heavy=False,
    ),
    "critical": PowerProfile(
        mode="critical", max_tokens_cap=64, edge_weight=4.0, prefer_cloud=True, refuse_heavy=True
    ),
}


class HeavyWorkRefused(Exception):
    """Critical mode refuses this request on the edge; the message says why and what to do."""


class PowerManager:
    """Holds the mode and pushes its thread/slot limits into the engine."""

    def __init__(
        self,
        settings: Settings,
        apply_limits: Callable[[int, int], None],
        *,
        on_change: Callable[[PowerMode], None] | None = None,
    ) -> None:
        self._settings = settings
        self._apply_limits = apply_limits
        self._on_change = on_change
        self._path: Path = settings.server.data_dir / STATE_FILE
        stored = load_state(self._path).get("mode")
        self._mode: PowerMode = stored if stored in POWER_MODES else settings.power.mode

    @property
    def mode(self) -> PowerMode:
        return self._mode

    @property
    def profile(self) -> PowerProfile:
        return PROFILES[self._mode]

    def limits(self, mode: PowerMode | None = None) -> tuple[int, int]:
        """(threads, slots) the mode allows on this machine and these settings."""
        mode = mode or self._mode
        cores = os.cpu_count() or 1
        threads = self._settings.models.threads or cores
        slots = self._settings.models.slots
        if mode == "performance":
            return cores, slots
        if mode == "power_save":
            return max(1, threads // 2), max(1, slots // 2)
        if mode == "critical":
            return 1, 1
        return threads, slots

    def apply(self) -> None:
        """Push the current mode's limits into the engine (at start, and on every change)."""
        threads, slots = self.limits()
        self._apply_limits(threads, slots)

    def set_mode(self, mode: PowerMode) -> None:
        changed = mode != self._mode
        self._mode = mode
        save_state(self._path, {"mode": mode})
        self.apply()
        if changed:
            _LOGGER.info("Power mode is now %s", mode)
            if self._on_change is not None:
                self._on_change(mode)

    def max_tokens(self, requested: int) -> int:
        cap = self.profile.max_tokens_cap
        return requested if cap is None else min(requested, cap)

    def check_heavy(
        self,
        kind: str,
        body: dict[str, Any],
        *,
        model_loaded: bool,
        model: str | None = None,
        smallest: str | None = None,
    ) -> None:
        """Raise HeavyWorkRefused when critical mode must not run this on the edge.

        ``model`` is the local model the request resolves to, ``smallest`` the smallest local
        model; when both are known and differ, critical refuses and names the smallest.
        """
        profile = self.profile
        if not profile.refuse_heavy:
            return
        if model is not None and smallest is not None and model != smallest:
            raise HeavyWorkRefused(
                f"only the smallest local model, '{smallest}', runs in critical mode "
                f"(asked for '{model}'); ask for '{smallest}'"
            )
        cap = profile.max_tokens_cap or 0
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        if kind != "embeddings" and isinstance(asked, int) and asked > cap:
            raise HeavyWorkRefused(f"max_tokens {asked} is above the critical cap of {cap}")
        if kind == "embeddings":
            inputs = body.get("input")
            if isinstance(inputs, list) and len(inputs) > HEAVY_EMBEDDING_INPUTS:
                raise HeavyWorkRefused(
                    f"{len(inputs)} embedding inputs is more than {HEAVY_EMBEDDING_INPUTS}"
                )
        prompt = body.get("messages") if kind == "chat" else body.get("prompt")
        size = len(prompt) if isinstance(prompt, str) else len(json.dumps(prompt or ""))
        if size > HEAVY_PROMPT_CHARS:
            raise HeavyWorkRefused(f"a prompt of {size} characters is over {HEAVY_PROMPT_CHARS}")
        if not model_loaded:
            raise HeavyWorkRefused("the model is not loaded, and loading one is heavy work")
