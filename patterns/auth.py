"""Authentication: signed tokens that say who is calling, and passwords stored safely.

Protects against: forged or stale credentials (a token with a changed role, a token signed with
`alg: none`, a token for another service or one that expired last week), a production deployment
quietly running on the development secret, and a stolen user table that gives away passwords.

Tokens (JWT, HS256, via PyJWT) — `Tokens(secret, issuer=..., audience=...)`:

- `issue(subject, roles=(), ttl=None, **claims)` — a signed token with `sub`, `roles`, `iss`,
  `aud`, `iat` and `exp` (`ttl`, default 15 min, after `iat`).
- `verify(token)` -> `Claims` — checks the signature with HS256 only (so `alg: none` and
  algorithm swaps are refused), the expiry, the issuer and the audience. Raises `TokenExpired`
  or `TokenInvalid` (both `TokenError`s).
- `clock` (`time.time`) — the wall clock used when issuing (verification uses PyJWT's clock).

The secret — `secret_from_env()`: `JWT_SECRET`, at least 32 bytes. When it is unset and
`MICROLAB_ENV` is `dev` (the default) the well-known `DEV_SECRET` is used so the sandbox runs out
of the box; in any other environment (e.g. `prod`) an unset, short or well-known secret is an
`InsecureSecret` error at startup instead of a silent weakness.

Passwords — `hash_password(password)` / `verify_password(password, stored)`: scrypt (stdlib)
with a random salt, parameters stored with the hash, compared in constant time.

    tokens = Tokens(secret_from_env(), issuer="microlab-users", audience="microlab")
    token = tokens.issue("user-42", roles=["customer"])
    claims = tokens.verify(token)            # Claims(subject="user-42", roles=("customer",), ...)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import jwt

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
DEV_SECRET = "microlab-dev-secret-known-to-everyone-do-not-deploy"


class TokenError(Exception):
    """The token cannot be trusted; answer 401."""


class TokenExpired(TokenError):
    """The token was valid once, but its `exp` has passed."""


class TokenInvalid(TokenError):
    """The token is malformed, forged, or meant for someone else."""


class InsecureSecret(RuntimeError):
    """The signing secret is missing, too short, or the public dev secret outside dev mode."""


def secret_from_env(env: Mapping[str, str] = os.environ) -> str:
    """The JWT signing secret for this environment, or `InsecureSecret` explaining what to set."""
    mode = env.get("MICROLAB_ENV", "dev")
    secret = env.get("JWT_SECRET")
    if secret is None:
        if mode == "dev":
            return DEV_SECRET
        raise InsecureSecret(
            f"JWT_SECRET is not set and MICROLAB_ENV={mode}: the dev secret is only for dev; "
            f"set JWT_SECRET to at least {MIN_SECRET_BYTES} random bytes "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe(48))")'
        )
    if secret == DEV_SECRET and mode != "dev":
        raise InsecureSecret(
            f"JWT_SECRET is the public dev secret, refused with MICROLAB_ENV={mode}"
        )
    _require_strong(secret)
    return secret


def _require_strong(secret: str) -> None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise InsecureSecret(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes for HS256")


@dataclass(frozen=True)
class Claims:
    subject: str
    roles: tuple[str, ...]
    issuer: str
    audience: str
    issued_at: int
    expires_at: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    def has_role(self, role: str) -> bool:
        return role in self.roles


_REGISTERED = {"sub", "roles", "iss", "aud", "iat", "exp"}


class Tokens:
    def __init__(
        self,
        secret: str,
        *,
        issuer: str,
        audience: str,
        ttl: float = 15 * 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _require_strong(secret)
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self._clock = clock

    def issue(
        self, subject: str, roles: Iterable[str] = (), ttl: float | None = None, **claims: Any
    ) -> str:
        clashes = _REGISTERED & claims.keys()
        if clashes:
            raise ValueError(f"set {sorted(clashes)} through issue()'s own arguments")
        now = int(self._clock())
        payload = {
            **claims,
            "sub": subject,
            "roles": list(roles),
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + int(self.ttl if ttl is None else ttl),
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["sub", "iss", "aud", "iat", "exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("the token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid(f"the token is not valid: {exc}") from exc
        roles = payload.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise TokenInvalid("the token's roles must be a list of strings")
        return Claims(
            subject=payload["sub"],
            roles=tuple(roles),
            issuer=payload["iss"],
            audience=payload["aud"],
            issued_at=payload["iat"],
            expires_at=payload["exp"],
            extra={key: value for key, value in payload.items() if key not in _REGISTERED},
        )


def hash_password(password: str, *, n: int = 2**14, r: int = 8, p: int = 1) -> str:
    """A salted scrypt hash, as `scrypt$n$r$p$salt$hash` (base64), safe to store.

    The default cost (n=2**14, r=8: 16 MiB, tens of milliseconds) is OWASP's minimum for scrypt.
    """
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r))
    return "$".join(["scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a hash from `hash_password` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_maxmem(int(n), int(r)),
        )
        return hmac.compare_digest(digest, base64.b64decode(expected))
    except ValueError:  # not one of our hashes (binascii.Error is a ValueError too)
        return False


def _maxmem(n: int, r: int) -> int:
    return 2 * 128 * n * r  # scrypt needs 128*n*r bytes; leave headroom


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
