"""The emails collection (pymongo): one document per email "sent", `_id` = the email id.

`message_id` (the id of the event that caused the email) is unique: storing the email and
recording that the event was handled are one insert, so a redelivered event cannot store a
second email, even when two copies are handled at the same moment.
"""

from __future__ import annotations

from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from patterns.paging import read_page
from services.email.domain import Email


class Mailbox:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        collection.create_index("message_id", unique=True)
        collection.create_index([("to", 1), ("created_at", DESCENDING)])

    def has_email_for(self, message_id: str) -> bool:
        return self.collection.find_one({"message_id": message_id}, {"_id": 1}) is not None

    def add(self, email: Email) -> bool:
        """Store the email; False if one was already stored for its event."""
        try:
            self.collection.insert_one(_document(email))
            return True
        except DuplicateKeyError:
            return False

    def get(self, email_id: str) -> Email | None:
        document = self.collection.find_one({"_id": email_id})
        return _email(document) if document is not None else None

    def page(self, to: str | None, *, page: int, limit: int) -> tuple[list[Email], int]:
        """One page of emails, newest first, all or those sent to `to`; and the total."""
        query = {"to": to} if to is not None else {}
        found = read_page(self.collection, query,
                          sort=[("created_at", DESCENDING), ("_id", DESCENDING)],
                          skip=(page - 1) * limit, limit=limit)
        return [_email(document) for document in found.items], found.total


def _document(email: Email) -> dict[str, Any]:
    return {"_id": email.id, "to": email.to, "subject": email.subject, "body": email.body,
            "event_type": email.event_type, "message_id": email.message_id,
            "related": dict(email.related), "created_at": email.created_at}


def _email(document: dict[str, Any]) -> Email:
    return Email(id=document["_id"], to=document["to"], subject=document["subject"],
                 body=document["body"], event_type=document["event_type"],
                 message_id=document["message_id"], created_at=document["created_at"],
                 related=document.get("related") or {})
