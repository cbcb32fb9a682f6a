"""Saga orchestrator: one order across several services, undone step by step when it fails,
and finished after a crash from what its log says.

Fill in the bodies below, then grade: `make grade EX=saga`. The task, the rules the grader
checks and hints are in README.md next to this file.
"""

from __future__ import annotations

from collections.abc import Sequence

from exercises.saga.world import AnswerLost, SagaLog, Step, StepFailed


class Orchestrator:
    """Runs a saga's steps in order and compensates them in reverse when one fails.

    - `step.action(key)` with key `"<saga id>:<step name>"`; `step.compensation(key)` with
      `"<saga id>:<step name>:undo"`. Participants remember keys: a call repeated with the same
      key does nothing twice.
    - An action raises `StepFailed` (refused: nothing happened) or `AnswerLost` (no answer: it
      may have happened). A compensation may raise `AnswerLost` too.
    - `log.save(saga_id, {"status": ..., "steps": {name: state}})` survives a crash;
      `log.load(saga_id)` and `log.unfinished()` read it back. Statuses: running, completed,
      compensating, compensated. Step states: pending, done, failed, uncertain, compensated.

    The process can die between any two calls; a new Orchestrator on the same log then calls
    `recover()`.
    """

    def __init__(self, log: SagaLog, steps: Sequence[Step]) -> None:
        raise NotImplementedError

    def run(self, saga_id: str) -> str:
        """Run the saga as far as it goes; return its status (completed, compensated, or
        compensating if a compensation could not be done yet)."""
        raise NotImplementedError

    def recover(self) -> None:
        """Finish every saga the log says is running or compensating."""
        raise NotImplementedError


__all__ = ["AnswerLost", "Orchestrator", "StepFailed"]
