"""Retry with backoff, jitter and a budget — a reference solution (try starter.py first).

A call is retried only when that is safe and useful: the error is transient (a timeout, a
refused connection), the call is idempotent (repeating it cannot charge a card twice), tries
are left, and the budget shared by every caller of the dependency still allows a retry. Before
retry n it sleeps a random time in [0, min(max_delay, base_delay * 2**n)]: "full jitter", so
clients that failed together do not come back together. The full version, with a time window
on the budget and statistics, is patterns/retry.py.
"""

from __future__ import annotations

import random
from typing import Callable, TypeVar

from patterns.clock import Clock

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Errors worth another try: the request may work a moment later."""
    return isinstance(exc, (ConnectionError, TimeoutError))


class RetryBudget:
    def __init__(self, ratio: float, reserve: int) -> None:
        self.ratio = ratio
        self.reserve = reserve
        self.requests = 0
        self.retries = 0

    def record_request(self) -> None:
        self.requests += 1

    def try_spend(self) -> bool:
        if self.retries >= self.ratio * self.requests + self.reserve:
            return False
        self.retries += 1
        return True


class Retry:
    def __init__(self, attempts: int, base_delay: float, max_delay: float, budget: RetryBudget,
                 clock: Clock, rng: random.Random) -> None:
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.budget = budget
        self.clock = clock
        self.rng = rng

    def call(self, fn: Callable[[], T], idempotent: bool = True) -> T:
        self.budget.record_request()
        retry_number = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                if not self._may_retry(exc, idempotent, retry_number):
                    raise
            self.clock.sleep(self._delay(retry_number))
            retry_number += 1

    def _may_retry(self, exc: Exception, idempotent: bool, retry_number: int) -> bool:
        """Retry number `retry_number` (0 for the first) is made when it is safe and useful,
        a try is left, and the budget allows it."""
        tries_left = retry_number + 1 < self.attempts
        # the budget is asked last: a retry we would not make anyway costs it nothing
        return self._should_retry(exc, idempotent) and tries_left and self.budget.try_spend()

    def _should_retry(self, exc: Exception, idempotent: bool) -> bool:
        """Safe and useful: the error may go away (transient), and a repeat cannot do the
        work twice (idempotent)."""
        return is_transient(exc) and idempotent

    def _delay(self, retry_number: int) -> float:
        """Full jitter: a random time up to the backoff cap, so that clients which failed
        together do not come back together."""
        return self.rng.uniform(0, self._backoff_cap(retry_number))

    def _backoff_cap(self, retry_number: int) -> float:
        """Exponential backoff: base_delay doubled for every retry before this one, up to
        max_delay."""
        return min(self.max_delay, self.base_delay * 2**retry_number)
