"""Wrong: remembers the processed ids in a set in memory. A restarted consumer has forgotten
them, and the other consumer never knew them: a redelivery or a duplicate is applied again.

breaks: applied_at_most_once
"""

from __future__ import annotations

from collections.abc import Callable

from exercises.idempotent_consumer.reference import IdempotentConsumer as Reference
from exercises.idempotent_consumer.world import Credit, Message, Store


class IdempotentConsumer(Reference):
    def __init__(self, store: Store, handler: Callable[[Message], Credit]) -> None:
        super().__init__(store, handler)
        self.processed: set[str] = set()

    def on_message(self, message: Message, ack: Callable[[], None]) -> None:
        if message.id not in self.processed:
            self.store.apply(self.handler(message))
            self.processed.add(message.id)
        ack()
