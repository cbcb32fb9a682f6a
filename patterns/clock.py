"""Time as something you pass in, so resilience code can be tested without waiting.

Protects against: slow, flaky tests and demos whose outcome depends on the laptop. Breakers,
retries and rate limiters all ask "how long ago?" and "wait a bit". If they read `time.monotonic()`
and call `time.sleep()` directly, a test of a 30-second recovery timeout takes 30 seconds and a
notebook demo depends on how busy the machine is. Instead they take a `Clock`:

- `SYSTEM_CLOCK` — the real thing (`time.monotonic`, `time.sleep`); the default everywhere.
- `FakeClock(start=0.0)` — time moves only when you say so: `advance(seconds)` by hand, and
  `sleep(seconds)` advances instantly instead of blocking. Every sleep is recorded in `slept`,
  so a test (or a plot) can show exactly which delays a retry loop chose.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
import time
from typing import Protocol


class Clock(Protocol):
    """Where resilience code reads the time and waits."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait this many seconds."""
        ...


class SystemClock:
    """The machine's monotonic clock and a real, blocking sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()


class FakeClock:
    """A clock that stands still until told to move; sleeping moves it at once.

    >>> clock = FakeClock()
    >>> clock.advance(30)
    >>> clock.monotonic()
    30.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        with self._lock:
            self.slept.append(seconds)


# -- timestamps as services store and show them -----------------------------------------------


def utc_now_ms() -> datetime:
    """Now, in UTC, to the millisecond: what MongoDB keeps, so what a service answers right
    after a write is what it reads back later."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def stored_time(value: datetime | str | None) -> datetime | None:
    """A timestamp read from MongoDB, as an aware UTC datetime. MongoDB returns UTC datetimes
    without a zone, and the embedded server (nx-27017) returns one written by `$set` as text
    ('2026-01-02 03:04:05.678000'): both are accepted."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso_utc(value: datetime | str | None) -> str | None:
    """The one way every service shows a time: ISO 8601, UTC, milliseconds, 'Z'."""
    moment = stored_time(value)
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
