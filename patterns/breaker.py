"""Circuit breaker: stop calling a dependency that is down, and fail fast while it recovers.

Protects against: a dependency that times out or errors, keeping every caller busy waiting for it
while threads pile up and the outage spreads upstream. A breaker counts failures and, past a
threshold, *opens*: calls fail at once with `CircuitOpenError` instead of waiting, which spares the
caller's threads and gives the dependency room to recover. After a pause it lets a few trial calls
through (*half-open*); a success closes the circuit, a failure opens it again.

    closed ──(too many failures)──▶ open ──(recovery_timeout passed)──▶ half_open
      ▲                              ▲                                      │
      │                              └──────────(a trial fails)─────────────┤
      └──────────────────────────────────────────(a trial succeeds)─────────┘

Knobs (`CircuitBreaker(name, ...)`):

- `failure_threshold` (5) — open after this many failures in a row.
- `error_rate_threshold` (0.5) — or open when at least this fraction of the calls in the
  window failed...
- `minimum_calls` (10) — ...once the window holds at least this many calls (so 1 failure out of
  1 call does not count as "100% errors").
- `window` (10 s) — how far back the error rate looks.
- `recovery_timeout` (30 s) — how long to stay open before trying again.
- `half_open_max_calls` (1) — trial calls allowed at the same time while half-open; the rest are
  rejected fast, as if open. The first trial to succeed closes the circuit; the first to fail
  opens it again.
- `is_failure` (every `Exception`) — which exceptions count against the dependency. Any other
  exception is passed to the caller and counts as a success: the dependency answered, it was the
  request that was wrong (a 404 from a healthy service should not trip the breaker).
- `clock` (`SYSTEM_CLOCK`) — where time comes from; tests pass a `FakeClock`.

Usage reads like this:

    inventory = CircuitBreaker("inventory", failure_threshold=3, recovery_timeout=10)
    stock = inventory.call(fetch_stock, "sku-1")      # or decorate: @inventory

    inventory.on_state_change(lambda breaker, old, new: print(breaker.name, old, "→", new))

Calls run concurrently: the breaker's lock guards only its own bookkeeping, never the protected
call, so a slow dependency does not turn the breaker into a queue. Listeners run on the calling
thread after the lock is released; keep them quick. `BreakerRegistry` hands out one breaker per
name and snapshots them all for an admin endpoint. A snapshot lists the breaker's last 20
transitions with how long ago each happened, so a dashboard that polls it still sees a circuit
that opened and closed again between two polls.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, TypeVar

from patterns.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

T = TypeVar("T")
TRANSITIONS_KEPT = 20  # per breaker, oldest first in its snapshot


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(Exception):
    """Raised instead of calling the dependency while the circuit is open (or trials are busy)."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit '{name}' is open; next trial in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


Listener = Callable[["CircuitBreaker", State, State], None]


def every_exception(exc: Exception) -> bool:
    """The default `is_failure`: any exception counts against the dependency."""
    return True


