"""Helpers for Prime Spark entities and actions."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Concatenate

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError

from .client import (
    PrimeSparkAuthenticationError,
    PrimeSparkConnectionError,
    PrimeSparkResponseError,
)
from .const import DOMAIN
from .entity import PrimeSparkEntity

if TYPE_CHECKING:
    from .coordinator import PrimeSparkConfigEntry

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
"""The server's error code (HTTP 413) for a prompt its model's context cannot hold."""


@contextmanager
def translated_client_errors(hass: HomeAssistant, entry: PrimeSparkConfigEntry) -> Iterator[None]:
    """Turn client errors raised inside into translated Home Assistant errors.

    An authentication failure also starts the reauth flow: a token that stopped working (or
    lacks the operator role) is fixed by entering a new one.
    """
    try:
        yield
    except PrimeSparkAuthenticationError as err:
        entry.async_start_reauth(hass)
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="authentication_error",
        ) from err
    except PrimeSparkConnectionError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="communication_error",
            translation_placeholders={"error": str(err)},
        ) from err
    except PrimeSparkResponseError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key=CONTEXT_LENGTH_EXCEEDED
            if err.code == CONTEXT_LENGTH_EXCEEDED
            else "server_error",
            translation_placeholders={"error": err.message},
        ) from err


def prime_spark_exception_handler[EntityT: PrimeSparkEntity, **P](
    func: Callable[Concatenate[EntityT, P], Coroutine[Any, Any, Any]],
) -> Callable[Concatenate[EntityT, P], Coroutine[Any, Any, None]]:
    """Turn client errors of an entity action into translated Home Assistant errors."""

    async def handler(self: EntityT, /, *args: P.args, **kwargs: P.kwargs) -> None:
        with translated_client_errors(self.hass, self.coordinator.config_entry):
            await func(self, *args, **kwargs)

    return handler
