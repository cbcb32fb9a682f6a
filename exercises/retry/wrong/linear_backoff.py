"""Wrong on purpose (a test of the grader). breaks: backoff_grows_exponentially

Jittered, but the cap grows linearly (base_delay * (n + 1)): during a long outage clients
keep coming back almost as often as at the start.
"""

from __future__ import annotations

from exercises.retry.reference import Retry as Reference
from exercises.retry.reference import RetryBudget

__all__ = ["Retry", "RetryBudget"]  # the names the grader needs


class Retry(Reference):
    def _backoff_cap(self, retry_number: int) -> float:
        return min(self.max_delay, self.base_delay * (retry_number + 1))  # the bug: not 2**n
