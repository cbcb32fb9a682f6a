"""Turn a Chaos Toolkit journal into a verdict: Markdown, and a plot of the orders.

    python -m chaos.report reports/chaos/payments-outage/journal.json

writes `report.md` and `orders.png` beside the journal. The verdict answers:

- did the hypothesis (the steady state) hold before the fault, and again after it?
- what ran (probes, actions, rollbacks), when, for how long, with what result?
- the orders the load placed (`chaos.probes.place_orders`): how many got each answer
  (201 confirmed, 409 no stock, 402 declined, 503 unavailable, ...) before, during and after
  the fault, drawn over time with the fault shaded;
- what the invariant checker said before and after.

The fault windows are read from the method: from an action that breaks something (a proxy
disabled, a toxic added, a service stopped) to the action that repairs it.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): no display needed
from matplotlib.patches import Patch

LOAD_FUNC = "place_orders"
RECOVERY_FUNC = "wait_for_confirmed_order"
CHECKER_FUNC = "check_invariants"
BREAKING = {"disable_proxy", "create_toxic", "create_latency_toxic", "create_timeout_toxic",
            "create_bandwith_degradation_toxic", "create_slow_connection_close_toxic",
            "create_slicer_toxic", "create_limiter_toxic"}
REPAIRING = {"enable_proxy", "delete_toxic", "start_broker"}
# Faults made outside the Toxiproxy API: the function, and the argument naming what it breaks.
BREAKING_PROCESSES = {"kill_service": "service", "stop_broker": ""}
STATUS_COLUMNS = ("201", "409", "402", "503")
COLOURS = {"201": "tab:green", "409": "tab:orange", "402": "tab:purple", "503": "tab:red",
           "504": "tab:brown", "no answer": "black"}
PHASES = ("before", "during", "after")


@dataclass
class Verdict:
    name: str
    title: str
    status: str
    deviated: bool
    before: bool | None
    after: bool | None
    started: float
    windows: list[tuple[float, float]]
    activities: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    checker: dict[str, dict[str, Any]] = field(default_factory=dict)
    confirmed_again_at: float | None = None  # the first order confirmed after the repair

    @property
    def recovered_seconds(self) -> float | None:
        """From the last repair to the first order confirmed again: how long the shop took to
        heal (None: it did not, or the experiment did not wait for it)."""
        if self.confirmed_again_at is None or not self.windows:
            return None
        return round(max(0.0, self.confirmed_again_at - self.windows[-1][1]), 1)

    @property
    def checker_clean(self) -> bool:
        return bool(self.checker) and all(result.get("status") == 0
                                          for result in self.checker.values())

    @property
    def failed_activities(self) -> list[str]:
        """The method's activities that failed: a fault not injected, or a probe of the
        hypothesis during the fault (such as `answers_dependency_unavailable`) not met."""
        return [row["name"] for row in self.activities
                if row["phase"] == "method" and row["status"] == "failed"]

    @property
    def passed(self) -> bool:
        return (self.status == "completed" and not self.deviated and bool(self.before)
                and bool(self.after) and self.checker_clean and not self.failed_activities
                and self.recovered_seconds is not None)

    def phase(self, order: dict[str, Any]) -> str:
        if not self.windows or order["at"] < self.windows[0][0]:
            return "before"
        return "after" if order["at"] >= self.windows[-1][1] else "during"

    def counts(self) -> dict[str, Counter[str]]:
        """Answers per phase: {"during": Counter({"503": 20, "201": 2}), ...}."""
        table: dict[str, Counter[str]] = {phase: Counter() for phase in PHASES}
        for order in self.orders:
            table[self.phase(order)][_status(order)] += 1
        return table


# -- reading the journal ------------------------------------------------------------------------

def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _func(activity: dict[str, Any]) -> str:
    provider = activity["provider"]
    return provider.get("func", "") if provider["type"] == "python" else provider["type"]


def _status(order: dict[str, Any]) -> str:
    return "no answer" if order["status"] is None else str(order["status"])


def _change(activity: dict[str, Any]) -> tuple[str, str] | None:
    """("break" | "repair", what) when the activity breaks or repairs something, else None."""
    provider = activity["provider"]
    if provider["type"] == "process":
        verb, target = provider.get("arguments", [])[-2:]
        return {"stop": ("break", target), "start": ("repair", target)}.get(verb)
    func, arguments = provider.get("func", ""), provider.get("arguments", {})
    target = arguments.get("proxy_name") or arguments.get("for_proxy", "")
    if func in BREAKING:
        return "break", target
    if func in BREAKING_PROCESSES:
        return "break", arguments.get(BREAKING_PROCESSES[func], "rabbitmq")
    if func in REPAIRING:
        return "repair", target or "rabbitmq"
    return ("repair", "*") if func == "reset" else None


def fault_windows(runs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start, end) epochs while something the method broke is not repaired yet."""
    windows, broken, opened = [], set(), 0.0
    for run in sorted(runs, key=lambda run: run["start"]):
        change = _change(run["activity"])
        if change is None:
            continue
        kind, target = change
        if kind == "break":
            opened = opened if broken else _time(run["start"])
            broken.add(target)
        elif broken:
            broken.difference_update(set(broken) if target == "*" else {target})
            if not broken:
                windows.append((opened, _time(run["end"])))
    if broken:
        windows.append((opened, max(_time(run["end"]) for run in runs)))
    return windows


