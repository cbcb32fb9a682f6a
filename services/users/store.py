"""The users collection (pymongo): one document per account, `_id` = the user id.

The email is stored normalised (trimmed, lower case) under a unique index, so two sign-ups with
`Ann@x.io` and `ann@x.io` cannot both win, however close together they arrive: the database
decides, not a read-then-write in our code. The collection is also the outbox of the events
that announce its changes (`patterns.outbox`).
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import DuplicateKeyError

from patterns.api import Conflict
from patterns.outbox import Event, Outbox
from patterns.clock import stored_time as _moment
from services.users.domain import ADMIN, EmailTaken, User

FIELDS = ("email", "name", "password_hash", "roles", "created_at", "updated_at",
          "password_changed_at")


class UserStore:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.collection = outbox.collection
        self.collection.create_index("email", unique=True)

    def add(self, user: User, *events: Event) -> None:
        """Store a new account with the events announcing it; `EmailTaken` if the address is."""
        try:
            self.outbox.insert(_document(user), *events)
        except DuplicateKeyError:
            raise EmailTaken("an account with this email already exists") from None

    def find(self, user_id: str) -> User | None:
        return _user(self.collection.find_one({"_id": user_id}, _PROJECTION))

    def find_by_email(self, email: str) -> User | None:
        return _user(self.collection.find_one({"email": email}, _PROJECTION))

    def save_name(self, user: User) -> None:
        self.collection.update_one({"_id": user.id}, {"$set": {
            "name": user.name, "updated_at": user.updated_at}})

    def save_password(self, user: User, previous_hash: str, *events: Event) -> None:
        """Store the new hash, unless the password changed since `previous_hash` was read
        (two changes racing): then `Conflict`, and nothing is written."""
        changed = self.outbox.update(
            {"_id": user.id, "password_hash": previous_hash},
            {"$set": {"password_hash": user.password_hash, "updated_at": user.updated_at,
                      "password_changed_at": user.password_changed_at}},
            *events)
        if not changed:
            raise Conflict("the password was changed by another request; try again")

    def grant_admin(self, user_id: str) -> None:
        self.collection.update_one({"_id": user_id}, {"$addToSet": {"roles": ADMIN}})


_PROJECTION = {field: 1 for field in FIELDS}


def _document(user: User) -> dict[str, Any]:
    return {"_id": user.id, "email": user.email, "name": user.name,
            "password_hash": user.password_hash, "roles": list(user.roles),
            "created_at": user.created_at, "updated_at": user.updated_at,
            "password_changed_at": user.password_changed_at}


def _user(document: dict[str, Any] | None) -> User | None:
    if document is None:
        return None
    return User(id=document["_id"], email=document["email"], name=document["name"],
                password_hash=document["password_hash"], roles=tuple(document["roles"]),
                created_at=_moment(document["created_at"]),
                updated_at=_moment(document["updated_at"]),
                password_changed_at=_moment(document.get("password_changed_at")))
