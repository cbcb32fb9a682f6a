"""What every load scenario shares: Locust as a subprocess, its CSVs, the plot and the report.

Locust is never imported here (it patches the process with gevent): `LocustProcess` runs
`locust --headless ... --csv PREFIX --csv-full-history` in a child process, lets the scenario
inject faults while it runs (`sleep_until`, `mark`), and reads the CSVs it leaves behind.
`plot_history` draws throughput, latency percentiles and errors over time with the fault
windows shaded; `write_report` writes the Markdown report next to it.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

ROOT = Path(__file__).resolve().parent.parent
LOCUST = Path(sys.executable).with_name("locust")
REPORTS = ROOT / "reports" / "load"


@dataclass(frozen=True)
class Window:
    """A fault, in seconds since the load started."""

    start: float
    end: float
    label: str


@dataclass(frozen=True)
class LocustRun:
    """The CSVs of one finished Locust run."""

    prefix: Path
    started_at: float  # unix time the load started; history timestamps count from it

    def _rows(self, suffix: str) -> list[dict[str, str]]:
        with open(f"{self.prefix}_{suffix}.csv", newline="") as file:
            return list(csv.DictReader(file))

    def stats(self, name: str) -> dict[str, str]:
        """The final row of stats.csv for request `name` (an empty dict if never sent)."""
        return next((row for row in self._rows("stats") if row["Name"] == name), {})

    def history(self, name: str) -> list[dict[str, str]]:
        return [row for row in self._rows("stats_history") if row["Name"] == name]

    def failures(self, name: str) -> dict[str, int]:
        """How many times each error message was seen for request `name`."""
        return {row["Error"]: int(row["Occurrences"]) for row in self._rows("failures")
                if row["Name"] == name}

    def files(self) -> list[Path]:
        return sorted(self.prefix.parent.glob(f"{self.prefix.name}_*.csv"))


@dataclass
class LocustProcess:
    """`locust --headless` in a child process; faults are injected while it runs."""

    locustfile: str
    host: str
    users: int
    seconds: int
    prefix: Path
    env: dict[str, str] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)

    def __enter__(self) -> LocustProcess:
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        command = [str(LOCUST), "--headless", "-f", str(ROOT / self.locustfile),
                   "--host", self.host, "--users", str(self.users),
                   "--spawn-rate", str(self.users), "--run-time", f"{self.seconds}s",
                   "--csv", str(self.prefix), "--csv-full-history", "--only-summary",
                   "--exit-code-on-error", "0", "--loglevel", "WARNING"]
        self._log = open(f"{self.prefix}.log", "w")
        self.started_at = time.time()
        self._popen = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **self.env},
                                       stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def elapsed(self) -> float:
        return time.time() - self.started_at

    def sleep_until(self, second: float) -> None:
        time.sleep(max(0.0, second - self.elapsed()))

    def mark(self, start: float, label: str, end: float | None = None) -> None:
        """Record a fault window for the plot (`end` None: until the load stops)."""
        self.windows.append(Window(start, self.seconds if end is None else end, label))

    def __exit__(self, *exc_info: object) -> None:
        try:
            code = self._popen.wait(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            code = self._popen.wait()
        self._log.close()
        if code != 0 or not Path(f"{self.prefix}_stats.csv").exists():
            raise RuntimeError(f"locust exited with {code}; see {self.prefix}.log")

    @property
    def run(self) -> LocustRun:
        return LocustRun(self.prefix, self.started_at)


def number(row: dict[str, str], column: str) -> float:
    """A numeric cell of a Locust CSV row ('N/A' and missing cells read as 0)."""
    try:
        return float(row.get(column, 0))
    except ValueError:
        return 0.0


def per_second(seconds: list[float], rows: list[dict[str, str]],
               column: str) -> tuple[list[float], list[float]]:
    """A cumulative count of the history turned into a rate per second (Locust's own
    Requests/s column is a 10 s moving average, which smears a fault's edges)."""
    points = [(t1, (number(r1, column) - number(r0, column)) / (t1 - t0))
              for t0, t1, r0, r1 in zip(seconds, seconds[1:], rows, rows[1:]) if t1 > t0]
    return [t for t, _ in points], [rate for _, rate in points]


def plot_history(path: Path, title: str, series: dict[str, list[dict[str, str]]],
                 started_at: dict[str, float], windows: Iterable[Window]) -> Path:
    """Throughput, p50/p95/p99 latency and errors per second over time, faults shaded.

    `series` maps a label (a run, or a request name) to its stats_history rows; `started_at`
    maps the same label to the unix time its load started, so every run starts at 0 s."""
    figure, (rate, latency, errors) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for index, (label, rows) in enumerate(series.items()):
        colour = f"C{index}"
        seconds = [float(row["Timestamp"]) - started_at[label] for row in rows]
        rate.plot(*per_second(seconds, rows, "Total Request Count"), colour, label=label)
        for column, style in (("50%", ":"), ("95%", "--"), ("99%", "-")):
            latency.plot(seconds, [number(row, column) for row in rows], colour,
                         linestyle=style, label=f"{label} p{column[:-1]}")
        errors.plot(*per_second(seconds, rows, "Total Failure Count"), colour, label=label)
    for axis in (rate, latency, errors):
        for window in windows:
            axis.axvspan(window.start, window.end, color="tab:red", alpha=0.12)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small", loc="upper left")
    for window in {w.label: w for w in windows}.values():
        rate.annotate(window.label, (window.start, 1.0), xycoords=("data", "axes fraction"),
                      va="top", fontsize="small", color="tab:red")
    rate.set_ylabel("answered/s")
    latency.set_ylabel("latency, ms (log scale)\npercentiles of the last 10 s")
    latency.set_yscale("log")
    errors.set_ylabel("failures/s")
    errors.set_xlabel("seconds since the load started (shaded: fault injected)")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


@dataclass(frozen=True)
class Report:
    scenario: str
    title: str
    goal: str
    passed: bool
    numbers: dict[str, float]
    table: Sequence[tuple[str, str]]
    explanation: str  # what the scenario demonstrates and how to read the plot
    plots: Sequence[Path]
    csv_files: Sequence[Path]

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"


def write_report(report: Report, directory: Path) -> Path:
    lines = [f"# Load scenario `{report.scenario}`: {report.title}", "",
             f"**Verdict: {report.verdict}** — goal: {report.goal}", "",
             "| measure | value |", "|---|---|",
             *(f"| {measure} | {value} |" for measure, value in report.table), "",
             report.explanation.strip(), "",
             *(f"![{plot.stem}]({plot.name})" for plot in report.plots), "",
             "Locust's CSVs: " + ", ".join(f"`{path.name}`" for path in report.csv_files), ""]
    path = directory / "report.md"
    path.write_text("\n".join(lines))
    return path
