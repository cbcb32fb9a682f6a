"""The email service: turns events into emails, stores each one "sent", and shows them.

    GET /api/v1/emails        (token) ?to= &page= &limit=  → {items, page, limit, total}
                              an admin sees every email (`to` filters); anyone else only the
                              emails sent to the address in their token
    GET /api/v1/emails/<id>   (token: an admin, or the recipient) → email

Nothing is handed to an SMTP server in this lab: "sending" an email is storing it, with its
recipient, subject, text body, the event that caused it and the ids it is about.

To address order and payment emails it asks the users service (`GET /api/v1/users/<id>`) with a
short-lived service token of its own. The token carries the `admin` role because that is the
only role users knows; a real system would give services a narrower scope (say `users:read`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

from flask import Flask

from patterns.api import PAGE_QUERY, NotFound
from patterns.auth import Claims
from patterns.service import ServiceKit
from patterns.settings import ServiceSettings
from services.email import domain, events
from services.email.domain import Recipient
from services.email.store import Mailbox

log = logging.getLogger(__name__)

SERVICE_SUBJECT = "svc:email"
SERVICE_TOKEN_TTL = 60  # seconds: issued per lookup, so it never needs to live long
# The consumer is the only caller of users and calls it one message at a time, so a short
# pause is enough to spare a struggling users service.
USERS_BREAKER = {"recovery_timeout": 10.0}

EMAIL = {
    "type": "object",
    "required": ["id", "to", "subject", "body", "event_type", "message_id", "related",
                 "created_at"],
    "properties": {
        "id": {"type": "string"}, "to": {"type": "string"}, "subject": {"type": "string"},
        "body": {"type": "string"}, "event_type": {"type": "string"},
        "message_id": {"type": "string"}, "created_at": {"type": "string"},
        "related": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
EMAIL_PAGE = {
    "type": "object", "required": ["items", "page", "limit", "total"],
    "properties": {"items": {"type": "array", "items": EMAIL}, "page": {"type": "integer"},
                   "limit": {"type": "integer"}, "total": {"type": "integer"}},
}
LIST_QUERY = {"to": {"type": "string", "minLength": 1, "maxLength": 254}, **PAGE_QUERY}


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: ServiceSettings, *, now: Callable[[], datetime] = utc_now) -> Flask:
    kit = ServiceKit(settings, title="email",
                     description="Every email the system sends, stored instead of mailed.")
    mailbox = Mailbox(kit.collection("emails"))
    users = kit.peer("users", **USERS_BREAKER)

    def find_user(user_id: str) -> Recipient:
        """The user's address and name, from the users service; raises if it cannot answer."""
        token = kit.tokens.issue(SERVICE_SUBJECT, roles=["admin"], ttl=SERVICE_TOKEN_TTL)
        user = users.request("GET", f"/api/v1/users/{quote(user_id, safe='')}",
                             headers={"Authorization": f"Bearer {token}"}).json()
        return Recipient(domain.normalise_address(user["email"]), user.get("name"))

    kit.consume(events.QUEUE, events.email_sender(mailbox, find_user, now), *events.BINDINGS,
                max_attempts=events.MAX_ATTEMPTS, retry_delay=events.RETRY_DELAY)

    @kit.api.get("/api/v1/emails", auth=True, query=LIST_QUERY,
                 summary="Emails sent: all for an admin, one's own otherwise",
                 response=EMAIL_PAGE)
    def list_emails(user: Claims, query: dict) -> dict:
        to = domain.mailbox_of(user, query.get("to"))
        page, limit = query["page"], query["limit"]
        emails, total = mailbox.page(to, page=page, limit=limit)
        return {"items": [email.view() for email in emails], "page": page, "limit": limit,
                "total": total}

    @kit.api.get("/api/v1/emails/<email_id>", auth=True,
                 summary="One email (an admin, or its recipient)", response=EMAIL)
    def get_email(email_id: str, user: Claims) -> dict:
        email = mailbox.get(email_id)
        if email is None:
            raise NotFound(f"no email {email_id}")
        domain.require_reader(user, email)
        return email.view()

    kit.start()
    return kit.app
