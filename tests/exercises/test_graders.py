"""The graders graded: every exercise's grader fails its starter, passes its reference, and
fails each of its wrong solutions on the property the wrong solution says it breaks.

Parametrised over every `exercises/*/grader.py`, so a new exercise is covered as soon as it
exists. The seed is fixed (GRADER_SEED to try another), so CI is reproducible; the graders were
also run over many seeds by hand (see exercises/ENGINE.md) to make sure a fixed seed is not
what makes a wrong solution fail. `make grade` uses a fresh random seed on every run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exercises.grading import engine
from exercises.grading.engine import EXERCISES_DIR, LoadError, grade, load_exercises, load_learner
from exercises.grading.report import render

SEED = int(os.environ.get("GRADER_SEED", "20261204"))
EXAMPLES = 20  # the least the issue allows; enough for every wrong solution at this seed
ROOT = EXERCISES_DIR.parent
EXERCISES = load_exercises()


def wrong_solutions() -> list[tuple[str, Path]]:
    return [(exercise.name, path) for exercise in EXERCISES
            for path in sorted((exercise.directory / "wrong").glob("*.py"))]


def breaks(path: Path) -> set[str]:
    """The property names after `breaks:` in a wrong solution's docstring."""
    found = re.search(r"breaks:\s*([\w, ]+)", path.read_text(encoding="utf-8"))
    assert found, f"{path} must say which property it breaks (`breaks: name`)"
    return {name.strip() for name in found.group(1).split(",") if name.strip()}


def failed(exercise_name: str, path: Path) -> set[str]:
    (exercise,) = load_exercises([exercise_name])
    result = grade(exercise, path, SEED, EXAMPLES)
    return {r.prop.name for r in result.results if not r.passed}


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_exercise_is_complete(exercise: engine.Exercise) -> None:
    for needed in ("README.md", "starter.py", "reference.py", "grader.py"):
        assert (exercise.directory / needed).is_file(), f"{exercise.name} has no {needed}"
    assert len(list((exercise.directory / "wrong").glob("*.py"))) >= 2
    hints = exercise.hints()
    assert hints, f"{exercise.name}/README.md has no numbered list under '## Hints'"
    for prop in exercise.properties:
        assert 1 <= prop.hint <= len(hints), f"{prop.name} points at a hint that is not there"


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_starter_fails_everything(exercise: engine.Exercise) -> None:
    result = grade(exercise, exercise.starter, SEED, EXAMPLES)
    assert not any(r.passed for r in result.results)


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_reference_passes(exercise: engine.Exercise) -> None:
    result = grade(exercise, exercise.directory / "reference.py", SEED, EXAMPLES)
    failures = {r.prop.name: r.failure for r in result.results if not r.passed}
    assert not failures


@pytest.mark.parametrize(("exercise_name", "path"), wrong_solutions(),
                         ids=lambda value: value.stem if isinstance(value, Path) else value)
def test_wrong_solution_fails_where_it_is_wrong(exercise_name: str, path: Path) -> None:
    expected = breaks(path)
    (exercise,) = load_exercises([exercise_name])
    assert expected <= {prop.name for prop in exercise.properties}, "breaks: names no property"
    assert expected & failed(exercise_name, path)


# -- the engine: learner mistakes become messages, never tracebacks ---------------------------


def write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "starter.py"
    path.write_text(source, encoding="utf-8")
    return path


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "class TokenBucket:\n    def take(self, key)\n        pass\n")
    with pytest.raises(LoadError, match=r"starter.py line 2: .*def take\(self, key\)"):
        load_learner(path, ("TokenBucket",))


def test_crash_at_import_names_the_learners_line(tmp_path: Path) -> None:
    path = write(tmp_path, "LIMIT = 1 / 0\n")
    with pytest.raises(LoadError, match=r"ZeroDivisionError.*starter.py line 1: LIMIT = 1 / 0"):
        load_learner(path)


def test_missing_name_is_reported(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="defines no TokenBucket"):
        load_learner(write(tmp_path, "class Bucket: ...\n"), ("TokenBucket",))


def test_each_grade_sees_the_file_as_saved_now(tmp_path: Path) -> None:
    path = write(tmp_path, "VALUE = 1\n")
    assert load_learner(path).VALUE == 1
    path.write_text("VALUE = 2\n", encoding="utf-8")
    assert load_learner(path).VALUE == 2


def test_an_endless_loop_is_stopped_and_reported(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "EXAMPLE_TIMEOUT", 0.3)
    source = (EXERCISES_DIR / "rate_limiter" / "reference.py").read_text(encoding="utf-8")
    path = write(tmp_path, source.replace("        now = self.clock.monotonic()\n",
                                          "        while True:\n            pass\n", 1))
    (exercise,) = load_exercises(["rate_limiter"])
    result = grade(exercise, path, SEED, EXAMPLES)
    assert "ran for more than 0.3s" in result.results[0].failure.reason


