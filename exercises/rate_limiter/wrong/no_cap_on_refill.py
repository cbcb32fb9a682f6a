"""Wrong on purpose (a test of the grader). breaks: refill_stops_at_capacity

Refills without a ceiling: a client quiet for an hour saves up thousands of tokens and may
then fire them all at once, a burst far above `capacity`.
"""

from __future__ import annotations

from exercises.rate_limiter.reference import TokenBucket as Reference


class TokenBucket(Reference):
    def _tokens(self, key: str, now: float) -> float:
        tokens, updated = self._buckets.get(key, (float(self.capacity), now))
        return tokens + (now - updated) * self.refill_per_second  # the bug: no min(capacity, …)
