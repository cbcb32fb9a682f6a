"""Wrong on purpose (a test of the grader). breaks: refills_at_the_rate

A fixed-window counter, not a bucket: `capacity` requests per window of capacity/rate
seconds, the count reset at each window's start. At a window's edge a client gets two
full bursts back to back.
"""

from __future__ import annotations

from exercises.rate_limiter.reference import TokenBucket as Reference


class TokenBucket(Reference):
    def _tokens(self, key: str, now: float) -> float:
        tokens, updated = self._buckets.get(key, (float(self.capacity), now))
        window = self.capacity / self.refill_per_second
        # the bug: nothing comes back during a window, then everything at once at its start
        return float(self.capacity) if now // window != updated // window else tokens
