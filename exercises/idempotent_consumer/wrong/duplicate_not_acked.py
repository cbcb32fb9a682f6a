"""Wrong: acks only the messages it applied. A duplicate is skipped, rightly, but never acked,
so the broker keeps it (and hands it out again after the next reconnect, forever).

breaks: every_delivery_acked
"""

from __future__ import annotations

from collections.abc import Callable

from exercises.idempotent_consumer.reference import IdempotentConsumer as Reference
from exercises.idempotent_consumer.world import Message


class IdempotentConsumer(Reference):
    def on_message(self, message: Message, ack: Callable[[], None]) -> None:
        if self.store.apply_once(message.id, self.handler(message)):
            ack()
