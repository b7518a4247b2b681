"""Exceptions raised by the Prime Spark client."""

from __future__ import annotations


class PrimeSparkError(Exception):
    """Base for every error the client raises."""


class PrimeSparkConnectionError(PrimeSparkError):
    """The server could not be reached, or the connection broke."""


class PrimeSparkTimeoutError(PrimeSparkConnectionError):
    """The server did not answer in time."""


class PrimeSparkAuthenticationError(PrimeSparkError):
    """The token was refused (HTTP 401)."""


class PrimeSparkPermissionError(PrimeSparkAuthenticationError):
    """The token is valid but its role is too low for the call (HTTP 403).

    A subclass of the authentication error: the remedy is the same, a token with a higher role.
    """


class PrimeSparkResponseError(PrimeSparkError):
    """The server answered with an error status, or with a body the client cannot use."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Keep what a caller can branch on: the HTTP status and the server's error code."""
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after


class PrimeSparkInvalidResponseError(PrimeSparkResponseError):
    """The server answered, but not in the shape its API contract describes."""
