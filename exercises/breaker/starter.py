"""Circuit breaker — your implementation. Read README.md, then fill in the bodies.

Grade it with `make grade EX=breaker` (or let `make learn` regrade it on every save).
"""

from __future__ import annotations

from typing import Any, Callable

from patterns.clock import Clock


class CircuitOpenError(Exception):
    """Raised instead of calling the dependency while the circuit is open."""


class CircuitBreaker:
    def __init__(self, failure_threshold: int, recovery_timeout: float, clock: Clock) -> None:
        """Start closed.

        failure_threshold: open after this many failures in a row (a success resets the count).
        recovery_timeout: seconds to stay open before letting one trial call through.
        clock: where time comes from: `clock.monotonic()` is "now" in seconds (the grader
            passes a fake clock that moves only when it says so; never call time.* yourself).
        """
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.clock = clock

    @property
    def state(self) -> str:
        """'closed', 'open' or 'half_open'.

        An open circuit whose recovery_timeout has passed reads as 'half_open', even before
        the next call arrives.
        """
        raise NotImplementedError

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn()` and return what it returns; if it raises, let the same exception reach
        the caller (and count the failure).

        While open, raise CircuitOpenError without calling `fn`. While half-open, let one
        trial call through and reject the others until its outcome is known: a success
        closes the circuit, a failure opens it again for another recovery_timeout.
        """
        raise NotImplementedError
