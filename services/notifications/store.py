"""The notifications collection: stored once per event, read by their recipients.

One document per notification, `_id` = `ntf_<12 hex>`. The event's message id is stored with a
unique index: a redelivered event collides with its first copy, so storing a notification and
recording that its event was handled are one atomic insert.

Per the embedded MongoDB rules: updates address one document by `_id` (or a whole inbox with
`update_many`), and `read` is read back through `bool()`, since a `True` written by `$set`
comes back from nx-27017 as `1`. For the same reason `read_at` is stored as ISO 8601 text:
nx-27017 turns a datetime written by `$set` into text of its own format (`created_at`, written
by the insert, stays a datetime).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from patterns.api import NotFound
from patterns.paging import read_page
from services.notifications.domain import Draft

Clock = Callable[[], datetime]


def new_notification_id() -> str:
    return f"ntf_{secrets.token_hex(6)}"


def _iso(moment: datetime) -> str:
    # pymongo gives back naive datetimes; what we stored was UTC.
    return moment.replace(tzinfo=UTC).isoformat(timespec="milliseconds")


def public(document: dict[str, Any]) -> dict[str, Any]:
    """A notification as the API and the Socket.IO push show it."""
    return {
        "id": document["_id"],
        "user_id": document["user_id"],
        "type": document["type"],
        "title": document["title"],
        "message": document["message"],
        "data": document["data"],
        "read": bool(document["read"]),
        "created_at": _iso(document["created_at"]),
        "read_at": document["read_at"],
    }


class NotificationStore:
    def __init__(self, collection: Collection, now: Clock = lambda: datetime.now(UTC),
                 new_id: Callable[[], str] = new_notification_id) -> None:
        self.collection = collection
        self.now = now
        self.new_id = new_id
        collection.create_index("message_id", unique=True)
        collection.create_index([("recipient", 1), ("created_at", DESCENDING)])

    def record(self, message_id: str, draft: Draft) -> dict[str, Any] | None:
        """Store the notification event `message_id` makes; None if it was stored before."""
        document = {
            "_id": self.new_id(), "message_id": message_id, "recipient": draft.recipient,
            "user_id": draft.user_id, "type": draft.type, "title": draft.title,
            "message": draft.message, "data": draft.data, "read": False,
            "created_at": self.now(), "read_at": None,
        }
        try:
            self.collection.insert_one(document)
        except DuplicateKeyError:
            return None
        return public(document)

    def page_for(self, rooms: list[str], *, unread_only: bool, page: int,
                 limit: int) -> dict[str, Any]:
        """One page of a reader's notifications, newest first, with the total that match."""
        query: dict[str, Any] = {"recipient": {"$in": rooms}}
        if unread_only:
            query["read"] = False
        found = read_page(self.collection, query,
                          sort=[("created_at", DESCENDING), ("_id", DESCENDING)],
                          skip=(page - 1) * limit, limit=limit)
        return {"items": [public(document) for document in found.items], "page": page,
                "limit": limit, "total": found.total}

    def mark_read(self, notification_id: str, rooms: list[str]) -> dict[str, Any]:
        """Mark one of the reader's notifications read (again: no change). 404 if not theirs."""
        document = self.collection.find_one({"_id": notification_id})
        if document is None or document["recipient"] not in rooms:
            # Someone else's notification is as invisible as a missing one.
            raise NotFound(f"no notification {notification_id!r}")
        if not bool(document["read"]):
            read_at = _iso(self.now())
            self.collection.update_one({"_id": notification_id},
                                       {"$set": {"read": True, "read_at": read_at}})
            document.update(read=True, read_at=read_at)
        return public(document)

    def mark_all_read(self, rooms: list[str]) -> int:
        """Mark every unread notification of the reader read; how many changed."""
        result = self.collection.update_many(
            {"recipient": {"$in": rooms}, "read": False},
            {"$set": {"read": True, "read_at": _iso(self.now())}})
        return result.modified_count
