"""Wrong on purpose (a test of the grader). breaks: never_retries_non_idempotent

Retries every call, idempotent or not: a payment that timed out after the bank charged the
card is sent again, and the customer pays twice.
"""

from __future__ import annotations

from exercises.retry.reference import Retry as Reference
from exercises.retry.reference import RetryBudget, is_transient

__all__ = ["Retry", "RetryBudget"]  # the names the grader needs


class Retry(Reference):
    def _should_retry(self, exc: Exception, idempotent: bool) -> bool:
        return is_transient(exc)  # the bug: `idempotent` is never asked
