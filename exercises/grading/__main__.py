"""`make grade` — grade every exercise (or `EX=name`) and exit non-zero while anything fails.

    python -m exercises.grading [NAME ...] [--solution PATH] [--seed N] [--examples N] [--live]
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from exercises.grading.engine import grade, load_exercises
from exercises.grading.live import EXPERIMENTS, run_live
from exercises.grading.report import bold, dim, green, red, render


def live(name: str, learner_path: Path, graded_ok: bool) -> bool:
    """LIVE=1: the exercise's chaos experiment with the learner's code in the services."""
    if name not in EXPERIMENTS:
        print(dim(f"LIVE=1: {name} has no live twin yet (only breaker has); graded offline.\n"))
        return True
    if not graded_ok:
        print(red("LIVE=1 skipped:") + f" {name} must pass offline before it meets real chaos.\n")
        return False
    print(bold(f"LIVE=1: your {name} in the sandbox's services, under the "
               f"{EXPERIMENTS[name]} experiment (a few minutes)..."), flush=True)
    ok = bool(run_live(name, learner_path))
    print((green("LIVE passed") if ok else red("LIVE failed"))
          + f": see reports/chaos/live-{name}/report.md\n")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make grade", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="exercises to grade (default: all)")
    parser.add_argument("--solution", type=Path, help="grade this file instead of starter.py")
    parser.add_argument("--seed", type=int, help="rerun a run exactly (default: a random seed)")
    parser.add_argument("--examples", type=int, default=60,
                        help="schedules per property (default 60, at least 20)")
    parser.add_argument("--live", action="store_true", help="also run the live twin (LIVE=1)")
    args = parser.parse_args(argv)
    if args.examples < 20:
        parser.error("--examples must be at least 20")
    names = [name for name in args.names if name]
    if args.solution and len(names) != 1:
        parser.error("SOLUTION=path grades one exercise: give EX=name too")
    try:
        exercises = load_exercises(names)
    except LookupError as exc:
        parser.error(str(exc))
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    passed = 0
    for exercise in exercises:
        learner_path = args.solution or exercise.starter
        result = grade(exercise, learner_path, seed, args.examples)
        print(render(result))
        print()
        ok = result.passed
        if args.live:
            ok = live(exercise.name, learner_path, result.passed) and ok
        passed += ok
    total = len(exercises)
    summary = f"{passed}/{total} exercises pass (seed {seed})"
    print(bold(green(summary) if passed == total else red(summary)))
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())
