"""The in-process token bucket, on a fake clock."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterns.clock import FakeClock
from patterns.ratelimit import Decision, RedisTokenBucket, TokenBucket, token_bucket_from_env


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_burst_up_to_capacity_passes_then_requests_are_refused(clock):
    limiter = TokenBucket(capacity=5, refill_per_second=1, clock=clock)

    decisions = [limiter.take("10.0.0.1") for _ in range(6)]

    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]


def test_tokens_come_back_at_the_refill_rate(clock):
    limiter = TokenBucket(capacity=5, refill_per_second=2, clock=clock)
    for _ in range(5):
        limiter.take("k")

    clock.advance(0.4)
    assert not limiter.take("k").allowed  # 0.8 of a token
    clock.advance(0.1)
    assert limiter.take("k").allowed  # 1 token
    assert not limiter.take("k").allowed

    clock.advance(60)
    assert limiter.take("k").remaining == 4, "a bucket never holds more than its capacity"


def test_each_key_has_its_own_bucket(clock):
    limiter = TokenBucket(capacity=2, refill_per_second=1, clock=clock)
    limiter.take("noisy")
    limiter.take("noisy")

    assert not limiter.take("noisy").allowed
    assert limiter.take("quiet").allowed


def test_a_request_may_cost_more_than_one_token(clock):
    limiter = TokenBucket(capacity=10, refill_per_second=1, clock=clock)
    assert limiter.take("k", cost=8).remaining == 2
    refused = limiter.take("k", cost=3)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(1)


def test_decision_reports_reset_and_retry_after(clock):
    limiter = TokenBucket(capacity=4, refill_per_second=0.5, clock=clock)
    for _ in range(4):
        limiter.take("k")

    refused = limiter.take("k")

    assert refused == Decision(allowed=False, limit=4, remaining=0, reset=8.0, retry_after=2.0)


def test_headers_for_an_allowed_and_a_refused_request():
    allowed = Decision(allowed=True, limit=100, remaining=41, reset=11.2, retry_after=0.0)
    refused = Decision(allowed=False, limit=100, remaining=0, reset=20.0, retry_after=0.3)

    assert allowed.headers() == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "41",
        "RateLimit-Reset": "12",
    }
    assert refused.headers() == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "20",
        "Retry-After": "1",  # whole seconds, rounded up: never send a client back too early
    }


def test_threads_together_never_take_more_than_capacity():
    limiter = TokenBucket(capacity=50, refill_per_second=0.001)
    allowed = []

    def hammer() -> None:
        allowed.extend(d.allowed for d in (limiter.take("shared") for _ in range(50)))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(allowed) == 50


def test_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        TokenBucket(capacity=0, refill_per_second=1)
    with pytest.raises(ValueError):
        TokenBucket(capacity=1, refill_per_second=0)


def test_from_env_uses_redis_only_when_redis_url_is_set(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert isinstance(token_bucket_from_env(10, 1), TokenBucket)

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert isinstance(token_bucket_from_env(10, 1), RedisTokenBucket)  # connects lazily


@settings(deadline=None)  # timing is not under test; a busy CI machine must not fail it
@given(
    capacity=st.integers(min_value=1, max_value=50),
    rate=st.floats(min_value=0.01, max_value=100),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.integers(min_value=1, max_value=5)),
        max_size=200,
    ),
)
def test_never_allows_more_than_capacity_plus_what_refilled(capacity, rate, steps):
    clock = FakeClock()
    limiter = TokenBucket(capacity=capacity, refill_per_second=rate, clock=clock)
    taken = 0

    for wait, cost in steps:
        clock.advance(wait)
        if limiter.take("k", cost=cost).allowed:
            taken += cost

    assert taken <= capacity + rate * clock.monotonic() + 1e-6
