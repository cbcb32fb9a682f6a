"""Wrong: `recover()` starts an interrupted saga over from its first step, as if nothing had
been logged. Participants with idempotency keys may shrug it off; others reserve the stock or
charge the card a second time.

breaks: no_step_rerun
"""

from __future__ import annotations

from exercises.saga.reference import Orchestrator as Reference


class Orchestrator(Reference):
    def recover(self) -> None:
        for saga_id in self.log.unfinished():
            record = self.log.load(saga_id)
            if record is not None and record["status"] == "running":
                record["steps"] = {step.name: "pending" for step in self.steps}
            if record is not None:
                self._drive(saga_id, record)
