"""LIVE=1: the learner's breaker really replaces ours in the services, through the adapter.

The adapter tests are fast and in-process. The slow one runs the real thing: a sandbox whose
services use a breaker that never half-opens, under the payments-outage experiment, which must
then fail (orders are never confirmed again) — proof that the learner's code is what runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exercises.grading.engine import EXERCISES_DIR
from exercises.grading.live import LEARNER_BREAKER_ENV, LearnerBreaker, run_live
from patterns.breaker import (
    BREAKER_FACTORY_ENV,
    BreakerRegistry,
    CircuitBreaker,
    CircuitOpenError,
    State,
)
from tests.conftest import port_open

BREAKER = EXERCISES_DIR / "breaker"


def test_services_use_our_breaker_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BREAKER_FACTORY_ENV, raising=False)
    assert type(BreakerRegistry().get("payments")) is CircuitBreaker


def test_the_learners_breaker_behind_our_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BREAKER_FACTORY_ENV, "exercises.grading.live:learner_breaker_from_env")
    monkeypatch.setenv(LEARNER_BREAKER_ENV, str(BREAKER / "reference.py"))
    changes: list[tuple[State, State]] = []
    registry = BreakerRegistry(listeners=(lambda breaker, old, new: changes.append((old, new)),),
                               failure_threshold=2, recovery_timeout=30,
                               is_failure=lambda exc: not isinstance(exc, KeyError))
    breaker = registry.get("payments")
    assert isinstance(breaker, LearnerBreaker)

    def not_found() -> None:
        raise KeyError("404: the peer answered; not its failure")

    def down(reason: str) -> None:
        raise ConnectionError(reason)

    for _ in range(3):
        with pytest.raises(KeyError):
            breaker.call(not_found)
    assert breaker.state is State.CLOSED
    assert breaker.call(lambda a, b=0: a + b, 1, b=2) == 3
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(down, "refused")
    with pytest.raises(CircuitOpenError):
        breaker.call(down, "never called")
    assert changes == [(State.CLOSED, State.OPEN)]
    assert registry.snapshot()["payments"]["state"] == "open"


@pytest.mark.slow
@pytest.mark.skipif(not port_open("127.0.0.1", 5672), reason="needs RabbitMQ")
def test_a_breaker_that_never_half_opens_fails_the_live_experiment() -> None:
    assert run_live("breaker", Path(BREAKER / "wrong" / "never_half_opens.py")) is False
