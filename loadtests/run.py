"""Run one load scenario and write its report: `python -m loadtests.run SCENARIO [--short]`.

    python -m loadtests.run breaker           # p99 of orders, breaker vs none (two sandboxes)
    python -m loadtests.run retries --short   # retry amplification, naive vs budgeted
    python -m loadtests.run saga              # orders under failures, then `microlab check`

The report (Markdown + PNG) and Locust's CSVs go to reports/load/<scenario>/ (or --out). The
exit status is 0 when the scenario's verdict is PASS, 1 when it is FAIL.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path

from loadtests.harness import REPORTS, Report

SCENARIOS = ("breaker", "retries", "saga")


def run_scenario(name: str, out: Path, short: bool = False) -> Report:
    """Run scenario `name` into a fresh directory `out`; return its report."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return importlib.import_module(f"loadtests.{name}").run(out, short=short)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--short", action="store_true", help="the quick version tests run")
    parser.add_argument("--out", type=Path, help="report directory (reports/load/SCENARIO)")
    args = parser.parse_args(argv)
    out = args.out or REPORTS / args.scenario
    report = run_scenario(args.scenario, out, short=args.short)
    for measure, value in report.table:
        print(f"  {measure}: {value}")
    print(f"{args.scenario}: {report.verdict} — {report.goal}\nreport: {out / 'report.md'}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
