"""Small JSON files in the data directory for choices made at runtime (routing and power mode).

A mode set from Home Assistant must survive a restart of the add-on; the settings file is the
user's and is never rewritten, so the runtime choice lives next to the node id and wins over the
configured default until it is changed again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)


def load_state(path: Path) -> dict[str, Any]:
    """The stored mapping, or ``{}`` when absent or unreadable (logged, never fatal)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        _LOGGER.warning("Ignoring %s: %s", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def save_state(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a power cut never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
