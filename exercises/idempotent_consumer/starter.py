"""Idempotent consumer: a message delivered twice changes things once.

Fill in the bodies below, then grade: `make grade EX=idempotent_consumer`. The task, the rules
the grader checks and hints are in README.md next to this file.
"""

from __future__ import annotations

from collections.abc import Callable

from exercises.idempotent_consumer.world import Credit, Message, Store


class IdempotentConsumer:
    """Applies each message's change to the store once, however often it is delivered.

    - `handler(message)` returns the change the message asks for (a `Credit`).
    - `store.seen(id)`, `store.remember(id)`, `store.apply(change)`, and
      `store.apply_once(id, change)`: the change and the record of the id in one atomic write,
      skipped (returns False) when the id is recorded already.
    - `ack()` tells the broker this delivery is handled; an unacked delivery comes back.

    The process can die between any two calls; a new consumer on the same store then gets the
    unacked message again. A second consumer shares the store and may be handed a copy of the
    message you are handling at the same moment.
    """

    def __init__(self, store: Store, handler: Callable[[Message], Credit]) -> None:
        raise NotImplementedError

    def on_message(self, message: Message, ack: Callable[[], None]) -> None:
        """Handle one delivery of `message`, then `ack()` it."""
        raise NotImplementedError
