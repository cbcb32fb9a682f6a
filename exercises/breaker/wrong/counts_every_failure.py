"""Wrong on purpose (a test of the grader). breaks: closed_passes_calls_through

Counts every failure since it closed, not failures in a row: a success does not reset the
count, so a dependency that fails now and then trips the breaker although it mostly works.
"""

from __future__ import annotations

from exercises.breaker.reference import CircuitBreaker as Reference
from exercises.breaker.reference import CircuitOpenError

__all__ = ["CircuitBreaker", "CircuitOpenError"]  # the names the grader needs


class CircuitBreaker(Reference):
    def _record(self, trial: bool, failed: bool) -> None:
        if trial or failed:
            super()._record(trial, failed)
        # the bug: a success while closed leaves the failure count as it was
