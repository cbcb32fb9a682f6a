"""Wrong: when a publish is not confirmed, takes the event out of the outbox anyway ("it
failed, log it and move on") and carries on with the batch. The broker never had it.

breaks: none_lost, sent_only_after_confirm
"""

from __future__ import annotations

from exercises.outbox.reference import OutboxRelay as Reference
from exercises.outbox.world import PublishError


class OutboxRelay(Reference):
    def relay_once(self) -> int:
        sent = 0
        for event in self.store.pending(self.batch):
            try:
                self.broker.publish(event)
                sent += 1
            except PublishError:
                pass  # "could not publish it; an alert will tell someone"
            self.store.mark_sent(event.id)
        return sent
