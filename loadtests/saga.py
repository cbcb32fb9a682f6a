"""Saga scenario: orders under random payment declines, inventory outages and running-out stock;
then the invariant checker, which must find nothing wrong.

What it demonstrates. Every order runs the saga reserve -> charge -> confirm. Here:

- the stripe-sim payment provider declines 30 % of charges (`PUT
  /api/payments/providers/stripe-sim {"failure_rate": 0.3}` as admin) -> refund nothing,
  release the stock, order cancelled (402);
- the orders -> inventory edge is cut for 2 s now and then (`microlab chaos down
  orders:inventory`): a reservation that cannot be made ends the saga early (503); a commit
  that cannot be made after the charge is refunded, and the release waits for saga recovery;
- 3 users order 1-3 units of random products, so the seeded stock runs low (409).

Confirmed and compensated orders mix all run long; none may leave money or stock behind.
After the load the faults are lifted and `microlab check --json` runs (retried for a short
while: sagas and events still in flight at the end are finishing, which is what the checker's
"check a system at rest" asks for).

Goal: zero invariant violations, and both outcomes seen (confirmed and compensated orders);
no unexpected answer (a 500 or a timeout would be a saga bug, not a compensation).

Reading the plot: one line set, all orders. Top: orders answered per second. Middle: their
latency (p50/p95/p99 over the last 10 s). Bottom: compensated orders per second — a steady
floor from the payment declines, bumps in the shaded bands (inventory cut), and a rise as
stock runs out. The table splits the compensations by reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.harness import LocustProcess, Report, number, plot_history, write_report
from loadtests.names import ORDERS
from loadtests.sandbox import admin_session, chaos, check_invariants, sandboxes

PROVIDER = "/api/payments/providers/stripe-sim"
EDGE = "orders:inventory"
CUT_SECONDS = 2
# Breakers on the edges retry after 3 s instead of 30, so a 2 s cut stays a short outage.
ENV = {"BREAKER_RECOVERY_TIMEOUT": "3"}


def run(out: Path, short: bool = False) -> Report:
    seconds, cuts = (25, (8, 16)) if short else (60, (10, 25, 40))
    with sandboxes(out / "sandboxes", {"saga": ENV}) as started:
        sandbox = started["saga"]
        admin = admin_session(sandbox)
        provider = f"{sandbox.urls['gateway']}{PROVIDER}"
        admin.put(provider, json={"failure_rate": 0.3}, timeout=30).raise_for_status()
        with LocustProcess("loadtests/locust_shop.py", sandbox.urls["gateway"], users=3,
                           seconds=seconds, prefix=out / "saga",
                           env={"SHOP_MAX_QUANTITY": "3"}) as load:
            for start in cuts:
                load.sleep_until(start)
                chaos(sandbox, "down", EDGE)
                load.sleep_until(start + CUT_SECONDS)
                chaos(sandbox, "up", EDGE)
                load.mark(start, "orders->inventory cut", start + CUT_SECONDS)
        chaos(sandbox, "reset")
        admin.put(provider, json={"failure_rate": 0.0}, timeout=30).raise_for_status()
        code, checked, waited = check_invariants(sandbox, settle=30)
    return _report(out, load, code, checked, waited)


def _report(out: Path, load: LocustProcess, code: int, checked: dict, waited: float) -> Report:
    run = load.run
    row = run.stats(ORDERS)
    failures = run.failures(ORDERS)
    compensated = {_message(error): count for error, count in failures.items()
                   if "compensated" in error}
    unexpected = sum(failures.values()) - sum(compensated.values())
    confirmed = number(row, "Request Count") - number(row, "Failure Count")
    violations = [(invariant["name"], violation) for invariant in checked.get("invariants", [])
                  for violation in invariant["violations"]]
    plot = plot_history(out / "saga.png", "Orders under payment declines and inventory cuts",
                        {ORDERS: run.history(ORDERS)}, {ORDERS: run.started_at}, load.windows)
    table = [("orders confirmed", f"{confirmed:.0f}"),
             ("orders compensated", f"{sum(compensated.values())}"),
             *((f"  {error}", str(count)) for error, count in sorted(compensated.items())),
             ("unexpected answers", str(unexpected)),
             ("`microlab check` exit code", f"{code} (after {waited:.0f} s of settling)"),
             ("invariant violations", str(len(violations)) if "invariants" in checked
              else f"checker failed: {checked.get('error', '?')}"),
             *((f"  {name}", _brief(violation)) for name, violation in violations[:10])]
    report = Report(
        scenario="saga", title="orders under random payment and inventory failures",
        goal="zero invariant violations, confirmed and compensated orders both seen, "
             "no unexpected answers",
        passed=code == 0 and confirmed > 0 and bool(compensated) and unexpected == 0,
        numbers={"confirmed": confirmed, "compensated": sum(compensated.values()),
                 "unexpected": unexpected, "violations": len(violations), "check_exit": code},
        table=table, explanation=__doc__, plots=[plot], csv_files=run.files())
    write_report(report, out)
    (out / "check.json").write_text(json.dumps(checked, indent=2))
    return report


def _message(error: str) -> str:
    """Locust's "CatchResponseError('compensated 402 payment_declined')" -> the message."""
    return error.split("'")[1] if error.count("'") >= 2 else error


def _brief(violation: dict) -> str:
    ids = ", ".join(violation["ids"])
    return f"{ids}: {violation['detail']}"[:200].replace("|", "/")
