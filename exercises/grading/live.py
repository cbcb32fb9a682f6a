"""`make grade EX=breaker LIVE=1`: the learner's breaker inside the real services, under chaos.

The offline grader proves the breaker's logic on a fake clock. The live run shows what it
does for a real system: a throwaway sandbox is started whose services build their breakers
from the learner's file (patterns/breaker.py builds breakers with the factory
`MICROLAB_BREAKER_FACTORY` names: `learner_breaker_from_env` here, which loads the file
`MICROLAB_LEARNER_BREAKER` names),
and the `payments-outage` chaos experiment is run against it (`chaos.runner`): orders cannot
reach payments for a while, and the shop must fail cleanly and confirm orders again once
payments is back — which needs a breaker that half-opens and closes. The verdict and a plot
land in reports/chaos/live-breaker/.

`LearnerBreaker` adapts the exercise's small interface (`call(fn)`, `state`) to the one the
services use (`call(fn, *args)`, `is_failure`, listeners, `snapshot`, our `CircuitOpenError`).
Only the breaker has a live twin so far; retry and rate_limiter say so.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, TypeVar

from exercises.grading.engine import load_learner
from patterns.breaker import (
    BREAKER_FACTORY_ENV,
    CircuitOpenError,
    Listener,
    State,
    every_exception,
)
from patterns.clock import SYSTEM_CLOCK

T = TypeVar("T")
EXPERIMENTS = {"breaker": "payments-outage"}


class LearnerBreaker:
    """A learner's `CircuitBreaker` seen through the interface of patterns.breaker's."""

    def __init__(self, learner: ModuleType, name: str, *, failure_threshold: int = 5,
                 recovery_timeout: float = 30.0,
                 is_failure: Callable[[Exception], bool] = every_exception,
                 **unsupported: Any) -> None:
        self.name = name
        self.is_failure = is_failure
        self._learner = learner
        self._settings = {"failure_threshold": failure_threshold,
                          "recovery_timeout": recovery_timeout}
        self._breaker = learner.CircuitBreaker(**self._settings, clock=SYSTEM_CLOCK)
        self._listeners: list[Listener] = []

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        before = self.state
        not_failures: list[Exception] = []  # e.g. a 404: the peer answered; passed on as is

        def attempt() -> T | None:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if self.is_failure(exc):
                    raise
                not_failures.append(exc)
                return None

        try:
            result = self._breaker.call(attempt)
        except self._learner.CircuitOpenError:
            raise CircuitOpenError(self.name, 0.0) from None
        finally:
            self._notify(before, self.state)
        if not_failures:
            raise not_failures[0]
        return result  # type: ignore[return-value]

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        return lambda *args, **kwargs: self.call(fn, *args, **kwargs)

    @property
    def state(self) -> State:
        return State(self._breaker.state)

    def on_state_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def reset(self) -> None:
        before = self.state
        self._breaker = self._learner.CircuitBreaker(**self._settings, clock=SYSTEM_CLOCK)
        self._notify(before, self.state)

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "state": str(self.state), "retry_after": 0.0,
                "implementation": "learner", "settings": dict(self._settings)}

    def _notify(self, old: State, new: State) -> None:
        if old is not new:
            for listener in self._listeners:
                listener(self, old, new)  # type: ignore[arg-type]


LEARNER_BREAKER_ENV = "MICROLAB_LEARNER_BREAKER"


def learner_breaker(path: Path) -> Callable[..., LearnerBreaker]:
    """A factory with CircuitBreaker's signature that builds the learner's breaker."""
    learner = load_learner(path, ("CircuitBreaker", "CircuitOpenError"))
    return lambda name, **settings: LearnerBreaker(learner, name, **settings)


def learner_breaker_from_env() -> Callable[..., LearnerBreaker]:
    """The factory MICROLAB_BREAKER_FACTORY names in a live run's services."""
    return learner_breaker(Path(os.environ[LEARNER_BREAKER_ENV]))


def run_live(exercise_name: str, learner_path: Path) -> bool | None:
    """Replay the exercise's chaos experiment with the learner's code in the services; None
    when the exercise has no live twin."""
    experiment = EXPERIMENTS.get(exercise_name)
    if experiment is None:
        return None
    from chaos import runner  # the sandbox and the Chaos Toolkit: only for a live run

    os.environ[LEARNER_BREAKER_ENV] = str(learner_path.resolve())
    os.environ[BREAKER_FACTORY_ENV] = f"{__name__}:learner_breaker_from_env"
    try:
        with tempfile.TemporaryDirectory(prefix="microlab-live-") as scratch:
            # a run dir where no sandbox runs: the runner starts a throwaway one with our env
            out = runner.REPORTS / f"live-{exercise_name}"
            return runner.main([experiment, "--run-dir", scratch, "--out", str(out)]) == 0
    finally:
        del os.environ[LEARNER_BREAKER_ENV], os.environ[BREAKER_FACTORY_ENV]
