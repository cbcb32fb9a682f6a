"""Wrong on purpose (a test of the grader). breaks: half_open_after_recovery_timeout

Once open, it stays open forever: a dependency that recovers is never called again.
"""

from __future__ import annotations

from exercises.breaker.reference import CircuitBreaker as Reference
from exercises.breaker.reference import CircuitOpenError

__all__ = ["CircuitBreaker", "CircuitOpenError"]  # the names the grader needs


class CircuitBreaker(Reference):
    @property
    def state(self) -> str:
        return self._state  # the bug: the recovery timeout is never looked at
