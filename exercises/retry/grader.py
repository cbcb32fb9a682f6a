"""Grader of the retry exercise: the learner's `Retry` and a model run the same requests.

A schedule is a policy (attempts, delays, a budget) and a list of requests; each request says
whether the call is idempotent and which faults its attempts meet before one succeeds: a
timeout or a refused connection (transient, worth a retry) or a 400 (the request is wrong: a
retry repeats the answer). Every request goes through the same `RetryBudget`, as every call
to one dependency does. The model says how many attempts a correct policy makes and why it
stops; the first request where the learner's policy makes a different number of attempts
fails the property named by that why.

The delays are judged with two rigged random generators: one whose draws are always at the
top of their range (a full-jitter delay is then the whole cap, min(max_delay,
base_delay * 2**n), so the growth shows) and one whose draws are always 0 (a full-jitter delay
is then 0, so a policy without jitter shows).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

from exercises.grading import Exercise, Trace

EXERCISE = Exercise("retry", "Retry with backoff, jitter and a budget", order=20,
                    requires=("Retry", "RetryBudget"))

FAULTS = {
    "timeout": lambda n: TimeoutError(f"timed out #{n}"),
    "refused": lambda n: ConnectionRefusedError(f"connection refused #{n}"),
    "bad_request": lambda n: ValueError(f"400 bad request #{n}"),
}
TRANSIENT = {"timeout", "refused"}


class RiggedRandom(random.Random):
    """Every draw at one end of its range: `random()` is always `fraction`."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def random(self) -> float:
        return self.fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


@dataclass(frozen=True)
class Policy:
    attempts: int
    base_delay: float
    max_delay: float
    ratio: float
    reserve: int


@dataclass(frozen=True)
class Request:
    idempotent: bool
    faults: tuple[str, ...]  # what attempts 1, 2, ... meet; the attempt after them succeeds


@st.composite
def schedules(draw: st.DrawFn) -> tuple[Policy, list[Request]]:
    base = draw(st.sampled_from([0.1, 0.05, 0.2, 0.5]))
    policy = Policy(
        attempts=draw(st.integers(1, 6)),
        base_delay=base,
        max_delay=base * draw(st.sampled_from([4, 1, 2, 8])),
        ratio=draw(st.sampled_from([0.5, 0.1, 0.2])),
        reserve=draw(st.integers(0, 4)),
    )
    request = st.builds(
        Request,
        idempotent=st.sampled_from([True, True, False]),
        faults=st.lists(st.sampled_from(["timeout", "refused", "timeout", "bad_request"]),
                        max_size=6)
        .map(tuple),
    )
    return policy, draw(st.lists(request, min_size=1, max_size=15))


@st.composite
def outages(draw: st.DrawFn) -> tuple[Policy, list[Request]]:
    """Requests that each meet several transient faults, with budget to spare: many delays.

    Lead in: the first request fails at every attempt, so every retry sleeps, up to retry 2 at
    least (where doubling, 4 * base_delay, and adding, 3 * base_delay, first differ) and past
    the retry where max_delay stops the doubling when attempts allow."""
    base = draw(st.sampled_from([0.1, 0.05, 0.2, 0.5]))
    attempts = draw(st.integers(4, 6))
    policy = Policy(attempts=attempts, base_delay=base,
                    max_delay=base * draw(st.sampled_from([4, 8])), ratio=0.5, reserve=20)
    faults = st.lists(st.sampled_from(["timeout", "refused"]), min_size=2, max_size=6)
    request = st.builds(Request, idempotent=st.just(True), faults=faults.map(tuple))
    every_attempt_fails = Request(idempotent=True, faults=("timeout",) * attempts)
    return policy, [every_attempt_fails, *draw(st.lists(request, max_size=3))]


class Model:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.requests = 0
        self.retries = 0

    def run(self, request: Request) -> tuple[int, str]:
        """Attempts a correct policy makes, and why it stops (a property name)."""
        self.requests += 1
        attempt = 0
        while True:
            if attempt >= len(request.faults):
                return attempt + 1, "retries_transient_failures"
            fault = request.faults[attempt]
            if fault not in TRANSIENT:
                return attempt + 1, "retries_only_transient_errors"
            if not request.idempotent:
                return attempt + 1, "never_retries_non_idempotent"
            if attempt + 1 >= self.policy.attempts:
                return attempt + 1, "stops_after_attempts"
            if self.retries >= self.policy.ratio * self.requests + self.policy.reserve:
                return attempt + 1, "stays_within_budget"
            self.retries += 1
            attempt += 1


