"""Transactional outbox relay: publish what the service wrote to its outbox, and lose nothing.

Fill in the bodies below, then grade: `make grade EX=outbox`. The task, the rules the grader
checks and hints are in README.md next to this file.
"""

from __future__ import annotations

from exercises.outbox.world import Broker, OutboxEvent, PublishError, Store


class OutboxRelay:
    """Moves events from the outbox (`store`) to the broker, one pass per `relay_once()`.

    - `store.pending(limit)` — up to `limit` events not yet marked sent, oldest first.
    - `broker.publish(event)` — returns once the broker confirmed it; raises `PublishError`
      when it did not (the broker may still have the event: a lost confirm looks the same).
    - `store.mark_sent(event_id)` — the event will not be handed to you again.

    The process running the relay can die between any two of these calls; a new relay is then
    started on the same store and broker.
    """

    def __init__(self, store: Store, broker: Broker, *, batch: int = 10) -> None:
        raise NotImplementedError

    def relay_once(self) -> int:
        """Publish up to `batch` pending events; return how many were confirmed. When a publish
        is not confirmed, the events of that order written after it must wait for the next
        pass: raise `PublishError` (the loop calling you retries later) or return."""
        raise NotImplementedError


__all__ = ["OutboxEvent", "OutboxRelay", "PublishError"]
