"""The users domain: accounts, the rules on their fields, and who may see what. No I/O here.

A `User` holds a scrypt hash of the password, never the password, and `public_view()` is the
only shape of a user that leaves the service: it names its fields one by one, so a field added
later (like the hash) cannot leak by accident.

Logins answer the same `Unauthorized` for an unknown email and a wrong password, and spend the
same time on both (an unknown email is checked against a hash of a throw-away password), so the
login form cannot be used to find out who has an account.
"""

from __future__ import annotations

import functools
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from patterns.api import BadRequest, Conflict, Forbidden, Unauthorized, Unprocessable
from patterns.auth import Claims, hash_password, verify_password
from patterns.clock import iso_utc as iso

CUSTOMER, ADMIN = "customer", "admin"

EMAIL_MAX = 254  # the longest address SMTP can carry (RFC 5321)
# Deliberately simple: something@something.tld without spaces. Deliverability is proven by
# sending, not by a regular expression.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PASSWORD_MIN, PASSWORD_MAX = 8, 128
NAME_MIN, NAME_MAX = 1, 100

DEV_ADMIN_EMAIL = "admin@microlab.local"
DEV_ADMIN_PASSWORD = "admin-password"

LOGIN_REFUSED = "the email or password is wrong"


class EmailTaken(Conflict):
    code = "email_taken"


class AdminNotConfigured(RuntimeError):
    """Outside dev mode the first admin's credentials must come from the environment."""


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str
    password_hash: str
    roles: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    def public_view(self) -> dict[str, Any]:
        """The user as the API shows it: never the password hash."""
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "roles": list(self.roles),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "password_changed_at": iso(self.password_changed_at),
        }


def new_user_id() -> str:
    return f"usr_{secrets.token_hex(6)}"


# -- field rules ----------------------------------------------------------------------------

def _require_text(value: str, field: str) -> None:
    """Refuse what JSON can carry but a database or a hash function cannot: lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{field} is not valid text",
                         fields=[{"field": field, "message": "not valid UTF-8"}]) from None


def normalise_email(raw: str) -> str:
    """The one spelling of an address the service stores and compares: trimmed, lower case."""
    _require_text(raw, "email")
    email = raw.strip().lower()
    if len(email) > EMAIL_MAX or not re.match(EMAIL_PATTERN, email) or _has_control(email):
        raise BadRequest("email is not a valid address",
                         fields=[{"field": "email", "message": "expected name@domain.tld"}])
    return email


def clean_name(raw: str) -> str:
    _require_text(raw, "name")
    name = raw.strip()
    if not NAME_MIN <= len(name) <= NAME_MAX or _has_control(name):
        raise BadRequest(f"name must be {NAME_MIN} to {NAME_MAX} printable characters",
                         fields=[{"field": "name", "message": "bad length or characters"}])
    return name


def check_password_rules(password: str, field: str = "password") -> None:
    _require_text(password, field)
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise BadRequest(f"{field} must be {PASSWORD_MIN} to {PASSWORD_MAX} characters",
                         fields=[{"field": field, "message": "bad length"}])


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


# -- what users do --------------------------------------------------------------------------

def register(email: str, password: str, name: str, *, now: datetime,
             roles: tuple[str, ...] = (CUSTOMER,)) -> User:
    """A new account, validated, with its password hashed (the caller stores it)."""
    email, name = normalise_email(email), clean_name(name)
    check_password_rules(password)
    return User(id=new_user_id(), email=email, name=name, password_hash=hash_password(password),
                roles=roles, created_at=now, updated_at=now)


@functools.cache
def _unknown_user_hash() -> str:
    # Hashed once per process: checking a login for an unknown email against it costs the same
    # scrypt work as checking a real account's password.
    return hash_password(secrets.token_urlsafe(16))


def authenticate(user: User | None, password: str) -> User:
    """The user, if `password` is theirs; otherwise the same refusal whatever went wrong."""
    stored = user.password_hash if user is not None else _unknown_user_hash()
    matches = verify_password(password, stored)  # always run: equal time for both cases
    if user is None or not matches:
        raise Unauthorized(LOGIN_REFUSED)
    return user


def rename(user: User, name: str, *, now: datetime) -> User:
    return replace(user, name=clean_name(name), updated_at=now)


def change_password(user: User, current_password: str, new_password: str, *,
                    now: datetime) -> User:
    """The user with a new password hash, if `current_password` proves it is them."""
    if not verify_password(current_password, user.password_hash):
        raise Forbidden("the current password is wrong")
    check_password_rules(new_password, "new_password")
    if new_password == current_password:
        raise Unprocessable("the new password must differ from the current one")
    return replace(user, password_hash=hash_password(new_password), updated_at=now,
                   password_changed_at=now)


def require_self_or_admin(caller: Claims, user_id: str) -> None:
    """Only the user themself, or an admin, may look at an account."""
    if caller.subject != user_id and not caller.has_role(ADMIN):
        raise Forbidden("you may only see your own account")


def token_claims(user: User) -> dict[str, Any]:
    """What a login token says about the user, besides their id."""
    return {"roles": list(user.roles), "email": user.email, "name": user.name}


# -- the first admin --------------------------------------------------------------------------

def admin_credentials(env: Mapping[str, str], *, dev_mode: bool) -> tuple[str, str]:
    """(email, password) of the first admin: from ADMIN_EMAIL and ADMIN_PASSWORD, or the
    well-known dev defaults in dev mode only."""
    email, password = env.get("ADMIN_EMAIL"), env.get("ADMIN_PASSWORD")
    if not email or not password:
        if not dev_mode:
            raise AdminNotConfigured(
                "ADMIN_EMAIL and ADMIN_PASSWORD must both be set outside dev mode "
                "(MICROLAB_ENV is not 'dev'): the users service creates the first admin from "
                "them and will not use the public dev defaults")
        email, password = email or DEV_ADMIN_EMAIL, password or DEV_ADMIN_PASSWORD
    try:
        normalise_email(email)
        check_password_rules(password)
    except BadRequest as error:
        raise AdminNotConfigured(f"ADMIN_EMAIL/ADMIN_PASSWORD refused: {error.message}") from None
    return email, password
