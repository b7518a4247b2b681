"""The heap alive once the default model is loaded is frozen out of full collections."""

from __future__ import annotations

import gc

from inference_server.app import freeze_startup_heap


def test_startup_heap_is_frozen() -> None:
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
