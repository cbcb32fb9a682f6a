"""Wrong: writes the saga log only once the first step is done. An orchestrator that dies
right after the first action leaves stock reserved and no record of it: `recover()` finds
nothing to finish and nothing to undo.

breaks: all_or_nothing
"""

from __future__ import annotations

from exercises.saga.reference import Orchestrator as Reference
from exercises.saga.world import AnswerLost, StepFailed


class Orchestrator(Reference):
    def run(self, saga_id: str) -> str:
        record = self.log.load(saga_id)
        if record is None:
            record = {"status": "running", "steps": {step.name: "pending" for step in self.steps}}
            first = self.steps[0]
            try:
                first.action(f"{saga_id}:{first.name}")
                record["steps"][first.name] = "done"
            except (StepFailed, AnswerLost) as error:
                record["steps"][first.name] = ("uncertain" if isinstance(error, AnswerLost)
                                               else "failed")
                record["status"] = "compensating"
            self.log.save(saga_id, record)
        return self._drive(saga_id, record)
