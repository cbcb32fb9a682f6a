"""Token-bucket rate limiter — your implementation. Read README.md first.

Grade it with `make grade EX=rate_limiter` (or let `make learn` regrade it on every save).
"""

from __future__ import annotations

from patterns.clock import Clock


class TokenBucket:
    def __init__(self, capacity: int, refill_per_second: float, clock: Clock) -> None:
        """One bucket per client key, each full (`capacity` tokens) when first seen.

        refill_per_second: tokens given back per second, up to `capacity` and never above.
        clock: `clock.monotonic()` is "now" in seconds (the grader's clock is fake: never
            call time.* yourself).
        """
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        self.clock = clock

    def take(self, key: str, cost: int = 1) -> bool:
        """Allow this request from client `key`: True if its bucket holds at least `cost`
        tokens (take them), False if not (take nothing: a refused request is free)."""
        raise NotImplementedError
