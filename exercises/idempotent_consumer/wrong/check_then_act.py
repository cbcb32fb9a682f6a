"""Wrong: checks whether the id is recorded, applies, then records it: two writes where one is
needed. A consumer that dies between them, or a second consumer handed the same message in
that moment, applies the message twice.

breaks: applied_at_most_once
"""

from __future__ import annotations

from collections.abc import Callable

from exercises.idempotent_consumer.reference import IdempotentConsumer as Reference
from exercises.idempotent_consumer.world import Message


class IdempotentConsumer(Reference):
    def on_message(self, message: Message, ack: Callable[[], None]) -> None:
        if not self.store.seen(message.id):
            self.store.apply(self.handler(message))
            self.store.remember(message.id)
        ack()
