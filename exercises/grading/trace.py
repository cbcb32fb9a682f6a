"""What a grader writes down while it runs a learner's code: the steps, the clock, the verdict.

A property (see `engine.py`) gets a fresh `Trace` for every schedule it runs. It records what it
does (`trace.step("call → dependency fails")`), what came back (`trace.outcome("raised X")`),
and checks a promise with `trace.expect(ok, expected=..., got=...)`. When the promise is broken
the trace *is* the report: Hypothesis shrinks the schedule and the trace of the shortest failing
one is printed, numbered, with the fake clock's time on every line.

`trace.clock` is a `FakeClock` (patterns/clock.py) that also records every `sleep` in the trace
and stops code that sleeps forever, so a learner's endless retry loop becomes a failure with a
readable trace instead of a hung terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from patterns.clock import FakeClock

MAX_SLEEPS = 1_000


class Expectation(AssertionError):
    """A promise of the pattern that the learner's code did not keep."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}; got {got}")
        self.expected = expected
        self.got = got


class Runaway(BaseException):
    """Raised inside the learner's code to stop it (a BaseException, so `except Exception` in a
    retry loop cannot swallow it); the engine turns it into an ordinary failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Step:
    at: float
    text: str
    outcomes: list[str] = field(default_factory=list)


class GradingClock(FakeClock):
    """A `FakeClock` whose sleeps show up in the trace and which stops endless sleeping."""

    def __init__(self, trace: Trace, start: float = 0.0) -> None:
        super().__init__(start)
        self._trace = trace

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise Runaway(f"clock.sleep({seconds!r}): a negative sleep")
        super().sleep(seconds)
        self._trace.outcome(f"slept {seconds:.3f}s")
        if len(self.slept) > MAX_SLEEPS:
            raise Runaway(f"slept more than {MAX_SLEEPS} times: an endless loop?")


class Trace:
    """The steps of one schedule as the grader ran it, readable by a person."""

    def __init__(self) -> None:
        self.clock = GradingClock(self)
        self.settings: dict[str, object] = {}
        self.steps: list[Step] = []
        self.judged = 0  # how many promises this schedule checked (see `expect`)

    def given(self, **settings: object) -> None:
        """Record the (randomised) settings the learner's object was built with."""
        self.settings.update(settings)

    def step(self, text: str) -> None:
        """Record one thing the grader does: a call, a fault injected, the clock moved."""
        self.steps.append(Step(self.clock.monotonic(), text))

    def outcome(self, text: str) -> None:
        """Record what the last step led to (a return value, an exception, a sleep)."""
        if not self.steps:
            self.step("(setup)")
        self.steps[-1].outcomes.append(text)

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward, as a step of the schedule."""
        self.step(f"clock +{seconds:g}s")
        self.clock.advance(seconds)

    def expect(self, ok: bool, *, expected: str, got: str) -> None:
        """Check one promise; when it is broken the schedule so far is the failing trace.

        Every call counts as "judged": a property whose schedules never reach an `expect` fails
        as "not reached", so a learner's early bug cannot make later properties pass for free.
        """
        self.judged += 1
        if not ok:
            raise Expectation(expected, got)

    def lines(self, limit: int = 40) -> list[str]:
        """The trace as numbered lines; a very long one keeps its start and its end."""
        out = []
        if self.settings:
            out.append("with " + ", ".join(f"{k}={v!r}" for k, v in self.settings.items()))
        numbered = [
            f"{n:>3}. t={step.at:<7g} {step.text}"
            + (f"  → {'; '.join(shorten(step.outcomes))}" if step.outcomes else "")
            for n, step in enumerate(self.steps, 1)
        ]
        if len(numbered) > limit:
            keep = limit // 2
            skipped = len(numbered) - 2 * keep
            numbered = [*numbered[:keep], f"     … {skipped} steps …", *numbered[-keep:]]
        return out + numbered


def shorten(outcomes: list[str], keep: int = 4) -> list[str]:
    """One step's outcomes, the middle of a very long list (a loop of sleeps) left out."""
    if len(outcomes) <= 2 * keep + 1:
        return outcomes
    return [*outcomes[:keep], f"… {len(outcomes) - 2 * keep} more …", *outcomes[-keep:]]
