"""Wrong: records the message id first, then applies the change. A consumer that dies between
the two leaves the id recorded and the change never made: the redelivery is skipped as a
duplicate, and the message is lost.

breaks: none_lost
"""

from __future__ import annotations

from collections.abc import Callable

from exercises.idempotent_consumer.reference import IdempotentConsumer as Reference
from exercises.idempotent_consumer.world import Message


class IdempotentConsumer(Reference):
    def on_message(self, message: Message, ack: Callable[[], None]) -> None:
        if not self.store.seen(message.id):
            self.store.remember(message.id)
            self.store.apply(self.handler(message))
        ack()
