"""Retries with full-jitter backoff and a retry budget, on a fake clock with a seeded rng."""

from __future__ import annotations

import random

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from patterns.clock import FakeClock
from patterns.retry import Retry, RetryBudget, full_jitter, is_transient


class Flaky:
    """A dependency that fails `failures` times with `error`, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("connection reset")
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


class Answer(Exception):
    def __init__(self, retryable: bool) -> None:
        super().__init__("answered with an error")
        self.retryable = retryable


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_transient_failure_is_retried_until_it_succeeds(clock):
    dependency = Flaky(failures=2)
    retry = Retry(attempts=3, clock=clock, rng=random.Random(1))

    assert retry.call(dependency) == "ok"
    assert dependency.calls == 3
    assert (retry.stats.requests, retry.stats.attempts, retry.stats.retries) == (1, 3, 2)


def test_gives_up_after_max_attempts_with_the_last_error(clock):
    dependency = Flaky(failures=10)
    retry = Retry(attempts=4, clock=clock)

    with pytest.raises(ConnectionError):
        retry.call(dependency)
    assert dependency.calls == 4
    assert len(clock.slept) == 3


def test_attempts_1_means_no_retry(clock):
    dependency = Flaky(failures=1)
    with pytest.raises(ConnectionError):
        Retry(attempts=1, clock=clock).call(dependency)
    assert dependency.calls == 1


@pytest.mark.parametrize(
    "error",
    [ValueError("bad input"), Answer(retryable=False), KeyError("sku")],
    ids=["ValueError", "not-retryable-answer", "KeyError"],
)
def test_errors_that_are_not_transient_are_not_retried(clock, error):
    dependency = Flaky(failures=1, error=error)
    retry = Retry(attempts=3, clock=clock)

    with pytest.raises(type(error)):
        retry.call(dependency)
    assert dependency.calls == 1
    assert clock.slept == []


def test_default_retry_on_covers_timeouts_and_errors_that_say_they_are_retryable():
    assert is_transient(TimeoutError())
    assert is_transient(ConnectionRefusedError())
    assert is_transient(Answer(retryable=True))
    assert not is_transient(Answer(retryable=False))
    assert not is_transient(RuntimeError())


def test_requests_own_connection_errors_and_timeouts_are_transient():
    # requests' exceptions are IOErrors, not the built-in ConnectionError/TimeoutError: a
    # Balancer.call or Retry around plain `requests` must still fail over and retry on them.
    assert is_transient(requests.ConnectionError("refused"))
    assert is_transient(requests.ReadTimeout("slow"))
    assert not is_transient(requests.HTTPError("404"))


def test_a_custom_retry_on_decides(clock):
    dependency = Flaky(failures=2, error=LookupError("not yet"))
    retry = Retry(attempts=3, clock=clock, retry_on=lambda exc: isinstance(exc, LookupError))
    assert retry.call(dependency) == "ok"


def test_delays_are_full_jitter_under_an_exponential_cap(clock):
    retry = Retry(attempts=6, base_delay=0.1, max_delay=1.0, clock=clock, rng=random.Random(42))

    with pytest.raises(ConnectionError):
        retry.call(Flaky(failures=10))

    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0]
    assert len(clock.slept) == len(ceilings)
    for slept, ceiling in zip(clock.slept, ceilings):
        assert 0 <= slept <= ceiling
    # same seed, same delays: a demo is reproducible
    again = FakeClock()
    with pytest.raises(ConnectionError):
        Retry(attempts=6, base_delay=0.1, max_delay=1.0, clock=again, rng=random.Random(42)).call(
            Flaky(failures=10)
        )
    assert again.slept == clock.slept


@settings(deadline=None)  # timing is not under test; a busy CI machine must not fail it
@given(
    retry_number=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.0, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=60.0),
    seed=st.integers(),
)
def test_full_jitter_is_always_between_zero_and_the_cap(retry_number, base, cap, seed):
    delay = full_jitter(retry_number, base, cap, random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2**retry_number)


def test_works_as_a_decorator(clock):
    retry = Retry(attempts=3, clock=clock)
    dependency = Flaky(failures=1)

    @retry
    def fetch_profile() -> str:
        return dependency()

    assert fetch_profile() == "ok"
    assert fetch_profile.__name__ == "fetch_profile"


def test_budget_refuses_retries_beyond_its_ratio(clock):
    budget = RetryBudget(ratio=0.1, min_per_second=0, clock=clock)
    for _ in range(20):
        budget.record_request()

    assert [budget.try_spend() for _ in range(3)] == [True, True, False]


def test_budget_reserve_lets_a_quiet_client_retry(clock):
    budget = RetryBudget(ratio=0, min_per_second=0.5, window=10, clock=clock)

    assert [budget.try_spend() for _ in range(6)] == [True] * 5 + [False]  # 0.5/s over 10 s


def test_budget_forgets_requests_and_retries_older_than_its_window(clock):
    budget = RetryBudget(ratio=0.5, min_per_second=0, window=10, clock=clock)
    budget.record_request()
    budget.record_request()
    assert budget.try_spend()
    assert not budget.try_spend()

    clock.advance(10)
    assert not budget.try_spend(), "old requests no longer pay for retries"
    budget.record_request()
    budget.record_request()
    assert budget.try_spend()


def test_an_exhausted_budget_stops_retries_and_is_counted(clock):
    budget = RetryBudget(ratio=0, min_per_second=0, clock=clock)
    dependency = Flaky(failures=1)
    retry = Retry(attempts=3, budget=budget, clock=clock)

    with pytest.raises(ConnectionError):
        retry.call(dependency)
    assert dependency.calls == 1
    assert retry.stats.budget_rejections == 1


def storm(retry: Retry, clock: FakeClock, requests: int = 1000) -> float:
    """Send `requests` calls, 1 ms apart, to a dependency that is completely down."""

    def down() -> str:
        raise ConnectionError("refused")

    for _ in range(requests):
        with pytest.raises(ConnectionError):
            retry.call(down)
        clock.advance(0.001)
    return retry.stats.amplification


def test_a_retry_budget_prevents_a_retry_storm_during_an_outage(clock):
    no_budget = Retry(attempts=3, base_delay=0, clock=clock)
    assert storm(no_budget, clock) == 3.0  # each request tried 3 times: triple load on a dead peer

    strict_budget = RetryBudget(ratio=0.1, min_per_second=0, clock=clock)
    strict = Retry(attempts=3, base_delay=0, clock=clock, budget=strict_budget)
    assert storm(strict, clock) <= 1.1

    # the default budget adds a reserve of 1 retry/s over its 10 s window: 10 retries on top
    default = Retry(attempts=3, base_delay=0, clock=clock, budget=RetryBudget(clock=clock))
    assert storm(default, clock) <= 1.1 + 10 / 1000
    assert default.stats.budget_rejections > 0
