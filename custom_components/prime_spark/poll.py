"""How a failed poll of the node reaches Home Assistant, for every coordinator alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from homeassistant.helpers.update_coordinator import UpdateFailed

from .client import PrimeSparkConnectionError, PrimeSparkError
from .const import DOMAIN


@contextmanager
def poll_errors(translation_key: str | None = None) -> Iterator[None]:
    """Turn client errors of a poll into a translated ``UpdateFailed``.

    The coordinators (status, agents, link, analytics, memory) poll different endpoints but must
    fail alike: entities go unavailable with a message a person can act on, and the log names
    the cause once. ``translation_key`` overrides both messages for a coordinator whose failure
    must read as its own (analytics: a store being down is not the node being down).
    """
    try:
        yield
    except PrimeSparkConnectionError as err:
        raise UpdateFailed(
            translation_domain=DOMAIN,
            translation_key=translation_key or "communication_error",
            translation_placeholders={"error": str(err)},
        ) from err
    except PrimeSparkError as err:
        raise UpdateFailed(
            translation_domain=DOMAIN,
            translation_key=translation_key or "unknown_error",
            translation_placeholders={"error": str(err)},
        ) from err
