"""Grader of the circuit breaker exercise: the learner's breaker and a model run side by side.

A schedule is a threshold, a recovery timeout and a list of steps: a call whose dependency
succeeds or fails (sometimes making a second call from inside the first, as a concurrent caller
would while the first is still in flight), or the fake clock moving on. Before every call the
model says what a correct breaker does: let it through (closed), reject it at once (open), or
let exactly one trial through (half-open). Each property judges one kind of decision; once the
learner's breaker has decided differently from the model, the rest of that schedule says
nothing more about the other properties (they get their own schedules).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

from exercises.grading import Exercise, Trace

EXERCISE = Exercise(
    "breaker", "Circuit breaker", order=10, requires=("CircuitBreaker", "CircuitOpenError")
)


class DependencyDown(ConnectionError):
    """What the fake dependency raises when the schedule says it fails."""


@dataclass(frozen=True)
class Call:
    fails: bool
    nested: bool  # a second call arrives while this one is in flight


@dataclass(frozen=True)
class Wait:
    seconds: int


@st.composite
def schedules(draw: st.DrawFn, lead_in: str = "") -> tuple[int, int, list[Call | Wait]]:
    """Settings, then steps that lead straight to the state a property is about (so every
    schedule reaches it), then random steps."""
    threshold = draw(st.integers(1, 4))
    timeout = draw(st.integers(2, 30))
    fail, succeed = Call(fails=True, nested=False), Call(fails=False, nested=False)
    steps: list[Call | Wait] = []
    if lead_in == "success_between_failures":
        steps = [fail] * (threshold - 1) + [succeed] + [fail] * (threshold - 1)
    elif lead_in:
        steps = [fail] * threshold  # opens
    if lead_in in ("half_open", "trial", "nested_trial"):
        steps.append(Wait(draw(st.sampled_from([timeout, timeout + 1, 2 * timeout]))))
    if lead_in == "trial":
        steps.append(Call(fails=draw(st.booleans()), nested=draw(st.booleans())))
    if lead_in == "nested_trial":
        steps.append(Call(fails=draw(st.booleans()), nested=True))
    call = st.builds(Call, fails=st.sampled_from([True, True, False]),
                     nested=st.sampled_from([False, False, False, True]))
    wait = st.builds(Wait, st.sampled_from([timeout, timeout - 1, 1, 2 * timeout]))
    steps += draw(st.lists(st.one_of(call, call, wait), min_size=1, max_size=30))
    return threshold, timeout, steps


class Model:
    """What a correct breaker decides, and why (the why names the property being judged)."""

    def __init__(self, threshold: int, timeout: int) -> None:
        self.threshold, self.timeout = threshold, timeout
        self.state, self.why = "closed", "closed_passes_calls_through"
        self.failures_in_a_row = 0
        self.opened_at = 0.0

    def decide(self, now: float) -> str:
        if self.state == "open" and now - self.opened_at >= self.timeout:
            self.state, self.why = "half_open", "half_open_after_recovery_timeout"
        return self.state

    def record(self, failed: bool, now: float) -> None:
        if self.state == "half_open":
            if failed:
                self.state, self.why, self.opened_at = "open", "trial_outcome_decides", now
            else:
                self.state, self.why = "closed", "trial_outcome_decides"
            self.failures_in_a_row = 0
            return
        self.failures_in_a_row = self.failures_in_a_row + 1 if failed else 0
        if self.failures_in_a_row >= self.threshold:
            self.state, self.why, self.opened_at = "open", "opens_after_threshold_failures", now
            self.failures_in_a_row = 0


def expected_call(state: str) -> str:
    return {
        "closed": "the call goes through to the dependency",
        "open": "CircuitOpenError at once, the dependency not called",
        "half_open": "one trial call goes through to the dependency",
    }[state]


def drive(learner: ModuleType, schedule: Any, trace: Trace, judging: str) -> None:
    """Run the schedule; judge only the decisions whose reason is `judging`."""
    threshold, timeout, steps = schedule
    trace.given(failure_threshold=threshold, recovery_timeout=timeout)
    breaker = learner.CircuitBreaker(
        failure_threshold=threshold, recovery_timeout=timeout, clock=trace.clock
    )
    model = Model(threshold, timeout)
    for number, step in enumerate(steps, 1):
        if isinstance(step, Wait):
            trace.advance(step.seconds)
            continue
        now = trace.clock.monotonic()
        state = model.decide(now)
        why = model.why
        trace.step(
            f"call: the dependency {'fails' if step.fails else 'answers'}"
            + (", and a 2nd call arrives while it runs" if step.nested else "")
        )
        seen_state = breaker.state
        trace.outcome(f"state was {seen_state!r}")
        if seen_state != state:
            if why == judging:
                trace.expect(False, expected=f"state {state!r}", got=f"state {seen_state!r}")
            return
        called: list[str] = []
        nested_called: list[bool] = []
        error = DependencyDown(f"down #{number}")

        def dependency() -> str:
            called.append("yes")
            if step.nested:
                try:
                    breaker.call(lambda: nested_called.append(True))
                except learner.CircuitOpenError:
                    nested_called.append(False)
            if step.fails:
                raise error
            return f"answer #{number}"

        try:
            result: Any = breaker.call(dependency)
            outcome = f"returned {result!r}"
        except learner.CircuitOpenError:
            result, outcome = learner.CircuitOpenError, "raised CircuitOpenError"
        except DependencyDown as raised:
            result, outcome = raised, f"raised {raised!r}"
        trace.outcome(("dependency called; " if called else "dependency NOT called; ") + outcome)
        if step.nested and nested_called:
            trace.outcome(f"2nd call {'went through' if nested_called[0] else 'rejected'}")

        if state == "open":
            ok = not called and result is learner.CircuitOpenError
        else:
            answered = result is error if step.fails else result == f"answer #{number}"
            ok = len(called) == 1 and answered
        if not ok:
            if why == judging:
                got = outcome if called else "the dependency was not called; " + outcome
                if called and step.fails and result is not error:
                    got = f"{outcome} (the dependency's own exception must reach the caller)"
                trace.expect(False, expected=expected_call(state), got=got)
            return
        if why == judging:
            trace.expect(True, expected="", got="")
        if step.nested and state == "closed":
            if nested_called != [True]:
                if why == judging:
                    trace.expect(False, expected="the 2nd call goes through too (closed)",
                                 got="the 2nd call was rejected")
                return
            model.record(False, now)  # the 2nd call succeeded, and finished first
        if step.nested and state == "half_open":
            if judging == "half_open_admits_one_trial":
                trace.expect(
                    nested_called == [False],
                    expected="the 2nd call rejected with CircuitOpenError while the trial runs",
                    got="the 2nd call went through to the dependency too",
                )
            elif nested_called != [False]:
                return
        if state != "open":  # a rejected call never reached the dependency: nothing to count
            model.record(step.fails, now)


@EXERCISE.prop(
    "closed_passes_calls_through",
    "while closed, every call reaches the dependency; its answer or error reaches the caller",
    schedules=schedules("success_between_failures"),
    hint=1,
)
def closed_passes_calls_through(learner: ModuleType, schedule: Any, trace: Trace) -> None:
    drive(learner, schedule, trace, "closed_passes_calls_through")


@EXERCISE.prop(
    "opens_after_threshold_failures",
    "after failure_threshold failures in a row it opens and fails fast",
    schedules=schedules("opens"),
    hint=2,
)
def opens_after_threshold_failures(learner: ModuleType, schedule: Any, trace: Trace) -> None:
    drive(learner, schedule, trace, "opens_after_threshold_failures")


@EXERCISE.prop(
    "half_open_after_recovery_timeout",
    "once recovery_timeout has passed, the next call is let through as a trial",
    schedules=schedules("half_open"),
    hint=3,
)
def half_open_after_recovery_timeout(learner: ModuleType, schedule: Any, trace: Trace) -> None:
    drive(learner, schedule, trace, "half_open_after_recovery_timeout")


@EXERCISE.prop(
    "half_open_admits_one_trial",
    "while the trial runs, other calls are rejected",
    schedules=schedules("nested_trial"),
    hint=4,
)
def half_open_admits_one_trial(learner: ModuleType, schedule: Any, trace: Trace) -> None:
    drive(learner, schedule, trace, "half_open_admits_one_trial")


@EXERCISE.prop(
    "trial_outcome_decides",
    "a trial that succeeds closes the circuit; one that fails opens it for a new timeout",
    schedules=schedules("trial"),
    hint=5,
)
def trial_outcome_decides(learner: ModuleType, schedule: Any, trace: Trace) -> None:
    drive(learner, schedule, trace, "trial_outcome_decides")
