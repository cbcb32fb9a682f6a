"""A breaker's snapshot keeps its recent transitions, so a dashboard polling it sees each one."""

from __future__ import annotations

import pytest

from patterns.breaker import TRANSITIONS_KEPT, CircuitBreaker
from patterns.clock import FakeClock


class Outage(Exception):
    pass


def fail() -> None:
    raise Outage("down")


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        with pytest.raises(Outage):
            breaker.call(fail)


def test_a_whole_outage_and_recovery_is_listed_between_two_polls() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("payments", failure_threshold=2, recovery_timeout=3, clock=clock)
    assert breaker.snapshot()["transitions"] == []
    trip(breaker)
    clock.advance(3)
    assert breaker.call(lambda: "ok") == "ok"  # the trial call closes it
    clock.advance(1.5)
    listed = breaker.snapshot()["transitions"]
    assert [(t["number"], t["from"], t["to"]) for t in listed] == [
        (1, "closed", "open"), (2, "open", "half_open"), (3, "half_open", "closed")]
    assert [t["seconds_ago"] for t in listed] == [4.5, 1.5, 1.5]


def test_only_the_last_transitions_are_kept() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("orders", failure_threshold=1, recovery_timeout=1, clock=clock)
    for _ in range(TRANSITIONS_KEPT):  # closed → open, open → half_open, half_open → open, ...
        trip(breaker)
        clock.advance(1)
    listed = breaker.snapshot()["transitions"]
    assert len(listed) == TRANSITIONS_KEPT
    # 2 transitions per round (the first has only closed → open), and the snapshot's own refresh.
    total = 2 * TRANSITIONS_KEPT
    assert [t["number"] for t in listed] == list(range(total - TRANSITIONS_KEPT + 1, total + 1))
    assert listed[-1] == {"number": total, "from": "open", "to": "half_open", "seconds_ago": 0.0}
