"""The load scenarios, short versions, each against sandboxes of its own: their verdicts pass
and their reports (Markdown, PNG plot, Locust CSVs) are written.

Locust runs in child processes only (importing it here would patch this process with gevent).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadtests.harness import Report
from loadtests.run import run_scenario

pytestmark = pytest.mark.slow


def run_short(name: str, tmp_path: Path) -> Report:
    report = run_scenario(name, tmp_path / name, short=True)
    out = tmp_path / name
    assert (out / "report.md").read_text().count(f"**Verdict: {report.verdict}**") == 1
    for plot in report.plots:
        assert plot.read_bytes().startswith(b"\x89PNG"), plot
    assert report.csv_files and all(path.stat().st_size > 0 for path in report.csv_files)
    assert "locust" not in sys.modules, "locust was imported into the pytest process"
    return report


def test_breaker_cuts_p99_of_orders_tenfold(tmp_path: Path) -> None:
    report = run_short("breaker", tmp_path)
    assert report.numbers["ratio"] >= 10, report.table
    assert report.passed


def test_retry_budget_holds_amplification(tmp_path: Path) -> None:
    report = run_short("retries", tmp_path)
    assert abs(report.numbers["naive_amplification"] - 1.39) <= 0.1, report.table
    assert report.numbers["budgeted_amplification"] <= 1.1, report.table
    assert report.passed


def test_saga_under_failures_leaves_no_violation(tmp_path: Path) -> None:
    report = run_short("saga", tmp_path)
    assert report.numbers["violations"] == 0 and report.numbers["check_exit"] == 0, report.table
    assert report.numbers["confirmed"] > 0 and report.numbers["compensated"] > 0, report.table
    assert report.passed
