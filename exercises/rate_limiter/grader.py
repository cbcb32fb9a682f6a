"""Grader of the rate limiter exercise: the learner's `TokenBucket` against a model bucket.

A schedule is a bucket (capacity, refill rate) and steps: a request from a client (`take`),
or the fake clock moving on. Rates and waits are multiples of powers of two, so the token
counts are exact in floating point and a decision is never a rounding accident. The model
says allowed or refused before each request; the first request the learner decides otherwise
fails the property of the schedule's shape:

- a burst at one instant from one client (`allows_a_full_burst`),
- one client over time (`refills_at_the_rate`),
- a long pause, then a burst (`refill_stops_at_capacity`),
- several clients interleaved (`keys_are_independent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

from exercises.grading import Exercise, Trace

EXERCISE = Exercise("rate_limiter", "Token-bucket rate limiter", order=30,
                    requires=("TokenBucket",))


@dataclass(frozen=True)
class Take:
    client: str
    cost: int = 1


@dataclass(frozen=True)
class Wait:
    seconds: float


Schedule = tuple[int, float, list[Take | Wait]]


def buckets(smallest: int = 1, largest: int = 8) -> st.SearchStrategy[tuple[int, float]]:
    return st.tuples(st.integers(smallest, largest), st.sampled_from([1.0, 2.0, 0.5, 4.0, 0.25]))


@st.composite
def bursts(draw: st.DrawFn) -> Schedule:
    capacity, rate = draw(buckets())
    takes = draw(st.integers(1, 2 * capacity + 2))
    return capacity, rate, [Take("alice")] * takes


@st.composite
def one_client(draw: st.DrawFn) -> Schedule:
    capacity, rate = draw(buckets(2, 4))  # with room for a fraction of a token to matter
    take = st.builds(Take, st.just("alice"), st.sampled_from([1, 1, 2]))
    wait = st.builds(Wait, st.integers(1, 12).map(lambda quarters: quarters / 4))
    drained = [Take("alice")] * capacity  # start empty, so every later answer is refill's
    steps = draw(st.lists(st.one_of(take, take, wait), min_size=8, max_size=40))
    return capacity, rate, drained + steps


@st.composite
def long_pauses(draw: st.DrawFn) -> Schedule:
    capacity, rate = draw(buckets())
    drain = [Take("alice")] * draw(st.integers(0, capacity))
    pause = Wait(capacity / rate * draw(st.sampled_from([2, 1, 3, 10])))
    burst = [Take("alice")] * draw(st.integers(capacity, 2 * capacity + 1))
    return capacity, rate, [*drain, pause, *burst]


@st.composite
def many_clients(draw: st.DrawFn) -> Schedule:
    capacity, rate = draw(buckets(1, 4))
    take = st.builds(Take, st.sampled_from(["alice", "bob", "carol"]))
    wait = st.builds(Wait, st.integers(1, 8).map(lambda quarters: quarters / 4))
    return capacity, rate, draw(st.lists(st.one_of(take, take, take, wait), min_size=8,
                                         max_size=40))

class Model:
    def __init__(self, capacity: int, rate: float) -> None:
        self.capacity, self.rate = capacity, rate
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def take(self, client: str, cost: int, now: float) -> tuple[bool, float]:
        """Allowed?, and the tokens the client's bucket held before the request."""
        tokens, at = self.buckets.get(client, (float(self.capacity), now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        allowed = tokens >= cost
        self.buckets[client] = (tokens - cost if allowed else tokens, now)
        return allowed, tokens


def drive(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    capacity, rate, steps = schedule
    trace.given(capacity=capacity, refill_per_second=rate)
    limiter = learner.TokenBucket(capacity=capacity, refill_per_second=rate, clock=trace.clock)
    model = Model(capacity, rate)
    for step in steps:
        if isinstance(step, Wait):
            trace.advance(step.seconds)
            continue
        trace.step(f"take({step.client!r}" + (f", cost={step.cost})" if step.cost > 1 else ")"))
        got = limiter.take(step.client, step.cost)
        trace.outcome("allowed" if got else "refused")
        allowed, tokens = model.take(step.client, step.cost, trace.clock.monotonic())
        trace.expect(
            got is allowed,
            expected=f"{'allowed' if allowed else 'refused'} ({step.client!r} had "
            f"{tokens:g} token(s) for a cost of {step.cost})",
            got=f"{got!r}",
        )


def judged_by(name: str, promise: str, hint: int, schedules: st.SearchStrategy[Any]) -> None:
    @EXERCISE.prop(name, promise, schedules=schedules, hint=hint)
    def check(learner: ModuleType, schedule: Any, trace: Trace) -> None:
        drive(learner, schedule, trace)


judged_by("allows_a_full_burst",
          "a new client may send `capacity` requests at once, and no more", 1, bursts())
judged_by("refills_at_the_rate",
          "tokens come back at refill_per_second; a refused request costs nothing", 2,
          one_client())
judged_by("refill_stops_at_capacity",
          "after a long pause the bucket holds `capacity` tokens, not more", 3, long_pauses())
judged_by("keys_are_independent",
          "each client has its own bucket: one noisy client does not starve the others", 4,
          many_clients())
