"""Breaker scenario: payments stops answering; how long do order requests wait, with and
without the circuit breaker of orders -> payments?

What it demonstrates. Mid-run the orders -> payments edge starts swallowing every request and
dropping the connection after 1 s (a Toxiproxy `timeout` toxic: a hung peer, not a refused one —
a refused connection fails in a millisecond with or without a breaker, so there would be
nothing to save). Each order then spends 3-6 s failing: the charge and the "was I charged
anyway?" lookup are each tried up to 3 times, 1 s apiece (fewer once the orders service's own
retry budget runs dry), before the saga compensates (503).

- with the breaker (the sandbox's defaults: open after 5 failures in a row, retry after 30 s),
  the first order after the fault pays those seconds and trips the breaker; every order after
  it fails fast (503 in a few hundred ms) — compensated, but quickly;
- without it (a second sandbox whose breakers never reject: BREAKER_FAILURE_THRESHOLD=1000000
  and BREAKER_RECOVERY_TIMEOUT=0.001), every order waits for the failure.

Why one user: the threshold alone does not disable a breaker — its error-rate rule (>= 50 % of
>= 10 calls in 10 s) still trips it. With a recovery timeout of 1 ms (0 is refused) every call after a trip is a
half-open trial, which for one caller at a time is exactly "no breaker"; concurrent callers
would be rejected while a trial runs, and the "without" side would quietly get a breaker.

Goal: p99 of `POST /api/orders` over the whole run is at least 10x lower with the breaker.
With the breaker one order (the one that trips it) is slow, so the run must hold more than
100 orders for p99 to be the fast ones: hence 35 s even in the short version.

Reading the plot: blue is with the breaker, orange without; the shaded band is the fault. In
the middle panel (latency over the last 10 s, log scale) both jump at the fault; blue falls
back within ~10 s while orange stays at 3-6 s. The top panel shows why that matters: orange
completes one order every few seconds, blue keeps answering several per second.
"""

from __future__ import annotations

from pathlib import Path

from loadtests.harness import LocustProcess, Report, number, plot_history, write_report
from loadtests.names import ORDERS
from loadtests.sandbox import add_toxic, sandboxes

EDGE = "orders->payments"
HANG = {"name": "payments_hang", "type": "timeout", "stream": "downstream",
        "attributes": {"timeout": 1000}}
RUNS = {"with breaker": {},
        "without breaker": {"BREAKER_FAILURE_THRESHOLD": "1000000",
                            "BREAKER_RECOVERY_TIMEOUT": "0.001"}}
GOAL_RATIO = 10.0


def run(out: Path, short: bool = False) -> Report:
    seconds, fault_at = (35, 5) if short else (60, 10)
    loads = {}
    with sandboxes(out / "sandboxes", RUNS) as started:
        for label, sandbox in started.items():
            prefix = out / label.replace(" ", "_")
            with LocustProcess("loadtests/locust_shop.py", sandbox.urls["gateway"], users=1,
                               seconds=seconds, prefix=prefix) as load:
                load.sleep_until(fault_at)
                add_toxic(sandbox, EDGE, HANG)
                load.mark(fault_at, "orders->payments hangs 1 s, then drops")
            loads[label] = load
    return _report(out, loads)


def _report(out: Path, loads: dict[str, LocustProcess]) -> Report:
    runs = {label: load.run for label, load in loads.items()}
    stats = {label: run.stats(ORDERS) for label, run in runs.items()}
    p99 = {label: number(row, "99%") for label, row in stats.items()}
    ratio = p99["without breaker"] / p99["with breaker"] if p99["with breaker"] else 0.0
    plot = plot_history(out / "breaker.png", "Orders while payments hangs: breaker vs none",
                        {label: run.history(ORDERS) for label, run in runs.items()},
                        {label: run.started_at for label, run in runs.items()},
                        next(iter(loads.values())).windows)
    table = [(f"{label}: {what}", f"{number(row, column):.0f}{unit}")
             for label, row in stats.items()
             for what, column, unit in (("orders sent", "Request Count", ""),
                                        ("failed (compensated)", "Failure Count", ""),
                                        ("p50", "50%", " ms"), ("p99", "99%", " ms"))]
    table.append(("p99 without / p99 with", f"{ratio:.1f}x"))
    report = Report(
        scenario="breaker", title="circuit breaker vs a hung payments service",
        goal=f"the breaker cuts p99 of order requests by >= {GOAL_RATIO:.0f}x",
        passed=ratio >= GOAL_RATIO,
        numbers={"p99_with_ms": p99["with breaker"], "p99_without_ms": p99["without breaker"],
                 "ratio": ratio},
        table=table, explanation=__doc__, plots=[plot],
        csv_files=[path for run in runs.values() for path in run.files()])
    write_report(report, out)
    return report
