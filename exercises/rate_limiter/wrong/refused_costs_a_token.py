"""Wrong on purpose (a test of the grader). breaks: refills_at_the_rate

Takes the tokens even when it refuses, so the bucket goes below zero: a client that keeps
trying while limited digs itself deeper and stays locked out long after the rate allows.
"""

from __future__ import annotations

from exercises.rate_limiter.reference import TokenBucket as Reference


class TokenBucket(Reference):
    def take(self, key: str, cost: int = 1) -> bool:
        allowed = super().take(key, cost)
        if not allowed:
            tokens, updated = self._buckets[key]
            self._buckets[key] = (tokens - cost, updated)  # the bug: a refusal is paid for too
        return allowed