def _summary(run: dict[str, Any]) -> str:
    output, func = run.get("output"), _func(run["activity"])
    if run.get("status") == "failed":
        return (run.get("exception") or ["failed"])[-1].strip()[:120]
    if func == LOAD_FUNC and isinstance(output, dict):
        return ", ".join(f"{count}× {status}" for status, count in output["counts"].items())
    if func == CHECKER_FUNC and isinstance(output, dict):
        return _checker_line(output)
    if isinstance(output, dict) and "status" in output:
        return f"status {output['status']}" + (f": {output['stderr'].strip()[:80]}"
                                               if output.get("stderr") else "")
    return "" if output is None else json.dumps(output)[:80]


def _activities(journal: dict[str, Any], started: float) -> list[dict[str, Any]]:
    phases = [("before", journal["steady_states"].get("before") or {}),
              ("method", {"probes": journal["run"]}),
              ("after", journal["steady_states"].get("after") or {}),
              ("rollback", {"probes": journal.get("rollbacks") or []})]
    rows = []
    for phase, section in phases:
        for run in section.get("probes", []):
            activity = run["activity"]
            rows.append({"phase": phase, "name": activity["name"], "type": activity["type"],
                         "background": activity.get("background", False),
                         "status": run.get("status", "?"),
                         "tolerance_met": run.get("tolerance_met"),
                         "at": round(_time(run["start"]) - started, 2),
                         "seconds": round(run.get("duration", 0.0), 2),
                         "summary": _summary(run)})
    return rows


def _checker_results(journal: dict[str, Any]) -> dict[str, dict[str, Any]]:
    results = {}
    for phase in ("before", "after"):
        for run in (journal["steady_states"].get(phase) or {}).get("probes", []):
            if _func(run["activity"]) == CHECKER_FUNC and isinstance(run.get("output"), dict):
                results[phase] = run["output"]
    return results


def _met(journal: dict[str, Any], phase: str) -> bool | None:
    state = journal["steady_states"].get(phase)
    return None if state is None else bool(state.get("steady_state_met"))