def drive(learner: ModuleType, schedule: Any, trace: Trace, judging: str,
          rng: random.Random | None = None) -> None:
    policy, requests = schedule
    trace.given(**vars(policy))
    budget = learner.RetryBudget(ratio=policy.ratio, reserve=policy.reserve)
    retry = learner.Retry(
        attempts=policy.attempts, base_delay=policy.base_delay, max_delay=policy.max_delay,
        budget=budget, clock=trace.clock, rng=rng or random.Random(len(requests)),
    )
    model = Model(policy)
    for number, request in enumerate(requests, 1):
        faults = ", ".join(request.faults) or "none"
        trace.step(f"request #{number} ({'idempotent' if request.idempotent else 'NOT idempotent'}"
                   f"): attempts meet [{faults}], then success")
        attempts: list[BaseException | str] = []

        def dependency() -> str:
            n = len(attempts)
            if n < len(request.faults):
                error = FAULTS[request.faults[n]](number)
                attempts.append(error)
                raise error
            attempts.append(f"answer #{number}")
            return f"answer #{number}"

        sleeps_before = len(trace.clock.slept)
        try:
            got: Any = retry.call(dependency, idempotent=request.idempotent)
            trace.outcome(f"{len(attempts)} attempt(s), returned {got!r}")
        except Exception as raised:  # noqa: BLE001 - the dependency's own errors, compared below
            if not any(raised is attempt for attempt in attempts):
                raise  # not the dependency's: the learner's own error, reported as such
            got = raised
            trace.outcome(f"{len(attempts)} attempt(s), raised {raised!r}")
        expected_attempts, why = model.run(request)
        if len(attempts) != expected_attempts:
            kind = why if len(attempts) > expected_attempts else "retries_transient_failures"
            if kind == judging:
                trace.expect(False, expected=f"{expected_attempts} attempt(s): "
                             + explain(why, policy, model), got=f"{len(attempts)} attempt(s)")
            return
        last = attempts[-1]
        if got is not last and got != last:
            if judging == "retries_transient_failures":
                trace.expect(False, expected=f"the last attempt's outcome: {last!r}",
                             got=repr(got))
            return
        sleeps = trace.clock.slept[sleeps_before:]
        if judging == why or judging == "retries_transient_failures":
            trace.expect(len(sleeps) == expected_attempts - 1,
                         expected=f"a sleep before each of the {expected_attempts - 1} retries",
                         got=f"{len(sleeps)} sleep(s)")
        for n, slept in enumerate(sleeps):
            cap = min(policy.max_delay, policy.base_delay * 2**n)
            if judging == "backoff_grows_exponentially":
                trace.expect(0.99 * cap <= slept <= cap * 1.0001,
                             expected=f"before retry {n + 1}, with every random draw at its top, "
                             f"a sleep of min(max_delay, base_delay * 2**{n}) = {cap:g}s",
                             got=f"slept {slept:g}s")
            if judging == "delays_are_jittered":
                trace.expect(0 <= slept <= 0.01 * cap,
                             expected=f"before retry {n + 1}, with every random draw at 0, a "
                             f"sleep of about 0s (full jitter: uniform(0, {cap:g}))",
                             got=f"slept {slept:g}s")


def explain(why: str, policy: Policy, model: Model) -> str:
    return {
        "retries_transient_failures": "retry each timeout/refused until one succeeds",
        "retries_only_transient_errors": "a 400 is the request's fault: never retried",
        "never_retries_non_idempotent": "a call that is not idempotent is never retried",
        "stops_after_attempts": f"at most attempts={policy.attempts} in all",
        "stays_within_budget": f"the budget was spent: {model.retries} retries already, and "
        f"retries must stay < ratio * requests + reserve = {policy.ratio:g} * {model.requests}"
        f" + {policy.reserve}",
    }[why]


def judged_by(name: str, promise: str, hint: int, rng: random.Random | None = None,
              drawn: st.SearchStrategy[Any] | None = None) -> None:
    @EXERCISE.prop(name, promise, schedules=schedules() if drawn is None else drawn, hint=hint)
    def check(learner: ModuleType, schedule: Any, trace: Trace) -> None:
        drive(learner, schedule, trace, name, rng)


judged_by("retries_transient_failures",
          "a timeout or refused connection is retried, and the success returned", 1)
judged_by("stops_after_attempts", "never more than `attempts` tries; then the last error", 1)
judged_by("retries_only_transient_errors", "an error that is not transient is raised at once", 2)
judged_by("never_retries_non_idempotent", "a call that is not idempotent is tried once", 2)
judged_by("backoff_grows_exponentially",
          "the delay before retry n is at most min(max_delay, base_delay * 2**n)", 3,
          RiggedRandom(1.0), outages())
judged_by("delays_are_jittered", "the delay is random in [0, that cap] (full jitter)", 4,
          RiggedRandom(0.0), outages())
judged_by("stays_within_budget", "retries < ratio * requests + reserve, over all calls", 5)
