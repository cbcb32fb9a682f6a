"""Wrong: acks as soon as the message arrives ("so the broker does not send it again"), then
applies it. A consumer that dies in between has told the broker the message is handled when
it is not: nobody will ever apply it.

breaks: ack_after_apply, none_lost
"""

from __future__ import annotations

from collections.abc import Callable

from exercises.idempotent_consumer.reference import IdempotentConsumer as Reference
from exercises.idempotent_consumer.world import Message


class IdempotentConsumer(Reference):
    def on_message(self, message: Message, ack: Callable[[], None]) -> None:
        ack()
        self.store.apply_once(message.id, self.handler(message))
