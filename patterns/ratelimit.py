"""Rate limiting: a token bucket per client, so one noisy client cannot starve the others.

Protects against: a client (a buggy script, a retry loop, an abusive user) that sends more than the
service can take, slowing everyone down. Each client key (an IP, a user id, an API key) gets a
bucket of `capacity` tokens that refills at `refill_per_second`; a request takes one token, or is
refused with 429 when the bucket is empty. Bursts up to `capacity` pass; the sustained rate is
`refill_per_second`.

Knobs:

- `capacity` — the largest burst, and the `RateLimit-Limit` clients are told.
- `refill_per_second` — the steady rate allowed.
- `clock` — where time comes from; tests pass a `FakeClock`. The Redis limiter uses the Redis
  server's clock when none is given, so every process agrees on the time.

Two implementations answer the same way:

- `TokenBucket` — in this process, thread-safe. Enough for one gunicorn worker.
- `RedisTokenBucket` — in Redis, shared by every process and replica; each decision is one Lua
  script, so concurrent requests can never both take the last token.
- `token_bucket_from_env()` — the Redis one when `REDIS_URL` is set, else the in-process one.

Each `take(key)` returns a `Decision`; `decision.headers()` gives what clients expect:
`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds until the bucket is full
again) and, when refused, `Retry-After` (seconds until a token is available).

    limiter = TokenBucket(capacity=20, refill_per_second=5)
    decision = limiter.take(client_ip)
    if not decision.allowed:
        return {"error": "too many requests"}, 429, decision.headers()
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import redis

from patterns.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: float  # seconds until the bucket is full again
    retry_after: float  # seconds until this request would be allowed; 0 when allowed

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(math.ceil(self.retry_after))
        return headers


def _decide(capacity: int, rate: float, cost: int, tokens: float, allowed: bool) -> Decision:
    """Turn a bucket's level after the request into what the client is told."""
    return Decision(
        allowed=allowed,
        limit=capacity,
        remaining=math.floor(tokens),
        reset=(capacity - tokens) / rate,
        retry_after=0.0 if allowed else (cost - tokens) / rate,
    )


def _check(capacity: int, refill_per_second: float) -> None:
    if capacity < 1 or refill_per_second <= 0:
        raise ValueError("capacity must be >= 1 and refill_per_second > 0")


_SWEEP_ABOVE_KEYS = 10_000


class TokenBucket:
    """Token buckets kept in this process's memory, one per key."""

    def __init__(
        self, capacity: int, refill_per_second: float, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        _check(capacity, refill_per_second)
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated at)
        self._lock = threading.Lock()

    def take(self, key: str, cost: int = 1) -> Decision:
        with self._lock:
            now = self._clock.monotonic()
            tokens, updated = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - updated) * self.refill_per_second)
            allowed = tokens >= cost
            if allowed:
                tokens -= cost
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > _SWEEP_ABOVE_KEYS:
                self._forget_full_buckets(now)
        return _decide(self.capacity, self.refill_per_second, cost, tokens, allowed)

    def _forget_full_buckets(self, now: float) -> None:
        """A bucket that has refilled is the same as no bucket: drop those to bound memory."""
        self._buckets = {
            key: (tokens, updated)
            for key, (tokens, updated) in self._buckets.items()
            if tokens + (now - updated) * self.refill_per_second < self.capacity
        }


# KEYS[1]: the bucket. ARGV: capacity, refill per second, cost, now ("" = use the server's clock).
# The bucket expires once it would be full again: an absent bucket *is* a full one.
_TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(bucket[1]) or capacity
local updated = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
                           'updated', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((capacity - tokens) / rate * 1000)))
return {allowed, string.format('%.17g', tokens)}
"""


class RedisTokenBucket:
    """Token buckets kept in Redis, shared by every process that uses the same `prefix`."""

    def __init__(
        self,
        client: redis.Redis,
        capacity: int,
        refill_per_second: float,
        *,
        prefix: str = "ratelimit:",
        clock: Clock | None = None,
    ) -> None:
        _check(capacity, refill_per_second)
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        self.prefix = prefix
        self._clock = clock
        self._take = client.register_script(_TAKE_SCRIPT)

    def take(self, key: str, cost: int = 1) -> Decision:
        now = "" if self._clock is None else self._clock.monotonic()
        allowed, tokens = self._take(
            keys=[self.prefix + key], args=[self.capacity, self.refill_per_second, cost, now]
        )
        return _decide(self.capacity, self.refill_per_second, cost, float(tokens), allowed == 1)


def token_bucket_from_env(
    capacity: int, refill_per_second: float, *, prefix: str = "ratelimit:"
) -> TokenBucket | RedisTokenBucket:
    """Shared limits in Redis when `REDIS_URL` is set; otherwise limits in this process."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return TokenBucket(capacity, refill_per_second)
    return RedisTokenBucket(redis.Redis.from_url(url), capacity, refill_per_second, prefix=prefix)
