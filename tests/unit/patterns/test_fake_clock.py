"""The clocks resilience code is given."""

from __future__ import annotations

import pytest

from patterns.clock import SYSTEM_CLOCK, FakeClock


def test_fake_clock_stands_still_until_advanced():
    clock = FakeClock(start=100)
    assert clock.monotonic() == 100
    clock.advance(2.5)
    assert clock.monotonic() == 102.5


def test_fake_sleep_advances_at_once_and_is_recorded():
    clock = FakeClock()
    clock.sleep(3)
    clock.sleep(0.5)
    assert clock.monotonic() == 3.5
    assert clock.slept == [3, 0.5]


def test_fake_clock_cannot_go_backwards():
    with pytest.raises(ValueError):
        FakeClock().advance(-1)


def test_system_clock_moves_forward_when_sleeping():
    before = SYSTEM_CLOCK.monotonic()
    SYSTEM_CLOCK.sleep(0.01)
    assert SYSTEM_CLOCK.monotonic() > before
