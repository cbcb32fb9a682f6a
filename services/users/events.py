"""What the users service publishes, on the `users` exchange (it consumes nothing).

    user.registered         user_id, email, name, occurred_at   → notifications, email (welcome)
    user.password_changed   user_id, email, occurred_at         → notifications, email (notice)

Both leave through the outbox, written in the same document update as the change they announce.
No event carries a password or its hash.
"""

from __future__ import annotations

from datetime import datetime

from patterns.outbox import Event
from services.users.domain import User, iso

EXCHANGE = "users"


def user_registered(user: User) -> Event:
    return Event(EXCHANGE, "user.registered", {
        "user_id": user.id, "email": user.email, "name": user.name,
        "occurred_at": iso(user.created_at)})


def password_changed(user: User, at: datetime) -> Event:
    return Event(EXCHANGE, "user.password_changed", {
        "user_id": user.id, "email": user.email, "occurred_at": iso(at)})
