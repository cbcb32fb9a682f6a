"""The users service: accounts, login and JWTs, profiles, the admin role.

    POST  /api/v1/users/register     {email, password, name}         → 201 user
    POST  /api/v1/users/login        {email, password}               → {token, user}
    GET   /api/v1/users/me           (token)                         → user
    PATCH /api/v1/users/me           (token) {name}                  → user
    POST  /api/v1/users/me/password  (token) {current_password, new_password} → user
    GET   /api/v1/users/<id>         (token: that user, or an admin) → user

It is the one service that issues tokens (`kit.tokens.issue`); every other service only
verifies them. A token lives 15 minutes, so changing a password does not end sessions already
open: their tokens simply run out.

The first admin is created at start from ADMIN_EMAIL and ADMIN_PASSWORD (dev mode falls back to
admin@microlab.local / admin-password; any other mode refuses to start without them). If the
account exists it is made an admin and its password is left alone.

Guessing passwords is slowed by scrypt, not stopped: limiting login attempts per client is the
gateway's job (its rate limiter sits in front of every route), not this service's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from flask import Flask

from patterns.api import NotFound
from patterns.auth import Claims
from patterns.service import ServiceKit
from patterns.settings import ServiceSettings
from services.users import domain, events
from services.users.domain import (ADMIN, CUSTOMER, EMAIL_MAX, EMAIL_PATTERN, NAME_MAX,
                                   NAME_MIN, PASSWORD_MAX, PASSWORD_MIN, EmailTaken, User)
from services.users.store import UserStore

log = logging.getLogger(__name__)

EMAIL = {"type": "string", "minLength": 3, "maxLength": EMAIL_MAX, "pattern": EMAIL_PATTERN}
# No length bounds in the password schemas: a schema error quotes the value it refuses, and a
# response must never contain a password. The domain checks the length instead, saying only
# "must be 8 to 128 characters".
NEW_PASSWORD = {"type": "string",
                "description": f"{PASSWORD_MIN} to {PASSWORD_MAX} characters"}
ANY_PASSWORD = {"type": "string"}
NAME = {"type": "string", "minLength": NAME_MIN, "maxLength": NAME_MAX, "pattern": r"\S"}

REGISTRATION = {
    "type": "object", "additionalProperties": False, "required": ["email", "password", "name"],
    "properties": {"email": EMAIL, "password": NEW_PASSWORD, "name": NAME},
}
CREDENTIALS = {
    "type": "object", "additionalProperties": False, "required": ["email", "password"],
    "properties": {"email": EMAIL, "password": ANY_PASSWORD},
}
PROFILE_CHANGE = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {"name": NAME},
}
PASSWORD_CHANGE = {
    "type": "object", "additionalProperties": False,
    "required": ["current_password", "new_password"],
    "properties": {"current_password": ANY_PASSWORD, "new_password": NEW_PASSWORD},
}
USER = {
    "type": "object",
    "required": ["id", "email", "name", "roles", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"}, "email": {"type": "string"}, "name": {"type": "string"},
        "roles": {"type": "array", "items": {"type": "string", "enum": [CUSTOMER, ADMIN]}},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
        "password_changed_at": {"type": ["string", "null"]},
    },
}
SESSION = {
    "type": "object", "required": ["token", "user"],
    "properties": {"token": {"type": "string"}, "user": USER},
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: ServiceSettings, *, env: Mapping[str, str] = os.environ,
               now: Callable[[], datetime] = utc_now) -> Flask:
    admin_email, admin_password = domain.admin_credentials(env, dev_mode=settings.dev_mode)
    kit = ServiceKit(settings, title="users",
                     description="Accounts, login (JWT), profiles and the admin role.")
    kit.app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # bodies here are a few fields
    users = UserStore(kit.outbox("users"))
    ensure_first_admin(users, admin_email, admin_password, now=now())
    api = kit.api

    def account_of(caller: Claims) -> User:
        user = users.find(caller.subject)
        if user is None:
            raise NotFound("no account belongs to this token")
        return user

    @api.post("/api/v1/users/register", body=REGISTRATION, status=201, errors=(409,),
              summary="Create a customer account", response=USER)
    def register(body: dict) -> dict:
        user = domain.register(body["email"], body["password"], body["name"], now=now())
        users.add(user, events.user_registered(user))
        log.info("user registered", extra={"user_id": user.id})
        return user.public_view()

    @api.post("/api/v1/users/login", body=CREDENTIALS, errors=(401,),
              summary="Exchange email and password for a token", response=SESSION)
    def login(body: dict) -> dict:
        account = users.find_by_email(domain.normalise_email(body["email"]))
        user = domain.authenticate(account, body["password"])
        token = kit.tokens.issue(user.id, **domain.token_claims(user))
        log.info("user logged in", extra={"user_id": user.id})
        return {"token": token, "user": user.public_view()}

    @api.get("/api/v1/users/me", auth=True, errors=(404,),
             summary="The caller's own account", response=USER)
    def my_profile(user: Claims) -> dict:
        return account_of(user).public_view()

    @api.patch("/api/v1/users/me", auth=True, body=PROFILE_CHANGE, errors=(404,),
               summary="Change the caller's name", response=USER)
    def update_my_profile(user: Claims, body: dict) -> dict:
        renamed = domain.rename(account_of(user), body["name"], now=now())
        users.save_name(renamed)
        return renamed.public_view()

    @api.post("/api/v1/users/me/password", auth=True, body=PASSWORD_CHANGE,
              errors=(403, 404, 409, 422), summary="Change the caller's password", response=USER)
    def change_my_password(user: Claims, body: dict) -> dict:
        account = account_of(user)
        changed = domain.change_password(account, body["current_password"],
                                         body["new_password"], now=now())
        users.save_password(changed, account.password_hash,
                            events.password_changed(changed, changed.updated_at))
        log.info("password changed", extra={"user_id": changed.id})
        return changed.public_view()

    @api.get("/api/v1/users/<user_id>", auth=True,
             summary="One account (the user themself, or an admin)", response=USER)
    def get_user(user_id: str, user: Claims) -> dict:
        domain.require_self_or_admin(user, user_id)
        found = users.find(user_id)
        if found is None:
            raise NotFound(f"no user {user_id}")
        return found.public_view()

    kit.start()
    return kit.app


def ensure_first_admin(users: UserStore, email: str, password: str, *, now: datetime) -> None:
    """Create the admin account if missing; make an existing account with that email an admin."""
    account = users.find_by_email(domain.normalise_email(email))
    if account is None:
        admin = domain.register(email, password, "Administrator", now=now,
                                roles=(CUSTOMER, ADMIN))
        try:
            users.add(admin, events.user_registered(admin))
            log.info("first admin created", extra={"user_id": admin.id})
            return
        except EmailTaken:  # another instance created it a moment ago
            account = users.find_by_email(admin.email)
    if account is not None and not account.is_admin:
        users.grant_admin(account.id)
        log.warning("existing account made admin (ADMIN_EMAIL)", extra={"user_id": account.id})
