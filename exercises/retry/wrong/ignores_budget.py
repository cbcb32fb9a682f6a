"""Wrong on purpose (a test of the grader). breaks: stays_within_budget

Keeps a budget but never asks it: during an outage every request is tried `attempts` times,
and the struggling dependency gets three times its normal load.
"""

from __future__ import annotations

from exercises.retry.reference import Retry as Reference
from exercises.retry.reference import RetryBudget

__all__ = ["Retry", "RetryBudget"]  # the names the grader needs


class Retry(Reference):
    def _may_retry(self, exc: Exception, idempotent: bool, retry_number: int) -> bool:
        tries_left = retry_number + 1 < self.attempts
        return self._should_retry(exc, idempotent) and tries_left  # the bug: no budget.try_spend()
