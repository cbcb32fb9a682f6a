"""Wrong on purpose (a test of the grader). breaks: retries_only_transient_errors

Retries any exception, a 400 included: the same bad request is sent again and again and
gets the same answer, only later.
"""

from __future__ import annotations

from exercises.retry.reference import Retry as Reference
from exercises.retry.reference import RetryBudget

__all__ = ["Retry", "RetryBudget"]  # the names the grader needs


class Retry(Reference):
    def _should_retry(self, exc: Exception, idempotent: bool) -> bool:
        return idempotent  # the bug: is_transient(exc) is never asked
