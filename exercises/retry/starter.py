"""Retry with backoff, jitter and a budget — your implementation. Read README.md first.

Grade it with `make grade EX=retry` (or let `make learn` regrade it on every save).
"""

from __future__ import annotations

import random
from typing import Callable, TypeVar

from patterns.clock import Clock

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Errors worth another try: the request may work a moment later. (Given: use it.)"""
    return isinstance(exc, (ConnectionError, TimeoutError))


class RetryBudget:
    """Retries allowed across *all* calls to one dependency, so an outage does not multiply
    its load by the number of attempts.

    A retry is allowed while  retries so far < ratio * requests so far + reserve.
    """

    def __init__(self, ratio: float, reserve: int) -> None:
        self.ratio = ratio
        self.reserve = reserve

    def record_request(self) -> None:
        """Count one request (call this once per `Retry.call`, before its first attempt)."""
        raise NotImplementedError

    def try_spend(self) -> bool:
        """Take one retry from the budget: True if allowed (and counted), False if spent."""
        raise NotImplementedError


class Retry:
    def __init__(self, attempts: int, base_delay: float, max_delay: float, budget: RetryBudget,
                 clock: Clock, rng: random.Random) -> None:
        """attempts: the first try plus at most attempts - 1 retries.
        base_delay, max_delay: seconds; see `call` for the delays.
        budget: shared by every Retry that calls the same dependency.
        clock: sleep with `clock.sleep(seconds)` (never time.sleep: the grader's clock is fake).
        rng: draw every random number from it (the grader controls it).
        """
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.budget = budget
        self.clock = clock
        self.rng = rng

    def call(self, fn: Callable[[], T], idempotent: bool = True) -> T:
        """Return `fn()`; when it raises, retry if all of these hold, else re-raise at once:

        - the error is transient (`is_transient`),
        - the call is idempotent (a payment that timed out may have gone through: retrying
          it could charge twice),
        - fewer than `attempts` tries were made,
        - the budget allows one more retry (ask it last: a retry you would not make anyway
          must not spend the budget).

        Before retry n (0 for the first retry), sleep a random time in
        [0, min(max_delay, base_delay * 2**n)]: exponential backoff with full jitter.
        """
        raise NotImplementedError
