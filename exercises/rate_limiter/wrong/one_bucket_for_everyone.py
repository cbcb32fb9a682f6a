"""Wrong on purpose (a test of the grader). breaks: keys_are_independent

One bucket shared by every client: a single noisy client empties it and everyone else is
refused too, the very thing per-client limits are for.
"""

from __future__ import annotations

from exercises.rate_limiter.reference import TokenBucket as Reference


class TokenBucket(Reference):
    def take(self, key: str, cost: int = 1) -> bool:
        return super().take("everyone", cost)  # the bug: the client's key is ignored