@dataclass
class _Ticket:
    """What the breaker remembers about one admitted call until its outcome comes back."""

    generation: int
    trial: bool


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        error_rate_threshold: float = 0.5,
        minimum_calls: int = 10,
        window: float = 10.0,
        recovery_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        is_failure: Callable[[Exception], bool] = every_exception,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if failure_threshold < 1 or minimum_calls < 1 or half_open_max_calls < 1:
            raise ValueError("thresholds and call limits must be at least 1")
        if not 0 < error_rate_threshold <= 1:
            raise ValueError("error_rate_threshold is a fraction in (0, 1]")
        self.name = name
        self.failure_threshold = failure_threshold
        self.error_rate_threshold = error_rate_threshold
        self.minimum_calls = minimum_calls
        self.window = window
        self.recovery_timeout = recovery_timeout
        self.half_open_max_calls = half_open_max_calls
        self.is_failure = is_failure
        self._clock = clock
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._generation = 0  # bumped on every state change; outcomes from older calls are stale
        self._opened_at = 0.0
        self._trials_in_flight = 0
        self._consecutive_failures = 0
        self._recent: deque[tuple[float, bool]] = deque()  # (finished at, failed), in the window
        self._recent_failures = 0
        self._totals = {"calls": 0, "successes": 0, "failures": 0, "rejected": 0}
        # The last transitions (number, at, old, new), so a dashboard polling the snapshot sees
        # an open → half_open → closed that happened between two polls; numbered from 1 so it
        # can tell the ones it has already shown.
        self._transitions: deque[tuple[int, float, State, State]] = deque(maxlen=TRANSITIONS_KEPT)
        self._transition_count = 0

    # -- using it ---------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` through the breaker, or raise `CircuitOpenError` at once."""
        ticket = self._admit()
        failed: bool | None = None  # stays None if fn is interrupted (e.g. KeyboardInterrupt)
        try:
            result = fn(*args, **kwargs)
            failed = False
            return result
        except Exception as exc:
            failed = self.is_failure(exc)
            raise
        finally:
            self._record(ticket, failed)

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Use the breaker as a decorator: every call of `fn` goes through it."""

        @functools.wraps(fn)
        def protected(*args: Any, **kwargs: Any) -> T:
            return self.call(fn, *args, **kwargs)

        return protected

    def on_state_change(self, listener: Listener) -> None:
        """Call `listener(breaker, old_state, new_state)` after every transition."""
        self._listeners.append(listener)

    @property
    def state(self) -> State:
        with self._lock:
            changes = self._refresh_locked()
            state = self._state
        self._notify(changes)
        return state

    def reset(self) -> None:
        """Close the circuit and forget all counts (an operator's "I fixed it")."""
        with self._lock:
            changes = self._transition_locked(State.CLOSED)
        self._notify(changes)

    def snapshot(self) -> dict[str, Any]:
        """The breaker's state and counts as plain data, for dashboards and admin endpoints."""
        with self._lock:
            changes = self._refresh_locked()
            self._forget_old_locked()
            calls_in_window = len(self._recent)
            now = self._clock.monotonic()
            snapshot = {
                "name": self.name,
                "state": str(self._state),
                "retry_after": self._retry_after_locked(),
                "consecutive_failures": self._consecutive_failures,
                "window_calls": calls_in_window,
                "window_failures": self._recent_failures,
                "error_rate": self._recent_failures / calls_in_window if calls_in_window else 0.0,
                **self._totals,
                "settings": {
                    "failure_threshold": self.failure_threshold,
                    "error_rate_threshold": self.error_rate_threshold,
                    "minimum_calls": self.minimum_calls,
                    "window": self.window,
                    "recovery_timeout": self.recovery_timeout,
                    "half_open_max_calls": self.half_open_max_calls,
                },
                "transitions": [{"number": number, "from": str(old), "to": str(new),
                                 "seconds_ago": round(now - at, 3)}
                                for number, at, old, new in self._transitions],
            }
        self._notify(changes)
        return snapshot

    # -- bookkeeping (always under the lock, never around the protected call) ---------------

    def _admit(self) -> _Ticket:
        with self._lock:
            changes = self._refresh_locked()
            ticket = self._ticket_locked()
            retry_after = self._retry_after_locked()
        self._notify(changes)
        if ticket is None:
            raise CircuitOpenError(self.name, retry_after)
        return ticket

    def _ticket_locked(self) -> _Ticket | None:
        trial = self._state is State.HALF_OPEN
        trials_busy = trial and self._trials_in_flight >= self.half_open_max_calls
        if self._state is State.OPEN or trials_busy:
            self._totals["rejected"] += 1
            return None
        if trial:
            self._trials_in_flight += 1
        self._totals["calls"] += 1
        return _Ticket(self._generation, trial)

    def _record(self, ticket: _Ticket, failed: bool | None) -> None:
        changes: list[tuple[State, State]] = []
        with self._lock:
            if failed is not None:
                self._totals["failures" if failed else "successes"] += 1
            # A call that began before the last state change decides nothing about the new state.
            if ticket.generation == self._generation:
                if ticket.trial:
                    self._trials_in_flight -= 1
                    if failed is not None:
                        changes = self._transition_locked(State.OPEN if failed else State.CLOSED)
                elif failed is not None:
                    self._count_locked(failed)
                    if self._should_open_locked():
                        changes = self._transition_locked(State.OPEN)
        self._notify(changes)

    def _count_locked(self, failed: bool) -> None:
        self._consecutive_failures = self._consecutive_failures + 1 if failed else 0
        self._recent.append((self._clock.monotonic(), failed))
        self._recent_failures += int(failed)
        self._forget_old_locked()

    def _forget_old_locked(self) -> None:
        horizon = self._clock.monotonic() - self.window
        while self._recent and self._recent[0][0] <= horizon:
            _, failed = self._recent.popleft()
            self._recent_failures -= int(failed)

    def _should_open_locked(self) -> bool:
        if self._consecutive_failures >= self.failure_threshold:
            return True
        calls = len(self._recent)
        return (
            calls >= self.minimum_calls
            and self._recent_failures / calls >= self.error_rate_threshold
        )

    def _refresh_locked(self) -> list[tuple[State, State]]:
        """Open turns into half-open by itself once the recovery timeout has passed."""
        if self._state is State.OPEN and self._retry_after_locked() == 0:
            return self._transition_locked(State.HALF_OPEN)
        return []

    def _retry_after_locked(self) -> float:
        if self._state is not State.OPEN:
            return 0.0  # closed, or half-open with trials running: worth trying again shortly
        return max(0.0, self._opened_at + self.recovery_timeout - self._clock.monotonic())

    def _transition_locked(self, new: State) -> list[tuple[State, State]]:
        old = self._state
        self._generation += 1
        self._state = new
        self._trials_in_flight = 0
        self._consecutive_failures = 0
        if new is State.OPEN:
            self._opened_at = self._clock.monotonic()
        if new is State.CLOSED:
            self._recent.clear()
            self._recent_failures = 0
        if old is new:
            return []
        self._transition_count += 1
        self._transitions.append((self._transition_count, self._clock.monotonic(), old, new))
        return [(old, new)]

    def _notify(self, changes: list[tuple[State, State]]) -> None:
        for old, new in changes:
            log.info("circuit %s: %s -> %s", self.name, old, new)
            for listener in self._listeners:
                try:
                    listener(self, old, new)
                except Exception:
                    log.exception("state listener of circuit %s failed", self.name)


BREAKER_FACTORY_ENV = "MICROLAB_BREAKER_FACTORY"


def breaker_type() -> Callable[..., CircuitBreaker]:
    """`CircuitBreaker`, unless MICROLAB_BREAKER_FACTORY names another as `module:function`, a
    function returning something built like it. `make grade EX=breaker LIVE=1` names the
    learner's solution that way, so the services run on it (this module imports none of it)."""
    named = os.environ.get(BREAKER_FACTORY_ENV)
    if not named:
        return CircuitBreaker
    module, _, function = named.partition(":")
    return getattr(importlib.import_module(module), function)()


class BreakerRegistry:
    """One breaker per dependency name, created on first use with shared defaults.

    >>> breakers = BreakerRegistry(failure_threshold=3)
    >>> breakers.get("inventory") is breakers.get("inventory")
    True
    """

    def __init__(self, *, listeners: tuple[Listener, ...] = (), **defaults: Any) -> None:
        self._defaults = defaults
        self._make = breaker_type()  # a wrong MICROLAB_BREAKER_FACTORY fails here, at start
        self._listeners = listeners
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, name: str, **settings: Any) -> CircuitBreaker:
        """The breaker called `name`; `settings` override the defaults when it is first created."""
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = self._make(name, **{**self._defaults, **settings})
                for listener in self._listeners:
                    breaker.on_state_change(listener)
                self._breakers[name] = breaker
            return breaker

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every breaker's `snapshot()`, by name."""
        with self._lock:
            breakers = list(self._breakers.values())
        return {breaker.name: breaker.snapshot() for breaker in breakers}

    def reset_all(self) -> None:
        with self._lock:
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.reset()
