"""Wrong: treats a lost answer like a refusal ("it failed, so nothing to undo"). When the
participant did charge the card before the answer was lost, the saga ends compensated with
the money still taken.

breaks: lost_answer_compensated
"""

from __future__ import annotations

from typing import Any

from exercises.saga.reference import Orchestrator as Reference
from exercises.saga.world import AnswerLost, StepFailed


class Orchestrator(Reference):
    def _forward(self, saga_id: str, record: dict[str, Any]) -> None:
        states = record["steps"]
        for step in self.steps:
            if states[step.name] == "done":
                continue
            try:
                step.action(f"{saga_id}:{step.name}")
            except (StepFailed, AnswerLost):
                states[step.name] = "failed"  # should be "uncertain" for AnswerLost
                record["status"] = "compensating"
                self.log.save(saga_id, record)
                return
            states[step.name] = "done"
            self.log.save(saga_id, record)
        record["status"] = "completed"
        self.log.save(saga_id, record)
