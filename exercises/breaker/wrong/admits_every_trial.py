"""Wrong on purpose (a test of the grader). breaks: half_open_admits_one_trial

Half-open lets every call through, not one trial: when the timeout ends, the whole waiting
crowd hits the barely recovered dependency at once.
"""

from __future__ import annotations

from exercises.breaker.reference import CircuitBreaker as Reference
from exercises.breaker.reference import CircuitOpenError


class CircuitBreaker(Reference):
    def _admit(self) -> bool:
        state = self.state
        if state == "open":  # the bug: no check for a trial already running
            raise CircuitOpenError("circuit is open")
        return state == "half_open"
