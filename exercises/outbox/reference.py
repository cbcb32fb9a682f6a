"""Reference solution: publish pending events oldest first, mark each sent only after its
confirm, and stop at the first event without a confirm so that nothing overtakes it."""

from __future__ import annotations

from exercises.outbox.world import Broker, Store


class OutboxRelay:
    def __init__(self, store: Store, broker: Broker, *, batch: int = 10) -> None:
        self.store = store
        self.broker = broker
        self.batch = batch

    def relay_once(self) -> int:
        sent = 0
        for event in self.store.pending(self.batch):
            self.broker.publish(event)  # PublishError: this one and all after it wait
            self.store.mark_sent(event.id)
            sent += 1
        return sent
