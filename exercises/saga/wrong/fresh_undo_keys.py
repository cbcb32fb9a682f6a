"""Wrong: retries a compensation whose answer was lost, but with a new idempotency key each
time, so a refund that did go through the first time is paid out twice.

breaks: compensated_at_most_once
"""

from __future__ import annotations

import itertools
from typing import Any

from exercises.saga.reference import Orchestrator as Reference
from exercises.saga.world import AnswerLost


class Orchestrator(Reference):
    attempts = itertools.count()

    def _compensate(self, saga_id: str, record: dict[str, Any]) -> None:
        states = record["steps"]
        for step in reversed(self.steps):
            if states[step.name] not in ("done", "uncertain"):
                continue
            while True:
                try:
                    step.compensation(f"{saga_id}:{step.name}:undo:{next(self.attempts)}")
                    break
                except AnswerLost:
                    continue  # try again at once
            states[step.name] = "compensated"
            self.log.save(saga_id, record)
        record["status"] = "compensated"
        self.log.save(saga_id, record)
