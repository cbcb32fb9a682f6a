"""Wrong: publishes every pending event on every pass and never marks any sent ("consumers are
idempotent anyway"): nothing is lost, but every event goes out again and again.

breaks: duplicates_only_after_faults
"""

from __future__ import annotations

from exercises.outbox.reference import OutboxRelay as Reference


class OutboxRelay(Reference):
    def relay_once(self) -> int:
        pending = self.store.pending(self.batch)
        for event in pending:
            self.broker.publish(event)
        return len(pending)
