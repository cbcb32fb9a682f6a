"""Reference solution: log before acting, run the steps in order, compensate the steps done (or
maybe done) in reverse, and let `recover()` pick up from the log after a crash."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exercises.saga.world import AnswerLost, SagaLog, Step, StepFailed


class Orchestrator:
    def __init__(self, log: SagaLog, steps: Sequence[Step]) -> None:
        self.log = log
        self.steps = steps

    def run(self, saga_id: str) -> str:
        record = self.log.load(saga_id)
        if record is None:
            record = {"status": "running", "steps": {step.name: "pending" for step in self.steps}}
            self.log.save(saga_id, record)  # before the first action: a crash leaves a trace
        return self._drive(saga_id, record)

    def recover(self) -> None:
        for saga_id in self.log.unfinished():
            record = self.log.load(saga_id)
            if record is not None:
                self._drive(saga_id, record)

    def _drive(self, saga_id: str, record: dict[str, Any]) -> str:
        if record["status"] == "running":
            self._forward(saga_id, record)
        if record["status"] == "compensating":
            self._compensate(saga_id, record)
        return record["status"]

    def _forward(self, saga_id: str, record: dict[str, Any]) -> None:
        states = record["steps"]
        for step in self.steps:
            if states[step.name] == "done":
                continue
            try:
                step.action(f"{saga_id}:{step.name}")
            except (StepFailed, AnswerLost) as error:
                # A lost answer may hide a step that happened: compensate it with the others.
                states[step.name] = "uncertain" if isinstance(error, AnswerLost) else "failed"
                record["status"] = "compensating"
                self.log.save(saga_id, record)
                return
            states[step.name] = "done"
            self.log.save(saga_id, record)
        record["status"] = "completed"
        self.log.save(saga_id, record)

    def _compensate(self, saga_id: str, record: dict[str, Any]) -> None:
        states = record["steps"]
        for step in reversed(self.steps):
            if states[step.name] not in ("done", "uncertain"):
                continue
            try:
                step.compensation(f"{saga_id}:{step.name}:undo")
            except AnswerLost:
                return  # still compensating: the next recover() tries again, same key
            states[step.name] = "compensated"
            self.log.save(saga_id, record)
        record["status"] = "compensated"
        self.log.save(saga_id, record)