def test_endless_sleeping_is_stopped_and_shrunk(tmp_path: Path) -> None:
    source = (EXERCISES_DIR / "retry" / "reference.py").read_text(encoding="utf-8")
    path = write(tmp_path, source.replace("return fn()", "fn()"))  # never stops on a success
    (exercise,) = load_exercises(["retry"])
    result = grade(exercise, path, SEED, EXAMPLES)
    failure = result.results[0].failure
    assert "slept more than" in failure.reason
    assert "more …" in "\n".join(failure.trace)  # a long trace keeps its start and end only


def test_a_wrong_solution_gets_a_shrunk_readable_trace() -> None:
    (exercise,) = load_exercises(["breaker"])
    result = grade(exercise, exercise.directory / "wrong" / "admits_every_trial.py", SEED,
                   EXAMPLES)
    (failure,) = [r.failure for r in result.results if r.prop.name == "half_open_admits_one_trial"]
    assert failure.expected.startswith("the 2nd call rejected")
    steps = [line for line in failure.trace if re.match(r"\s*\d+\. t=", line)]
    # shortest: open the breaker, let the timeout pass, then the trial with a 2nd call
    assert len(steps) <= 4, failure.trace


def test_a_broken_grader_fails_only_its_own_exercise(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(EXERCISES_DIR / "rate_limiter", tmp_path / "rate_limiter")
    (tmp_path / "typo").mkdir()
    (tmp_path / "typo" / "grader.py").write_text("EXERCISE = Exercise('typo')\n", "utf-8")
    monkeypatch.setattr(engine, "EXERCISES_DIR", tmp_path)
    grader_module = "exercises.rate_limiter.grader"  # the copy's import replaces it: put it back
    monkeypatch.setitem(sys.modules, grader_module, sys.modules[grader_module])
    limiter, typo = load_exercises()
    assert grade(limiter, tmp_path / "rate_limiter" / "reference.py", SEED, EXAMPLES).passed
    broken = grade(typo, tmp_path / "typo" / "starter.py", SEED, EXAMPLES)
    assert not broken.passed
    assert "exercises/typo/grader.py does not load, so typo cannot be graded" in render(broken)
    assert "NameError: name 'Exercise' is not defined at grader.py line 1" in render(broken)


# -- make grade, as a learner sees it ----------------------------------------------------------


def make_grade(*args: str) -> subprocess.CompletedProcess[str]:
    """`make grade` without letting make rebuild the venv (-o: the stamp counts as fresh)."""
    env = {**os.environ, "FORCE_COLOR": "1"}
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.requirements-installed", "grade", *args,
         f"PY={sys.executable}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_make_grade_on_the_starters_is_red_with_a_first_hint() -> None:
    run = make_grade("EX=breaker", "SEED=7")
    assert run.returncode != 0
    assert "Traceback" not in run.stdout + run.stderr
    assert "\033[31mFAIL\033[0m" in run.stdout
    assert "not implemented yet: CircuitBreaker" in run.stdout
    assert "Hint 1/" in run.stdout
    assert "make grade EX=breaker SEED=7" in run.stdout


def test_make_grade_passes_a_reference_and_says_when_there_is_no_live_twin() -> None:
    run = make_grade("EX=rate_limiter", "SOLUTION=exercises/rate_limiter/reference.py", "LIVE=1")
    assert run.returncode == 0, run.stdout
    assert "LIVE=1: rate_limiter has no live twin yet" in run.stdout


def test_make_grade_rejects_an_unknown_exercise_clearly() -> None:
    run = make_grade("EX=brekar")
    assert run.returncode != 0
    assert "no exercise called brekar; there are: breaker" in run.stderr
    assert "Traceback" not in run.stderr


def test_state_kept_outside_the_object_is_named(tmp_path: Path) -> None:
    """A learner's module-level state makes a rerun of the same schedule differ (Hypothesis
    calls that flaky): the report says what usually causes it."""
    source = (EXERCISES_DIR / "rate_limiter" / "reference.py").read_text(encoding="utf-8")
    source = source.replace("class TokenBucket:\n", "CREATED = [0]\n\n\nclass TokenBucket:\n", 1)
    source = source.replace(
        "        self.capacity = capacity\n",
        "        CREATED[0] += 1\n        self.capacity = capacity + (CREATED[0] == 3)\n", 1)
    (exercise,) = load_exercises(["rate_limiter"])
    result = grade(exercise, write(tmp_path, source), 1, EXAMPLES)
    assert "state outside the object" in result.results[0].failure.reason
