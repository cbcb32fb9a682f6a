"""Wrong on purpose (a test of the grader). breaks: delays_are_jittered

Exponential backoff without jitter: every client that failed at the same moment sleeps the
same time and comes back at the same moment, in waves.
"""

from __future__ import annotations

from exercises.retry.reference import Retry as Reference
from exercises.retry.reference import RetryBudget

__all__ = ["Retry", "RetryBudget"]  # the names the grader needs


class Retry(Reference):
    def _delay(self, retry_number: int) -> float:
        return self._backoff_cap(retry_number)  # the bug: the whole cap, not uniform(0, cap)
