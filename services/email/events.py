"""What the email service consumes (it publishes nothing): one queue, `email.events`.

Each event in `BINDINGS` becomes one stored email. The handler is idempotent through the
mailbox's unique `message_id`: a redelivered event is acked and stores nothing.

When an event names only a `user_id` (orders, payments), the address comes from the users
service. If users is down, the lookup raises, the bus puts the message in `email.events.retry`
and it comes back `RETRY_DELAY` seconds later: the email goes out once users is back, which is
the point of doing this work asynchronously. After `MAX_ATTEMPTS` failures (an outage longer
than about a minute, or an event missing a fact) it goes to `email.events.dead` for an operator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from patterns.bus import Binding, Handler, Message
from services.email import domain
from services.email.domain import Recipient
from services.email.store import Mailbox

log = logging.getLogger(__name__)

QUEUE = "email.events"
BINDINGS: tuple[Binding, ...] = (
    ("users", "user.registered"),
    ("users", "user.password_changed"),
    ("orders", "order.confirmed"),
    ("orders", "order.cancelled"),
    ("payments", "payment.refunded"),
)
MAX_ATTEMPTS = 30
RETRY_DELAY = 2.0  # seconds: 30 attempts ride out about a minute of users being unreachable


def email_sender(mailbox: Mailbox, find_user: Callable[[str], Recipient],
                 now: Callable[[], datetime]) -> Handler:
    """The bus handler: store the email an event calls for, once per event."""

    def send_email_for(message: Message) -> None:
        if mailbox.has_email_for(message.id):  # spares the users lookup on a redelivery
            log.info("duplicate event, email already sent", extra={"message_id": message.id})
            return
        payload = message.body
        if not isinstance(payload, dict):
            raise domain.MalformedEvent("the event body is not a JSON object")
        recipient = domain.recipient_in(payload) or find_user(domain.user_id_of(payload))
        email = domain.compose(message.routing_key, payload, recipient,
                               message_id=message.id, now=now())
        if mailbox.add(email):
            log.info("email sent", extra={"email_id": email.id, "event_type": email.event_type,
                                          "message_id": message.id})
        else:
            log.info("duplicate event, email already sent", extra={"message_id": message.id})

    return send_email_for
