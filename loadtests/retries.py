"""Retries scenario: a dependency failing 30 % of requests, called with naive retries and with
backoff + jitter + a retry budget.

What it demonstrates. Retries buy success rate with extra load on the dependency, and the
price is set by the policy, not by the fault:

- naive (3 attempts at once, no budget): each request costs 1 + p + p² attempts on average —
  1.39 at p = 0.3 — and the client sees 1 - p³ = 97.3 % success. When the dependency is down
  (p -> 1) the same policy triples its load, exactly when it can least take it;
- budgeted (backoff with full jitter, retries capped at 8 % of recent requests by a shared
  RetryBudget): at most ~1.08 attempts per request whatever p is; the client sees less than
  the naive success rate (about 1 - p + 0.08 * 0.7 = 75.6 %), and the dependency never more
  than 8 % extra load.

The flaky service (loadtests/flaky.py, seeded) fails each attempt with probability 0.3 and counts
requests and attempts per policy (amplification is its attempts / its requests); Locust
(loadtests/locust_retries.py) counts what the client saw.

Goal: naive amplification within 1.39 ± 0.1; budgeted amplification <= 1.1.

Reading the plot: blue is naive, orange budgeted; the whole run is shaded (the dependency is
flaky throughout). Top: requests per second each policy completes. Bottom: failures per second
as the client saw them — orange higher, the price of the budget. The table's "per attempt"
success rate is the same 70 % for both: the dependency did not change, only how often it was
asked.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from loadtests.harness import (ROOT, LocustProcess, LocustRun, Report, number, plot_history,
                               write_report)
from loadtests.names import BUDGETED, NAIVE

FAILURE_RATE = 0.3
NAIVE_EXPECTED = 1 + FAILURE_RATE + FAILURE_RATE**2  # 1.39
POLICIES = {NAIVE: "naive", BUDGETED: "budgeted"}  # request name -> flaky service path


@contextmanager
def flaky_service(seed: int = 42) -> Iterator[str]:
    """Run loadtests.flaky in a child process; yield its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtests.flaky", "--failure-rate", str(FAILURE_RATE),
         "--seed", str(seed)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        yield process.stdout.readline().split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=10)


def run(out: Path, short: bool = False) -> Report:
    seconds = 15 if short else 60
    with flaky_service() as url:
        with LocustProcess("loadtests/locust_retries.py", url, users=8, seconds=seconds,
                           prefix=out / "retries") as load:
            load.mark(0, f"{FAILURE_RATE:.0%} of attempts fail")
        attempts = requests.get(f"{url}/stats", timeout=10).json()
    return _report(out, load, attempts)


def _policy_numbers(run: LocustRun, name: str, attempts: dict) -> dict[str, float]:
    row = run.stats(name)
    counted = attempts.get(POLICIES[name], {"requests": 0, "attempts": 0, "failures": 0})
    seen_by_client = number(row, "Request Count")
    return {
        "requests": counted["requests"],
        "attempts": counted["attempts"],
        "amplification": counted["attempts"] / counted["requests"] if counted["requests"]
        else 0.0,
        "client_success": 1 - number(row, "Failure Count") / seen_by_client if seen_by_client
        else 0.0,
        "attempt_success": 1 - counted["failures"] / counted["attempts"] if counted["attempts"]
        else 0.0,
    }


def _report(out: Path, load: LocustProcess, attempts: dict) -> Report:
    run = load.run
    policies = {name: _policy_numbers(run, name, attempts) for name in POLICIES}
    naive, budgeted = policies[NAIVE]["amplification"], policies[BUDGETED]["amplification"]
    plot = plot_history(out / "retries.png", "Retries against a 30 % flaky dependency",
                        {name: run.history(name) for name in POLICIES},
                        {name: run.started_at for name in POLICIES}, load.windows)
    table = [row for name, values in policies.items() for row in (
        (f"{name}: requests / attempts", f"{values['requests']:.0f} / {values['attempts']:.0f}"),
        (f"{name}: amplification (attempts per request)", f"{values['amplification']:.3f}"),
        (f"{name}: success as the client saw it", f"{values['client_success']:.1%}"),
        (f"{name}: success per attempt", f"{values['attempt_success']:.1%}"))]
    report = Report(
        scenario="retries", title="naive retries vs backoff + jitter + budget",
        goal=f"naive amplification {NAIVE_EXPECTED:.2f} ± 0.1, budgeted <= 1.1",
        passed=abs(naive - NAIVE_EXPECTED) <= 0.1 and 1.0 <= budgeted <= 1.1,
        numbers={"naive_amplification": naive, "budgeted_amplification": budgeted,
                 "naive_client_success": policies[NAIVE]["client_success"],
                 "budgeted_client_success": policies[BUDGETED]["client_success"]},
        table=table, explanation=__doc__, plots=[plot], csv_files=run.files())
    write_report(report, out)
    return report