def read_journal(path: Path) -> Verdict:
    journal = json.loads(Path(path).read_text())
    started = _time(journal["start"])
    load = [run for run in journal["run"] if _func(run["activity"]) == LOAD_FUNC]
    orders = [order for run in load if isinstance(run.get("output"), dict)
              for order in run["output"]["orders"]]
    recovery = [run.get("output") for run in journal["run"]
                if _func(run["activity"]) == RECOVERY_FUNC and isinstance(run.get("output"), dict)]
    return Verdict(name=Path(path).parent.name, title=journal["experiment"]["title"],
                   status=journal["status"], deviated=bool(journal.get("deviated")),
                   before=_met(journal, "before"), after=_met(journal, "after"),
                   started=started, windows=fault_windows(journal["run"]),
                   activities=_activities(journal, started), orders=orders,
                   checker=_checker_results(journal),
                   confirmed_again_at=recovery[0]["confirmed_at"] if recovery else None)


# -- writing the verdict ------------------------------------------------------------------------

def _checker_line(result: dict[str, Any]) -> str:
    report = result.get("report", {})
    if "invariants" not in report:
        return f"exit {result.get('status')}: {report.get('error', 'no report')}"
    broken = [invariant for invariant in report["invariants"] if not invariant["ok"]]
    waited = (f" (after {result['attempts']} checks, {result['waited_seconds']} s)"
              if result.get("attempts", 1) > 1 else "")
    if not broken:
        over = ", ".join(f"{count} {what}" for what, count in report["counts"].items())
        return f"clean: all {len(report['invariants'])} invariants hold over {over}{waited}"
    names = ", ".join(f"{invariant['name']} ({len(invariant['violations'])})"
                      for invariant in broken)
    return f"{sum(len(i['violations']) for i in broken)} violation(s): {names}{waited}"


def _yes(value: bool | None) -> str:
    return "not run" if value is None else ("met" if value else "**NOT met**")


def _headline(verdict: Verdict) -> str:
    if verdict.passed:
        return ("**Verdict: PASSED.** The steady state held before and after the fault, the "
                f"shop recovered in {verdict.recovered_seconds} s (an order confirmed again "
                "after the repair), and the invariant checker found no violation.")
    reasons = [f"journal status {verdict.status}" if verdict.status != "completed" else "",
               "the steady state deviated" if verdict.deviated else "",
               "" if verdict.before else "the steady state was not met before the fault",
               "" if verdict.after else "the steady state was not met after the fault",
               "" if verdict.checker_clean else "the invariant checker was not clean",
               ("these activities of the method failed: " + ", ".join(verdict.failed_activities)
                if verdict.failed_activities else ""),
               "" if verdict.recovered_seconds is not None
               else "no order was seen confirmed again after the repair"]
    return "**Verdict: FAILED** — " + "; ".join(reason for reason in reasons if reason) + "."


