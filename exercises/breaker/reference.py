"""Circuit breaker — a reference solution (spoiler: try starter.py first).

Three states. Closed: calls go through, failures in a row are counted. Open: calls fail at
once with CircuitOpenError until `recovery_timeout` seconds have passed. Half-open: one trial
call goes through while every other call is rejected; its outcome decides between closed and
open. The full version, with an error-rate window and listeners, is patterns/breaker.py.
"""

from __future__ import annotations

from typing import Any, Callable

from patterns.clock import Clock


class CircuitOpenError(Exception):
    """Raised instead of calling the dependency while the circuit is open."""


class CircuitBreaker:
    def __init__(self, failure_threshold: int, recovery_timeout: float, clock: Clock) -> None:
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.clock = clock
        self._state = "closed"
        self._failures_in_a_row = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> str:
        """'closed', 'open' or 'half_open'; open turns half-open by itself once the timeout
        has passed, so reading the state is enough to see it."""
        if self._state == "open" and (
            self.clock.monotonic() - self._opened_at >= self.recovery_timeout
        ):
            self._state = "half_open"
        return self._state

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn()` through the breaker, or raise CircuitOpenError without running it."""
        trial = self._admit()
        try:
            result = fn()
        except Exception:
            self._record(trial, failed=True)
            raise
        self._record(trial, failed=False)
        return result

    def _admit(self) -> bool:
        """Let a call through, or raise CircuitOpenError: while open, and while half-open
        once the trial is running. Returns whether this call is the half-open trial."""
        state = self.state
        if state == "open" or (state == "half_open" and self._trial_running):
            raise CircuitOpenError("circuit is open")
        self._trial_running = state == "half_open"
        return self._trial_running

    def _record(self, trial: bool, failed: bool) -> None:
        """A trial's outcome decides the state; any other call counts failures in a row,
        so a success starts the count again."""
        if trial:
            self._trial_running = False
            self._open() if failed else self._close()
            return
        self._failures_in_a_row = self._failures_in_a_row + 1 if failed else 0
        if self._failures_in_a_row >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self.clock.monotonic()
        self._failures_in_a_row = 0

    def _close(self) -> None:
        self._state = "closed"
        self._failures_in_a_row = 0
