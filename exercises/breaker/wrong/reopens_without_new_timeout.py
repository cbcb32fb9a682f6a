"""Wrong on purpose (a test of the grader). breaks: trial_outcome_decides

A failed trial opens the circuit again but keeps the old opening time, so the recovery
timeout has already passed and the very next call is another trial: no rest for the
dependency at all.
"""

from __future__ import annotations

from exercises.breaker.reference import CircuitBreaker as Reference
from exercises.breaker.reference import CircuitOpenError

__all__ = ["CircuitBreaker", "CircuitOpenError"]  # the names the grader needs


class CircuitBreaker(Reference):
    def _record(self, trial: bool, failed: bool) -> None:
        if trial and failed:
            self._trial_running = False
            self._state = "open"  # the bug: _opened_at is not moved to now
            return
        super()._record(trial, failed)
