"""Bearer-token authentication: static API tokens from the settings, or JWTs signed with a secret.

Roles are ordered (reader < operator < admin) so that a route states the least role it needs.
Tokens are compared by their SHA-256 digest in a dict, which is constant-time in the secret for
practical purposes and keeps the raw tokens out of memory dumps of the lookup table. A token's
text is never logged; the caller is identified by the token's name (or the JWT subject).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import jwt

from inference_server.config import ROLES, ApiToken, Role, SecuritySettings

_LOGGER = logging.getLogger(__name__)

ROLE_RANK: Final[dict[Role, int]] = {"reader": 0, "operator": 1, "admin": 2}
BOOTSTRAP_TOKEN_FILE = "admin.token"  # noqa: S105  # nosec B105: a file name, not a secret


class AuthError(Exception):
    """The caller is not who it claims (401) or may not do this (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    role: Role
    key: str
    """Stable, non-secret key for per-caller state such as rate limits."""

    def allows(self, needed: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[needed]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Resolves an ``Authorization`` header into a :class:`Principal`."""

    def __init__(self, settings: SecuritySettings, extra_tokens: tuple[ApiToken, ...] = ()) -> None:
        self._tokens = {
            _digest(t.token): Principal(name=t.name, role=t.role, key=f"token:{t.name}")
            for t in (*settings.api_tokens, *extra_tokens)
        }
        self._jwt_secret = settings.jwt_secret
        self._jwt_algorithms = list(settings.jwt_algorithms)
        self._jwt_audience = settings.jwt_audience

    def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise AuthError(401, "Missing bearer token (send 'Authorization: Bearer <token>')")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "The Authorization header must be 'Bearer <token>'")
        principal = self._tokens.get(_digest(token))
        if principal is not None:
            return principal
        if self._jwt_secret and token.count(".") == 2:
            return self._from_jwt(token)
        raise AuthError(401, "Invalid bearer token")

    def _from_jwt(self, token: str) -> Principal:
        if not self._jwt_secret:  # an explicit check, not an assert: it must survive python -O
            raise AuthError(401, "Invalid bearer token")
        try:
            claims = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=self._jwt_algorithms,
                audience=self._jwt_audience,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as err:
            raise AuthError(401, "The token has expired") from err
        except jwt.InvalidTokenError as err:
            raise AuthError(401, f"Invalid token: {err}") from err
        role = claims.get("role")
        if role not in ROLES:
            raise AuthError(403, f"The token's role claim must be one of {', '.join(ROLES)}")
        subject = str(claims["sub"])
        return Principal(name=subject, role=role, key=f"jwt:{subject}")


def issue_jwt(secret: str, subject: str, role: Role, ttl_seconds: int = 3600) -> str:
    """Mint a token for tools and tests; the server itself only verifies."""
    now = int(time.time())
    payload = {"sub": subject, "role": role, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(payload, secret, algorithm="HS256")


def bootstrap_admin_token(settings: SecuritySettings, data_dir: Path) -> ApiToken | None:
    """With no credentials configured, keep an admin token in the data dir rather than run open.

    A first-time user gets a working, private server: the token file is 0600 and its path (never
    its content) is logged. Configured tokens or a JWT secret switch this off.
    """
    if settings.api_tokens or settings.jwt_secret:
        return None
    path = data_dir / BOOTSTRAP_TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        tmp = path.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(token + "\n", encoding="utf-8")
        tmp.replace(path)
    _LOGGER.warning(
        "No API tokens configured: an admin token is kept in %s (configure security.api_tokens "
        "to choose your own)",
        path,
    )
    return ApiToken(name="bootstrap-admin", token=token, role="admin")
