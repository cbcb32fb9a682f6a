"""Reference solution: the change and the record of the message id in one atomic write, then
the ack. A duplicate finds its id recorded, changes nothing, and is acked all the same."""

from __future__ import annotations

from collections.abc import Callable

from exercises.idempotent_consumer.world import Credit, Message, Store


class IdempotentConsumer:
    def __init__(self, store: Store, handler: Callable[[Message], Credit]) -> None:
        self.store = store
        self.handler = handler

    def on_message(self, message: Message, ack: Callable[[], None]) -> None:
        self.store.apply_once(message.id, self.handler(message))
        ack()  # after the write: a crash before it means a redelivery, which changes nothing
