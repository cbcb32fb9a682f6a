"""Token-bucket rate limiter — a reference solution (try starter.py first).

Each client has a bucket of `capacity` tokens, full at first. A request takes `cost` tokens
or, when there are not enough, is refused and takes nothing. Tokens come back at
`refill_per_second`, never above `capacity`. Nothing runs in the background: a bucket is
topped up lazily, for the time since it was last looked at, when the next request arrives.
The full version (thread-safe, headers, a Redis twin) is patterns/ratelimit.py.
"""

from __future__ import annotations

from patterns.clock import Clock


class TokenBucket:
    def __init__(self, capacity: int, refill_per_second: float, clock: Clock) -> None:
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, updated at)

    def take(self, key: str, cost: int = 1) -> bool:
        now = self.clock.monotonic()
        tokens = self._tokens(key, now)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        return allowed

    def _tokens(self, key: str, now: float) -> float:
        """The tokens in `key`'s bucket at `now`: a new client's bucket is full; otherwise
        what was left, plus what came back since it was last updated, up to capacity."""
        tokens, updated = self._buckets.get(key, (float(self.capacity), now))
        return min(self.capacity, tokens + (now - updated) * self.refill_per_second)