def _orders_table(verdict: Verdict) -> list[str]:
    counts = verdict.counts()
    others = sorted({status for row in counts.values() for status in row} - set(STATUS_COLUMNS))
    columns = [*STATUS_COLUMNS, *others]
    lines = ["| phase | orders | " + " | ".join(columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for phase in PHASES:
        row = counts[phase]
        lines.append(f"| {phase} | {sum(row.values())} | "
                     + " | ".join(str(row[column]) for column in columns) + " |")
    return lines


def _windows_text(verdict: Verdict) -> str:
    if not verdict.windows:
        return "none found in the method"
    return ", ".join(f"{start - verdict.started:.1f} s → {end - verdict.started:.1f} s "
                     f"({end - start:.1f} s)" for start, end in verdict.windows)


def _recovered_text(verdict: Verdict) -> str:
    if verdict.recovered_seconds is None:
        return "**not seen**: no order confirmed after the repair"
    return f"{verdict.recovered_seconds} s from the repair to the first order confirmed again"


def markdown(verdict: Verdict, plot_name: str) -> str:
    lines = [f"# Chaos experiment `{verdict.name}`: {verdict.title}", "", _headline(verdict), "",
             "| | |", "|---|---|",
             f"| journal status | {verdict.status} (deviated: {verdict.deviated}) |",
             f"| steady state before the fault | {_yes(verdict.before)} |",
             f"| steady state after the fault | {_yes(verdict.after)} |",
             f"| fault (seconds from the start) | {_windows_text(verdict)} |",
             f"| recovered in | {_recovered_text(verdict)} |", "",
             "## Orders placed by the load", "",
             ("Answers of the gateway to `POST /api/orders`, by when the order was placed "
              "relative to the fault (\"during\" runs from the first break to the last "
              "repair)."),
             "", *_orders_table(verdict), "", f"![orders over time]({plot_name})", "",
             "## Invariant checker", ""]
    for phase in ("before", "after"):
        result = verdict.checker.get(phase)
        lines.append(f"- {phase}: {_checker_line(result) if result else 'not run'}")
        for invariant in (result or {}).get("report", {}).get("invariants", []):
            lines += [f"  - {invariant['name']}: {', '.join(v['ids'])} {v['detail']}"
                      for v in invariant["violations"]]
    lines += ["", "## What ran", "",
              "| phase | activity | kind | status | at (s) | took (s) | result |",
              "|---|---|---|---|---:|---:|---|"]
    for row in verdict.activities:
        kind = row["type"] + (" (background)" if row["background"] else "")
        status = row["status"] + ("" if row["tolerance_met"] in (None, True)
                                  else ", tolerance NOT met")
        summary = row["summary"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row['phase']} | {row['name']} | {kind} | {status} | {row['at']} | "
                     f"{row['seconds']} | {summary} |")
    return "\n".join(lines) + "\n"


def plot(verdict: Verdict, path: Path) -> None:
    """Each order as a dot (when placed, how long its answer took), coloured by answer, and
    the answers per second stacked underneath; the fault is shaded in both."""
    figure, (dots, bars) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                        gridspec_kw={"height_ratios": [3, 2]})
    by_status: dict[str, list[dict[str, Any]]] = {}
    for order in verdict.orders:
        by_status.setdefault(_status(order), []).append(order)
    end = max([order["at"] + order["seconds"] for order in verdict.orders]
              + [window[1] for window in verdict.windows] + [verdict.started + 1])
    bins = list(range(int(end - verdict.started) + 2))
    bottom = [0] * (len(bins) - 1)
    for status, orders in sorted(by_status.items()):
        colour = COLOURS.get(status, "tab:gray")
        starts = [order["at"] - verdict.started for order in orders]
        dots.scatter(starts, [order["seconds"] for order in orders], s=18, color=colour,
                     label=f"{status} ({len(orders)})")
        heights, _, _ = bars.hist(starts, bins=bins, bottom=bottom, color=colour)
        bottom = [b + h for b, h in zip(bottom, heights)]
    for axis in (dots, bars):
        for start, stop in verdict.windows:
            axis.axvspan(start - verdict.started, stop - verdict.started, color="tab:red",
                         alpha=0.12)
    handles, _ = dots.get_legend_handles_labels()
    if verdict.windows:
        handles.append(Patch(color="tab:red", alpha=0.12, label="fault"))
    dots.set_ylabel("answer took (s)")
    dots.set_title(f"{verdict.name}: orders during the experiment")
    dots.legend(handles=handles, loc="upper right", fontsize="small")
    bars.set_ylabel("orders per second")
    bars.set_xlabel("seconds since the experiment started")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(journal_path: Path, out_dir: Path | None = None) -> Verdict:
    """Write report.md and orders.png (beside the journal by default); return the verdict."""
    out_dir = Path(out_dir or Path(journal_path).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    verdict = read_journal(Path(journal_path))
    plot(verdict, out_dir / "orders.png")
    (out_dir / "report.md").write_text(markdown(verdict, "orders.png"))
    return verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("journal", type=Path)
    parser.add_argument("--out", type=Path, help="where to write (default: beside the journal)")
    args = parser.parse_args(argv)
    verdict = write_report(args.journal, args.out)
    print(_headline(verdict).replace("*", ""))
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
