"""The grading engine: run a learner's module over many seeded fault schedules, judge behaviour.

An exercise's `grader.py` builds one `Exercise` and declares its properties, each a promise the
pattern makes ("opens after N failures in a row and then fails fast"):

    EXERCISE = Exercise("breaker", "Circuit breaker", order=10,
                        requires=("CircuitBreaker", "CircuitOpenError"))

    @EXERCISE.prop("opens_after_threshold", "opens after N failures in a row, then fails fast",
                   schedules=st.lists(st.booleans(), max_size=20), hint=1)
    def opens_after_threshold(learner, schedule, trace): ...

For each property Hypothesis draws schedules (seeded: the same `seed` gives the same run), the
check runs the learner's code over one and records a `Trace`; a broken promise is an
`Expectation`. Hypothesis then shrinks the schedule, and the trace of the shortest one that
still fails is what the learner sees. No stack traces: an exception from the learner's code is
reported as the learner's own line, a missing body as "not implemented yet".
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky, HypothesisException
from hypothesis.strategies import SearchStrategy

from exercises.grading.trace import Expectation, Runaway, Trace

EXERCISES_DIR = Path(__file__).resolve().parent.parent
EXAMPLE_TIMEOUT = 5.0  # seconds of real time one schedule may take before we call it a hang

Check = Callable[[ModuleType, Any, Trace], None]


@dataclass
class Property:
    name: str
    promise: str
    check: Check
    schedules: SearchStrategy[Any]
    hint: int


@dataclass
class Failure:
    """Why a property failed, ready to print."""

    reason: str  # one line
    trace: list[str] = field(default_factory=list)
    expected: str = ""
    got: str = ""


@dataclass
class PropertyResult:
    prop: Property
    failure: Failure | None = None
    examples: int = 0

    @property
    def passed(self) -> bool:
        return self.failure is None


@dataclass
class Grade:
    exercise: Exercise
    learner_path: Path
    seed: int
    results: list[PropertyResult]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def first_failure(self) -> PropertyResult | None:
        return next((result for result in self.results if not result.passed), None)


class Exercise:
    """One exercise: the names the learner's file must define and the properties it must keep."""

    def __init__(self, name: str, title: str, *, order: int, requires: tuple[str, ...]) -> None:
        self.name = name
        self.title = title
        self.order = order
        self.requires = requires
        self.properties: list[Property] = []
        self.directory = EXERCISES_DIR / name
        self.broken = ""  # why its grader.py does not load; then grading it only says so

    def prop(
        self, name: str, promise: str, *, schedules: SearchStrategy[Any], hint: int
    ) -> Callable[[Check], Check]:
        """Declare a property: `check(learner_module, schedule, trace)` raises on a broken
        promise; `hint` is the number of the README hint that helps most when it fails."""

        def register(check: Check) -> Check:
            self.properties.append(Property(name, promise, check, schedules, hint))
            return check

        return register

    @property
    def starter(self) -> Path:
        return self.directory / "starter.py"

    @property
    def readme(self) -> Path:
        return self.directory / "README.md"

    def hints(self) -> list[str]:
        """The numbered items under `## Hints` in the README, in order of increasing detail."""
        text = self.readme.read_text(encoding="utf-8") if self.readme.exists() else ""
        section = re.search(r"^## Hints\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
        if not section:
            return []
        items = re.split(r"^\d+\.\s+", section.group(1), flags=re.M)[1:]
        return [re.sub(r"\s*\n\s*", " ", item.strip()) for item in items]


# -- loading ----------------------------------------------------------------------------------

_fresh = itertools.count()


class LoadError(Exception):
    """The learner's file could not be used at all (syntax error, crash at import, a name
    missing); the message says where, in the learner's own terms."""


def load_learner(path: Path, requires: tuple[str, ...] = ()) -> ModuleType:
    """Import the learner's file as a brand-new module (never a cached one), so every grade
    sees the file as it is saved now."""
    if not path.is_file():
        raise LoadError(f"{path} does not exist")
    name = f"_learner_{path.stem}_{next(_fresh)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look the module up while it loads
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise LoadError(
            f"{path.name} line {exc.lineno}: {exc.msg}: {(exc.text or '').strip()}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - anything the learner's file does at import
        raise LoadError(f"importing {path.name} failed: {describe_exception(exc, path)}") from None
    finally:
        sys.modules.pop(name, None)
    missing = [wanted for wanted in requires if not hasattr(module, wanted)]
    if missing:
        raise LoadError(f"{path.name} defines no {', '.join(missing)}")
    return module


def describe_exception(exc: BaseException, learner_path: Path) -> str:
    """One line for an exception: what it is and the learner's line that raised it."""
    frames = [
        frame
        for frame, _ in traceback.walk_tb(exc.__traceback__)
        if Path(frame.f_code.co_filename).resolve() == learner_path.resolve()
    ]
    if isinstance(exc, NotImplementedError) and frames:
        code = frames[-1].f_code
        where = f"{learner_path.name} line {frames[-1].f_lineno}"
        return f"not implemented yet: {code.co_qualname} ({where})"
    where = ""
    if frames:
        entries = traceback.extract_tb(exc.__traceback__)
        mine = [e for e in entries if Path(e.filename).resolve() == learner_path.resolve()]
        line = mine[-1]
        where = f" at {learner_path.name} line {line.lineno}: {line.line}"
    return f"{type(exc).__name__}: {exc}{where}"


# -- running ----------------------------------------------------------------------------------


class TimedOut(BaseException):
    """One schedule ran longer than EXAMPLE_TIMEOUT seconds of real time."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the learner's code after `seconds` (SIGALRM; only on the main thread, the
    grader's own). Repeats every half second in case the code catches the first one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise TimedOut()

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_property(prop: Property, learner: ModuleType, learner_path: Path, seed: int,
                 max_examples: int) -> PropertyResult:
    """Run one property over `max_examples` seeded schedules; on a failure, the shrunk one."""
    result = PropertyResult(prop)
    judged = 0
    last: list[Failure] = []  # Hypothesis replays the shortest failing schedule last

    def one_schedule(schedule: Any) -> None:
        nonlocal judged
        result.examples += 1
        trace = Trace()
        try:
            with time_limit(EXAMPLE_TIMEOUT):
                prop.check(learner, schedule, trace)
            judged += trace.judged > 0
        except Expectation as exc:
            last.append(Failure("", trace.lines(), exc.expected, exc.got))
            raise
        except Runaway as exc:
            last.append(Failure(exc.reason, trace.lines()))
            raise AssertionError(exc.reason) from None
        except TimedOut:
            last.append(Failure(
                f"one schedule ran for more than {EXAMPLE_TIMEOUT:g}s of real time: an endless "
                "loop, a real time.sleep, or a lock that is never released?", trace.lines()))
            raise
        except HypothesisException:
            raise
        except Exception as exc:
            last.append(Failure(describe_exception(exc, learner_path), trace.lines()))
            raise
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # e.g. a grader's own "the process crashed" escaping
            last.append(Failure(describe_exception(exc, learner_path), trace.lines()))
            raise AssertionError(repr(exc)) from None

    test = hypothesis.seed(seed)(settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
    )(given(prop.schedules)(one_schedule)))
    try:
        test()
    except TimedOut:
        result.failure = last[-1]
    except Flaky:
        result.failure = last[-1] if last else Failure("")
        result.failure.reason = (
            "the same schedule gave different results when rerun: does your code keep state "
            "outside the object (a class attribute, a global) or read the real time?")
    except Exception as exc:  # noqa: BLE001 - every failure is reported, never raised
        result.failure = last[-1] if last else Failure(f"the grader failed: {exc!r}")
    else:
        if not judged:
            result.failure = Failure(
                f"not reached: none of {result.examples} schedules got as far as this promise "
                "(fix the failures above first)")
    return result


def grade(exercise: Exercise, learner_path: Path, seed: int, max_examples: int = 60) -> Grade:
    """Grade one learner file against every property of `exercise`."""
    try:
        if exercise.broken:
            raise LoadError(exercise.broken)
        learner = load_learner(learner_path, exercise.requires)
    except LoadError as exc:
        failure = Failure(str(exc))
        results = [PropertyResult(prop, failure) for prop in exercise.properties]
        return Grade(exercise, learner_path, seed, results)
    results = [
        run_property(prop, learner, learner_path, seed, max_examples)
        for prop in exercise.properties
    ]
    return Grade(exercise, learner_path, seed, results)


BROKEN_ORDER = 10**6  # an exercise whose grader does not load comes after every other one
GRADER_LOADS = Property("grader_loads", "the exercise's grader.py loads",
                        check=lambda learner, schedule, trace: None, schedules=st.nothing(),
                        hint=0)


def load_exercises(names: list[str] | None = None) -> list[Exercise]:
    """Every exercise with a grader.py, in learning order; `names` picks some (and only
    their graders are imported)."""
    graders = {path.parent.name: path for path in sorted(EXERCISES_DIR.glob("*/grader.py"))}
    if names:
        unknown = [name for name in names if name not in graders]
        if unknown:
            raise LookupError(
                f"no exercise called {', '.join(unknown)}; there are: {', '.join(graders)}")
        return [load_grader(graders[name]) for name in names]
    exercises = [load_grader(path) for path in graders.values()]
    return sorted(exercises, key=lambda exercise: (exercise.order, exercise.name))


def load_grader(grader_path: Path) -> Exercise:
    """The `EXERCISE` a grader.py defines. A grader that does not load (a slip while writing
    one) makes only its own exercise fail, with the reason, not every exercise."""
    name = grader_path.parent.name
    spec = importlib.util.spec_from_file_location(f"exercises.{name}.grader", grader_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a grader's dataclasses need their module registered
    try:
        spec.loader.exec_module(module)
        exercise = module.EXERCISE
    except Exception as exc:  # noqa: BLE001 - reported as that exercise's failure
        sys.modules.pop(spec.name, None)
        exercise = Exercise(name, "its grader does not load", order=BROKEN_ORDER, requires=())
        exercise.broken = (f"exercises/{name}/grader.py does not load, so {name} cannot be "
                           f"graded (a bug in the exercise, not in your code): "
                           f"{describe_exception(exc, grader_path)}")
        exercise.properties.append(GRADER_LOADS)
    exercise.directory = grader_path.parent
    return exercise
