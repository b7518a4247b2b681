"""Enforce the role each route declares, and the per-caller rate limit, before any handler runs.

Routes declare their least role with :func:`requires` (or :func:`public`); a route that declares
nothing needs ``admin``, so a forgotten declaration fails closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

from aiohttp import web

from inference_server.api.errors import ApiError
from inference_server.config import Role
from inference_server.security.auth import Authenticator, AuthError, Principal
from inference_server.security.ratelimit import RateLimiter

PRINCIPAL_KEY: Final = web.RequestKey("principal", Principal)
AUTHENTICATOR_KEY: Final = web.AppKey("authenticator", Authenticator)
RATE_LIMITER_KEY: Final = web.AppKey("rate_limiter", RateLimiter)

_ROLE_ATTR = "__prime_spark_role__"
_PUBLIC = "public"

F = TypeVar("F", bound=Callable[..., object])


def requires(role: Role) -> Callable[[F], F]:
    def mark(handler: F) -> F:
        setattr(handler, _ROLE_ATTR, role)
        return handler

    return mark


def public[F: Callable[..., object]](handler: F) -> F:
    setattr(handler, _ROLE_ATTR, _PUBLIC)
    return handler


def required_role(handler: object) -> str:
    return str(getattr(handler, _ROLE_ATTR, "admin"))


def authorize(request: web.Request) -> Principal | None:
    """The caller of a route that needs a role, checked against it (``None``: nothing to check).

    Raises the 401/403 :class:`ApiError`; the rate limit is :func:`check_rate` (async, and only
    when a limit is set). Called by the application's one middleware
    (:func:`inference_server.middleware.request_middleware`), before the handler.
    """
    route = request.match_info.route
    needed = required_role(route.handler) if route.resource is not None else _PUBLIC
    if needed == _PUBLIC or request.method == "OPTIONS":
        return None
    try:
        principal = request.app[AUTHENTICATOR_KEY].authenticate(
            request.headers.get("Authorization")
        )
    except AuthError as err:
        code = "invalid_api_key" if err.status == 401 else "forbidden"
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        raise ApiError(
            err.status, str(err), type_="authentication_error", code=code, headers=headers
        ) from err
    if not principal.allows(needed):  # type: ignore[arg-type]
        raise ApiError(
            403,
            f"This route needs the '{needed}' role; the token has '{principal.role}'",
            type_="permission_error",
            code="forbidden",
        )
    return principal


async def check_rate(request: web.Request, principal: Principal, limiter: RateLimiter) -> None:
    """Take one request from the caller's budget, else the 429 :class:`ApiError`."""
    retry_after = await limiter.check(principal.key)
    if retry_after is not None:
        raise ApiError(
            429,
            f"Rate limit exceeded for '{principal.name}'",
            type_="rate_limit_error",
            code="rate_limited",
            headers={"Retry-After": str(int(retry_after))},
        )
