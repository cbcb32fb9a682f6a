"""What the notifications service consumes: every event of every domain (it publishes none).

One queue, `notifications.events`, bound with `#` to each domain's exchange. Each event is
stored as a notification, then pushed to its recipient's Socket.IO room.

Delivery is at least once, so the handler is idempotent on the message id: the id is the
notification's unique idempotency key, and only the copy that stored it pushes it. A
redelivered copy stores nothing and pushes nothing. The push is best effort (a recipient may
be offline, or the process may die between the insert and the push); the stored notification
is what counts: `GET /notifications` shows it either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from patterns.bus import Binding, Handler, Message
from services.notifications.domain import notification_for
from services.notifications.store import NotificationStore

log = logging.getLogger(__name__)

QUEUE = "notifications.events"
BINDINGS: tuple[Binding, ...] = tuple(
    (exchange, "#") for exchange in ("users", "products", "inventory", "payments", "orders"))

Push = Callable[[str, dict[str, Any]], None]  # (room, notification)


def notify_on_event(store: NotificationStore, push: Push) -> Handler:
    """The bus handler: store the event's notification once, push it to its room."""

    def notify(message: Message) -> None:
        draft = notification_for(message.routing_key, message.body)
        notification = store.record(message.id, draft)
        if notification is None:
            log.info("event already notified", extra={
                "message_id": message.id, "type": message.routing_key})
            return
        push(draft.recipient, notification)
        log.info("notification stored and pushed", extra={
            "notification_id": notification["id"], "type": draft.type,
            "room": draft.recipient, "message_id": message.id})

    return notify
