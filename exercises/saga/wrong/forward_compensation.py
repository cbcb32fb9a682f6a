"""Wrong: undoes the steps in the order they ran. The stock is released while the payment is
still captured, and a compensation that relies on a later step's undo (cancel the courier
before refunding the shipping fee) sees the world in the wrong state.

breaks: compensate_in_reverse
"""

from __future__ import annotations

from typing import Any

from exercises.saga.reference import Orchestrator as Reference
from exercises.saga.world import AnswerLost


class Orchestrator(Reference):
    def _compensate(self, saga_id: str, record: dict[str, Any]) -> None:
        states = record["steps"]
        for step in self.steps:  # forward, not reversed
            if states[step.name] not in ("done", "uncertain"):
                continue
            try:
                step.compensation(f"{saga_id}:{step.name}:undo")
            except AnswerLost:
                return
            states[step.name] = "compensated"
            self.log.save(saga_id, record)
        record["status"] = "compensated"
        self.log.save(saga_id, record)
