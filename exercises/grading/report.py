"""The grade as a learner reads it in a terminal: one line per property, the shortest failing
trace of the first failure, the hint that helps with it, and how to rerun the very same run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from exercises.grading.engine import EXERCISES_DIR, Grade


def use_colour() -> bool:
    if "NO_COLOR" in os.environ:
        return False
    return "FORCE_COLOR" in os.environ or sys.stdout.isatty()


def paint(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if use_colour() else text


def green(text: str) -> str:
    return paint(text, "32")


def red(text: str) -> str:
    return paint(text, "31")


def dim(text: str) -> str:
    return paint(text, "2")


def bold(text: str) -> str:
    return paint(text, "1")


def shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(EXERCISES_DIR.parent))
    except ValueError:
        return str(path)


def render(grade: Grade, *, hint: bool = True) -> str:
    exercise = grade.exercise
    passed = sum(result.passed for result in grade.results)
    total = len(grade.results)
    verdict = green("PASS") if grade.passed else red("FAIL")
    lines = [
        f"{bold(exercise.name)} — {exercise.title}   {verdict} {passed}/{total} properties"
        f"   {dim(f'({shown_path(grade.learner_path)}, seed {grade.seed})')}"
    ]
    for result in grade.results:
        mark = green("✓") if result.passed else red("✗")
        lines.append(f"  {mark} {result.prop.name}: {result.prop.promise}")
        if result.failure and result is not grade.first_failure:
            failure = result.failure
            why = failure.reason or f"expected {failure.expected}; got {failure.got}"
            lines.append(f"      {dim(why)}")
    first = grade.first_failure
    if first is None or first.failure is None:
        return "\n".join(lines)
    failure = first.failure
    lines.append("")
    reason = f": {failure.reason}" if failure.reason else ""
    lines.append(red(f"  {first.prop.name} failed") + reason)
    if failure.trace:
        lines.append("  shortest failing schedule (fake clock, seconds):")
        lines.extend(f"    {line}" for line in failure.trace)
    if failure.expected:
        lines.append(f"  expected: {failure.expected}")
        lines.append(f"  got:      {red(failure.got)}")
    hints = exercise.hints()
    if hint and hints and first.prop.hint:  # a grader that does not load has no hint
        number = min(max(first.prop.hint, 1), len(hints))
        lines.append("")
        lines.append(bold(f"  Hint {number}/{len(hints)}: ") + hints[number - 1])
    lines.append(dim(f"  Rerun exactly this: make grade EX={exercise.name} SEED={grade.seed}"))
    return "\n".join(lines)
