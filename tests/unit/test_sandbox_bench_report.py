"""The sandbox benchmark's report: the change against the previous run and the target verdicts
(bench/sandbox_bench.py), on made-up numbers, without a sandbox; and its CPU reading, on a
child of the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.sandbox_bench import (TARGETS, change, cpu_seconds, cpu_used, raw_numbers,
                                 read_previous, render_headline)

MACHINE = {"date": "2026-12-04 10:00 UTC", "cpus": 2}


def made_up_results(cpu_s: dict[str, float], *, created: int = 1000, orders_s: float = 100.0,
                    p99: float = 0.2, pss_mib: float = 400, wall_s: float = 2.5) -> dict:
    """The part of a run's results the headline reads: the 8 clients level, memory, starts."""
    level = {"clients": 8, "seconds": 10.0, "created": created, "orders_s": orders_s,
             "p99": p99, "cpu_s": cpu_s, "cpu_missing": [],
             "cpu_ms_per_order": 1000 * sum(cpu_s.values()) / created}
    return {"orders": [{**level, "clients": 1}, level],
            "memory_idle": {"total": pss_mib * 2**20,
                            "rows": {name: pss_mib * 2**20 / len(cpu_s) for name in cpu_s}},
            "starts": [{"wall_s": wall_s - 1}, {"wall_s": wall_s}, {"wall_s": wall_s + 5}],
            "idle_cpu": {"seconds": 10.0, "percent": 0.5 * len(cpu_s), "missing": [],
                         "cpu_s": {name: 0.05 for name in cpu_s}}}  # 0.5 % of a core each


def test_change_shows_before_after_and_the_relative_change():
    assert change(82.0, 21.3, "ms", 1) == "82.0 → 21.3 ms (−74 %)"
    assert change(80, 85, "orders/s", 1) == "80.0 → 85.0 orders/s (+6 %)"
    assert change(2.5, 2.5, "s", 2) == "2.50 → 2.50 s (±0 %)"
    assert change(0.0, 1.5, "%", 1) == "0.0 → 1.5 %"  # no relative change from zero
    assert change(None, 3.0, "s", 2) == "-"  # no previous run


def test_the_targets_are_the_issues():
    assert {t.figure: t.describe() for t in TARGETS} == {
        "cpu_ms_per_order": "≤ 20 ms", "orders_s": "≥ 80 orders/s", "p99_ms": "≤ 250 ms",
        "pss_idle_mib": "≤ 450 MiB", "cold_start_s": "≤ 3 s",
        "idle_cpu_percent": "≤ 2 % of a core"}


@pytest.mark.parametrize(("figure", "met", "missed"), [
    ("cpu_ms_per_order", 20.0, 20.1), ("orders_s", 80.0, 79.9), ("p99_ms", 250, 251),
    ("pss_idle_mib", 450, 451), ("cold_start_s", 3.0, 3.01), ("idle_cpu_percent", 2.0, 2.1)])
def test_a_target_is_met_up_to_its_limit_and_not_beyond(figure, met, missed):
    target = next(t for t in TARGETS if t.figure == figure)
    assert target.met(met)
    assert not target.met(missed)


def test_the_report_compares_with_the_numbers_the_previous_run_left(tmp_path):
    before = made_up_results({"mongo": 50.0, "orders": 32.0}, orders_s=40, p99=0.4)
    saved = tmp_path / "bench-sandbox.json"
    saved.write_text(json.dumps(raw_numbers(before, MACHINE)))
    now = made_up_results({"mongo": 6.0, "orders": 15.3})

    report = "\n".join(render_headline(now, read_previous(saved), str(saved)))

    assert ("| **CPU per confirmed order**, summed over the sandbox's processes, 8 clients "
            "| 21.3 ms | ≤ 20 ms | ✗ | 82.0 → 21.3 ms (−74 %) |") in report
    assert "| 100.0 orders/s | ≥ 80 orders/s | ✓ | 40.0 → 100.0 orders/s (+150 %) |" in report
    assert "| 200 ms | ≤ 250 ms | ✓ | 400 → 200 ms (−50 %) |" in report
    assert "| 2.50 s | ≤ 3 s | ✓ |" in report  # the median of the starts
    assert "Previous run: 2026-12-04 10:00 UTC" in report
    rows = [line for line in report.splitlines() if line.startswith(("| mongo", "| orders"))]
    assert rows == [  # the costliest process first
        "| orders | 15.30 | 72 % | 32.00 → 15.30 ms (−52 %) | 0.5 |",
        "| mongo | 6.00 | 28 % | 50.00 → 6.00 ms (−88 %) | 0.5 |"]
    assert "| **total** | **21.30** | 100 % | 82.00 → 21.30 ms (−74 %) | 1.0 |" in report


def test_without_readable_previous_numbers_there_is_no_change(tmp_path):
    saved = tmp_path / "bench-sandbox.json"
    assert read_previous(saved) == {}
    saved.write_text("{not json")
    assert read_previous(saved) == {}
    report = "\n".join(render_headline(made_up_results({"orders": 10.0}), {}, str(saved)))
    assert "| 10.0 ms | ≤ 20 ms | ✓ | - |" in report
    assert "No previous run's numbers" in report


def test_a_process_counts_its_children_alive_or_exited_and_the_supervisor_only_itself():
    pids = {"service": os.getpid(), "supervisor": os.getpid(), "gone": 2**22 + 1}  # > pid_max
    before = cpu_seconds(pids)
    assert "gone" not in before  # no such process: left out, not counted as zero
    # Burns 0.3 s of its own CPU however fast the machine is, then waits.
    burn = ("import time\nwhile time.process_time() < 0.3: pass\n"
            "print(flush=True); input()")
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    child.stdout.readline()  # it has burnt its CPU and waits for its stdin to close
    alive = cpu_used(before, cpu_seconds(pids))
    child.communicate(b"\n")  # it exits: its time moves to its parent's children times
    exited = cpu_used(before, cpu_seconds(pids))

    assert alive["service"] - alive["supervisor"] >= 0.25  # clock ticks: 0.3 s, give or take
    assert exited["service"] - exited["supervisor"] >= 0.25
