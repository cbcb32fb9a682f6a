"""Retries: ride out a brief blip without turning an outage into a retry storm.

Protects against: a request lost to a transient fault (a dropped connection, a restart, a 503 while
a pod is replaced) that would have worked a moment later. Retrying fixes that, but careless retries
cause failures of their own: clients that retry in lock-step hit the recovering service in waves,
and when a dependency is really down every client multiplies its load by the number of attempts.
The knobs:

- `attempts` (3) — the first try plus at most `attempts - 1` retries.
- `base_delay` (0.05 s), `max_delay` (2 s) — exponential backoff with *full jitter*: before retry
  number `n` (0 for the first) wait `rng.uniform(0, min(max_delay, base_delay * 2**n))`, so
  clients spread out instead of retrying together.
- `retry_on` (`is_transient`) — which exceptions are worth another try. Only transient ones:
  retrying a 400 or a failed validation just repeats the answer.
- `budget` (none) — a `RetryBudget` shared by every call to a dependency. Retries are allowed
  only while they stay under `ratio` (10%) of the requests in the last `window` (10 s), plus a
  small reserve of `min_per_second` (1/s) so a quiet client can still retry. When the dependency
  is down, retries stop at about 1.1x the load instead of 3x. (Finagle, Linkerd and gRPC use
  the same idea.)
- `clock`, `rng` — where sleeping and randomness come from; tests pass a `FakeClock` and a seeded
  `random.Random`.

Usage:

    budget = RetryBudget(ratio=0.1)
    retry = Retry(attempts=3, base_delay=0.1, budget=budget)
    profile = retry.call(fetch_profile, user_id)          # or decorate: @retry

    retry.stats.amplification   # attempts per request, e.g. 1.1 during an outage with a budget
"""

from __future__ import annotations

import functools
import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import requests

from patterns.clock import SYSTEM_CLOCK, Clock

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """The default `retry_on`: connection trouble, timeouts, and errors that say "retry me".

    An exception "says so" with a true `retryable` attribute, as `patterns.http.ServiceError`
    does for 502, 503 and 504.
    """
    if isinstance(exc, (ConnectionError, TimeoutError, requests.ConnectionError,
                        requests.Timeout)):  # requests' own, not subclasses of the built-ins
        return True
    return bool(getattr(exc, "retryable", False))


def full_jitter(
    retry_number: int, base_delay: float, max_delay: float, rng: random.Random
) -> float:
    """Seconds to wait before retry number `retry_number` (0 for the first retry)."""
    return rng.uniform(0, min(max_delay, base_delay * 2**retry_number))


class RetryBudget:
    """Allows retries only while they are a small fraction of recent requests.

    Every request deposits into the budget (`record_request`); every retry withdraws
    (`try_spend`). A retry is allowed while

        retries in the last `window` seconds
            < ratio * requests in that window + min_per_second * window
    """

    def __init__(
        self,
        ratio: float = 0.1,
        min_per_second: float = 1.0,
        window: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if ratio < 0 or min_per_second < 0 or window <= 0:
            raise ValueError("ratio and min_per_second must be >= 0, window > 0")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._clock = clock
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()
        self._lock = threading.Lock()

    def record_request(self) -> None:
        with self._lock:
            now = self._clock.monotonic()
            self._forget_old_locked(now)
            self._requests.append(now)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False if the budget is spent."""
        with self._lock:
            now = self._clock.monotonic()
            self._forget_old_locked(now)
            allowance = self.ratio * len(self._requests) + self.min_per_second * self.window
            if len(self._retries) >= allowance:
                return False
            self._retries.append(now)
            return True

    def _forget_old_locked(self, now: float) -> None:
        for times in (self._requests, self._retries):
            while times and times[0] <= now - self.window:
                times.popleft()


@dataclass
class RetryStats:
    """Running counts for one `Retry`; `amplification` is what a load test plots."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    budget_rejections: int = 0

    @property
    def amplification(self) -> float:
        """Attempts per request: 1.0 is no retries at all, 3.0 is every call tried 3 times."""
        return self.attempts / self.requests if self.requests else 0.0


class Retry:
    def __init__(
        self,
        attempts: int = 3,
        *,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        retry_on: Callable[[BaseException], bool] = is_transient,
        budget: RetryBudget | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts counts the first try, so it is at least 1")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.retry_on = retry_on
        self.budget = budget
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self.stats = RetryStats()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)`, retrying transient failures; re-raise the last error."""
        self._count("requests")
        if self.budget is not None:
            self.budget.record_request()
        retry_number = 0
        while True:
            self._count("attempts")
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not self._may_retry(exc, retry_number):
                    raise
            delay = full_jitter(retry_number, self.base_delay, self.max_delay, self._rng)
            self._clock.sleep(delay)
            retry_number += 1

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Use the policy as a decorator: every call of `fn` is retried."""

        @functools.wraps(fn)
        def retried(*args: Any, **kwargs: Any) -> T:
            return self.call(fn, *args, **kwargs)

        return retried

    def _may_retry(self, exc: Exception, retry_number: int) -> bool:
        if retry_number + 1 >= self.attempts or not self.retry_on(exc):
            return False
        if self.budget is not None and not self.budget.try_spend():
            self._count("budget_rejections")
            return False
        self._count("retries")
        return True

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
