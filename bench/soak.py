"""The soak: the whole shop under steady load and a fault every 20 s, for 10 minutes.

    python -m bench.soak [--minutes 10] [--clients 8] [--seed 42] [--every 20]
                         [--judge-from 2] [--breaker-recovery 5] [--memory judge|report]
                         [--out reports/soak.md]

What a short benchmark cannot show, a long run does: memory that creeps up a little with every
order or every fault, a saga that gets stuck once in a thousand, a dead letter after the
hundredth broker cut. So this starts a sandbox of its own (free ports, its own RabbitMQ
namespace, the rate limit raised as in `bench.sandbox_bench` so 8 clients are not refused by
the limiter), and

1. `--clients` threads place orders in a loop with `microlab.lab.place_order` (the careful
   client: one Idempotency-Key per order, retried only while the answer was lost), and count
   every second what they got: confirmed (201), refused by design (402 declined, 409 out of
   stock, 502/503 while a fault is on), lost (no answer after the retries) — and anything
   else, which fails the soak: a 500 is never a right answer. After a 502/503 a client waits
   what Retry-After says, at most 1 s (an open breaker answers in a millisecond: without the
   pause 8 clients would fire hundreds of refusals a second). The stock is topped up every
   10 s so the shop never sells out. The services' breakers try a call again 5 s after they
   open (`--breaker-recovery`; BREAKER_RECOVERY_TIMEOUT, 30 s by default): with the default,
   each 10 s fault kept its callers refusing for 30 s more, and a fault every 20 s left the
   shop refusing most of the time, which measures the breakers' patience, not the shop.
2. Every `--every` seconds a fault from a seeded schedule (`plan_faults`, a pure function of
   the seed) hits a random edge of the topology — latency or a cut, through the chaos proxy's
   Toxiproxy API, removed after half the period — or restarts a random service.
3. Every 10 s it reads each process's PSS from the supervisor (`microlab status`).
4. At the end: every fault removed, the shop left to settle (every service healthy, no order
   still pending), then `microlab check` must be clean (which includes: no event parked in a
   dead-letter or unrouted queue), and each process's memory may have grown at most 10 %
   from minute `--judge-from` to the end (`memory_verdicts`: a median of 3 samples at each
   end, so one noisy reading decides nothing).

A restarted process starts again from a small footprint, so comparing its end with its old
self would hide a leak. Each of its lives (pids) is judged alike instead — from `--judge-from`
minutes after it started to its last sample, if that is at least half the judged span — and
its worst life counts; with no life that long it is listed as not judged, with why.

The report (`--out`, a `.json` beside it with every series, and a PNG) gives orders/s over time
with each fault shaded and labelled, and each process's memory. The exit code is 1, with a
sentence saying why, when a verdict fails. `make soak` runs the 10 minutes, `make soak
SHORT=1` 3 minutes (what CI runs) with memory reported but not judged (`--memory report`):
three minutes are mostly warm-up and the high-water marks of the first faults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests

from bench.sandbox_bench import ADMIN, BENCH_ENV, PRODUCTS_USED, Shop, stop_sandbox
from chaos.probes import check_invariants, wait_for_recovery
from microlab import checker
from microlab.chaos import ChaosClient
from microlab.lab import answer_was_lost, error_code, place_order, wait_until
from microlab.launcher import SandboxProcess
from microlab.topology import Topology, load_topology

ROOT = Path(__file__).resolve().parent.parent
FAULT_KINDS = ("latency", "cut", "restart")
SAMPLE_EVERY = 10.0  # seconds between memory samples (and stock top-ups)
MEMORY_WINDOW = 3  # samples whose median is each end of the growth
MEMORY_LIMIT = 0.10  # growth allowed between the two ends
SETTLE_SECONDS = 90.0  # after the last fault: the shop must be at rest within this
TOKEN_REFRESH = 600.0  # seconds; tokens live 15 minutes
REFUSED_PAUSE = 1.0  # seconds, at most, a client waits after a 502/503 (Retry-After says)
# What a client may get back. Anything else (a 500 above all) fails the soak.
CONFIRMED, DECLINED, OUT_OF_STOCK, UNAVAILABLE, LOST = (
    "confirmed", "declined", "out of stock", "unavailable", "lost")
EXPECTED = (CONFIRMED, DECLINED, OUT_OF_STOCK, UNAVAILABLE, LOST)


def progress(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


# -- the schedule -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the load started
    until: float  # when it is removed (a restart: when it was asked for; it lasts as it lasts)
    kind: str  # latency | cut | restart
    target: str  # an edge "caller->callee", or a service for a restart
    latency_ms: int = 0

    @property
    def label(self) -> str:
        detail = f" {self.latency_ms} ms" if self.kind == "latency" else ""
        return f"{self.kind} {self.target}{detail}"


def plan_faults(seed: int, *, seconds: float, every: float, edges: Sequence[str],
                services: Sequence[str]) -> list[Fault]:
    """One fault every `every` seconds from `every` on, the last one a whole period before the
    end (the shop gets a calm tail); each on for half the period. The kinds come in shuffled
    rounds of three, so even a short run has each kind once in every three faults. Kind,
    target and latency come from `random.Random(seed)` only: the same seed gives the same
    schedule."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    kinds: list[str] = []
    for n in range(1, math.floor(seconds / every)):
        at = n * every
        kinds = kinds or rng.sample(FAULT_KINDS, len(FAULT_KINDS))
        kind = kinds.pop()
        if kind == "restart":
            faults.append(Fault(at, at, kind, rng.choice(list(services))))
        else:
            latency = rng.randrange(200, 1600, 100) if kind == "latency" else 0
            faults.append(Fault(at, at + every / 2, kind, rng.choice(list(edges)), latency))
    return faults


# -- the memory verdict -------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    t: float  # seconds after the load started
    process: str
    pid: int | None
    pss_bytes: int


@dataclass(frozen=True)
class Growth:
    process: str
    judged: bool
    growth: float | None = None  # 0.05 = 5 % more at the end than at the start of the window
    start_bytes: int | None = None
    end_bytes: int | None = None
    start_t: float | None = None
    why: str = ""

    def ok(self, limit: float = MEMORY_LIMIT) -> bool:
        return not self.judged or (self.growth is not None and self.growth <= limit)


def lives(series: Sequence[Sample]) -> list[list[Sample]]:
    """A process's samples split by pid (a restart gives it a new one); stopped: left out."""
    found: list[list[Sample]] = []
    for sample in series:
        if sample.pss_bytes <= 0:
            continue
        if found and found[-1][-1].pid == sample.pid:
            found[-1].append(sample)
        else:
            found.append([sample])
    return found


def memory_verdicts(samples: Sequence[Sample], *, judge_from: float, end: float,
                    window: int = MEMORY_WINDOW) -> list[Growth]:
    """Each process's growth from `judge_from` to `end`: the median of its first `window`
    samples from then against the median of its last `window`. A restarted process is judged
    on each of its lives (pids) alike, each from `judge_from` after it started, and its worst
    life counts; a life leaving less than half of `end - judge_from` to judge is skipped."""
    by_process: dict[str, list[Sample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: s.t):
        by_process[sample.process].append(sample)
    verdicts = []
    for process, series in by_process.items():
        found = lives(series)
        judged = []
        for n, life in enumerate(found):
            begin = judge_from if n == 0 else life[0].t + judge_from
            part = [s for s in life if s.t >= begin]
            if (len(part) < 2 * window
                    or part[-1].t - part[0].t < (end - judge_from) / 2 - SAMPLE_EVERY):
                continue
            first = statistics.median(s.pss_bytes for s in part[:window])
            last = statistics.median(s.pss_bytes for s in part[-window:])
            why = f"life {n + 1} of {len(found)} (pid {life[0].pid})" if len(found) > 1 else ""
            judged.append(Growth(process, True, last / first - 1, int(first), int(last),
                                 part[0].t, why))
        if judged:
            verdicts.append(max(judged, key=lambda g: g.growth or 0.0))
        else:
            verdicts.append(Growth(process, False, why=(
                f"restarted {len(found) - 1} time(s): no life long enough to judge"
                if len(found) > 1 else "too few samples")))
    return verdicts


# -- the load -----------------------------------------------------------------------------------

def outcome(status: int | None, code: str | None) -> str:
    """What one order's final answer means for the soak (after place_order's retries)."""
    if status is None or answer_was_lost(status, code):
        return LOST
    if status == 201:
        return CONFIRMED
    if status == 402:
        return DECLINED
    if status == 409:
        return OUT_OF_STOCK
    if status in (502, 503):
        return UNAVAILABLE
    return str(status)  # a 500, a 400, a 429...: not an answer the shop should give


@dataclass
class Tally:
    """Answers per second since the start, shared by the clients."""

    started: float
    per_second: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    unexpected: list[dict] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)  # "503 breaker_open": n
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clock(self) -> float:
        return time.monotonic() - self.started

    def count(self, what: str, detail: str = "", reason: str = "") -> None:
        with self.lock:
            self.per_second[int(self.clock())][what] += 1
            if reason:
                self.reasons[reason] += 1
            if what not in EXPECTED and len(self.unexpected) < 50:
                self.unexpected.append({"t": round(self.clock(), 1), "answer": what,
                                        "detail": detail[:300]})

    def between(self, start: float, end: float) -> Counter[str]:
        with self.lock:
            return sum((c for s, c in self.per_second.items() if start <= s < end), Counter())


def order_loop(gateway: str, token: dict[str, str], product_ids: list[str], offset: int,
               tally: Tally, stop: threading.Event) -> None:
    with requests.Session() as session:
        i = offset
        while not stop.is_set():
            session.headers["Authorization"] = f"Bearer {token['user']}"
            items = [{"product_id": product_ids[i % len(product_ids)], "quantity": 1}]
            i += 1
            try:
                answer, _ = place_order(session, gateway, items)
            except requests.RequestException as error:
                tally.count(LOST, reason=type(error).__name__)
                continue
            code = error_code(answer)
            what = outcome(answer.status_code, code)
            tally.count(what, "" if answer.ok else answer.text,
                        "" if answer.ok else f"{answer.status_code} {code}")
            if what == UNAVAILABLE:  # a polite client: not 400 fast 503s a second at a breaker
                stop.wait(retry_after(answer))


def retry_after(answer: requests.Response) -> float:
    """The answer's Retry-After in seconds, at most REFUSED_PAUSE (and that when it has none)."""
    try:
        return min(float(answer.headers.get("Retry-After", REFUSED_PAUSE)), REFUSED_PAUSE)
    except ValueError:
        return REFUSED_PAUSE


# -- the faults ---------------------------------------------------------------------------------

@dataclass
class FaultRunner:
    """Applies the schedule in a thread of its own; keeps what really happened."""

    schedule: list[Fault]
    chaos: ChaosClient
    sandbox: SandboxProcess
    tally: Tally
    stop: threading.Event
    happened: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        for fault in self.schedule:
            if self.stop.wait(max(0.0, fault.at - self.tally.clock())):
                return
            began = self.tally.clock()
            try:
                self.inject(fault)
                if fault.kind != "restart":
                    self.stop.wait(max(0.0, fault.until - self.tally.clock()))
            except Exception as error:  # noqa: BLE001 - a fault that fails is a finding
                self.errors.append(f"{fault.label} at {began:.0f} s: {error}")
            try:
                self.remove(fault)
            except Exception as error:  # noqa: BLE001 - and so is one that stays
                self.errors.append(f"removing {fault.label} at {began:.0f} s: {error}")
            ended = self.tally.clock()
            seen = self.tally.between(int(began), int(ended) + 1)
            self.happened.append({**asdict(fault), "label": fault.label,
                                  "start": round(began, 1), "end": round(ended, 1)})
            progress(f"{began:5.0f}-{ended:3.0f} s  {fault.label}: "
                     f"{seen[CONFIRMED]} confirmed, {seen[UNAVAILABLE]} unavailable, "
                     f"{seen[LOST]} lost")

    def inject(self, fault: Fault) -> None:
        match fault.kind:
            case "latency":
                self.chaos.add_latency(fault.target, fault.latency_ms,
                                       jitter_ms=fault.latency_ms // 10)
            case "cut":
                self.chaos.cut(fault.target)
            case "restart":
                self.sandbox.restart_service(fault.target)

    def remove(self, fault: Fault) -> None:
        match fault.kind:
            case "latency":
                self.chaos.remove_toxics(fault.target)
            case "cut":
                self.chaos.restore(fault.target)


# -- the run ------------------------------------------------------------------------------------

def memory_samples(sandbox: SandboxProcess, t: float) -> list[Sample]:
    return [Sample(round(t, 1), row["service"], row.get("pid"), row["pss_bytes"])
            for row in sandbox.status()["services"]]


def pending_orders(state: dict) -> int:
    return sum(order["status"] == checker.ORDER_PENDING
               for order in checker.read_snapshot(state).orders)


def settle_and_check(sandbox: SandboxProcess) -> dict:
    """Every service healthy, no saga still running, then the checker until clean."""
    began = time.monotonic()
    state = sandbox.state
    result: dict = {}
    try:
        wait_for_recovery(sandbox.urls["gateway"], within_seconds=SETTLE_SECONDS)
        result["healthy"] = True
    except RuntimeError as error:
        result["healthy"], result["health_error"] = False, str(error)
    try:
        wait_until(lambda: pending_orders(state) == 0, timeout=SETTLE_SECONDS, every=2.0,
                   what="every order confirmed or cancelled")
    except TimeoutError:
        pass
    result["pending"] = pending_orders(state)
    checked = check_invariants(str(sandbox.run_dir.path), settle_seconds=30.0)
    result.update(check_status=checked["status"], check=checked["report"],
                  parked={queue: count for queue, count in
                          checker.read_snapshot(state).parked_messages.items() if count},
                  settle_s=round(time.monotonic() - began, 1))
    return result


def soak(args: argparse.Namespace) -> dict:
    topology = load_topology()
    seconds = args.minutes * 60
    schedule = plan_faults(args.seed, seconds=seconds, every=args.every,
                           edges=[edge.name for edge in topology.edges()],
                           services=list(topology.services))
    results: dict = {"args": {key: str(value) if isinstance(value, Path) else value
                              for key, value in vars(args).items()},
                     "schedule": [asdict(fault) for fault in schedule]}
    progress(f"{len(schedule)} faults planned (seed {args.seed}), {args.clients} clients, "
             f"{args.minutes:g} min")
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        sandbox = SandboxProcess(Path(scratch) / "run", env={
            **BENCH_ENV, "BREAKER_RECOVERY_TIMEOUT": f"{args.breaker_recovery:g}"})
        began = time.monotonic()
        sandbox.start(timeout=120)
        progress(f"sandbox up in {time.monotonic() - began:.1f} s")
        try:
            results.update(run_load(sandbox, topology, schedule, args, seconds))
            progress("load over; every fault removed; letting the shop settle")
            results["end"] = settle_and_check(sandbox)
            results["memory_final"] = [asdict(s) for s in memory_samples(
                sandbox, results["seconds"])]
        finally:
            stop_sandbox(sandbox)
        results["total_s"] = round(time.monotonic() - began, 1)
    return results


def run_load(sandbox: SandboxProcess, topology: Topology, schedule: list[Fault],
             args: argparse.Namespace, seconds: float) -> dict:
    shop = Shop(sandbox.urls["gateway"])
    customer = {"email": f"soak-{int(time.time())}@example.com", "password": "soak-password"}
    shop.call("POST", "/api/users/register", json={**customer, "name": "Soak"}, expect=201)
    token = {"user": shop.login(**customer)}
    product_ids = shop.products_with_stock(PRODUCTS_USED)
    # Stock for 10 s of orders at a rate no client here reaches, topped up every 10 s.
    shelf = args.clients * 20 * int(SAMPLE_EVERY) // len(product_ids) + 50
    shop.restock(product_ids, shelf)
    chaos = ChaosClient(sandbox.urls["chaos"], topology)
    tally = Tally(time.monotonic())
    stop_load, stop_faults = threading.Event(), threading.Event()
    faults = FaultRunner(schedule, chaos, sandbox, tally, stop_faults)
    clients = [threading.Thread(target=order_loop, name=f"client-{n}", daemon=True,
                                args=(shop.gateway, token, product_ids,
                                      n * len(product_ids) // args.clients, tally, stop_load))
               for n in range(args.clients)]
    fault_thread = threading.Thread(target=faults.run, name="faults", daemon=True)
    samples: list[Sample] = []
    restock_failures = 0
    logged_in = time.monotonic()
    for thread in (*clients, fault_thread):
        thread.start()
    try:
        next_sample, next_minute = 0.0, 60.0
        while tally.clock() < seconds:
            now = tally.clock()
            if now >= next_sample:
                samples += memory_samples(sandbox, now)
                try:
                    if time.monotonic() - logged_in > TOKEN_REFRESH:
                        token["user"] = shop.login(**customer)
                        shop.admin = shop.login(ADMIN["email"], ADMIN["password"])
                        logged_in = time.monotonic()
                    shop.restock(product_ids, shelf)
                except (RuntimeError, requests.RequestException):
                    restock_failures += 1  # a fault on its path: next time
                next_sample += SAMPLE_EVERY
            if now >= next_minute:
                minute = tally.between(next_minute - 60, next_minute)
                total = sum(s.pss_bytes for s in samples if s.t == samples[-1].t)
                progress(f"minute {next_minute / 60:.0f}: {minute[CONFIRMED] / 60:.1f} "
                         f"orders/s, " + ", ".join(f"{k} {v}" for k, v in sorted(minute.items()))
                         + f"; {total / 2**20:.0f} MiB PSS in all")
                next_minute += 60
            time.sleep(0.2)
        samples += memory_samples(sandbox, tally.clock())
    finally:
        stop_faults.set()
        fault_thread.join(timeout=150)
        chaos.reset()  # whatever happened above, no fault outlives the load
        stop_load.set()
        for thread in clients:
            thread.join(timeout=150)
    end = samples[-1].t
    return {"seconds": round(tally.clock(), 1), "load_end": end,
            "per_second": {str(s): dict(c) for s, c in sorted(tally.per_second.items())},
            "totals": dict(tally.between(0, 10**9)), "unexpected": tally.unexpected,
            "reasons": dict(tally.reasons.most_common()),
            "faults": faults.happened, "fault_errors": faults.errors,
            "restock_failures": restock_failures, "products_used": len(product_ids),
            "memory": [asdict(s) for s in samples],
            "growth": [asdict(g) for g in memory_verdicts(
                samples, judge_from=args.judge_from * 60, end=end)]}


# -- verdicts and the report --------------------------------------------------------------------

def verdicts(results: dict) -> list[tuple[bool, str]]:
    """Each verdict of the soak: (passed, a sentence saying what was seen)."""
    totals = Counter(results["totals"])
    wrong = {key: n for key, n in totals.items() if key not in EXPECTED}
    end = results["end"]
    growth = [Growth(**g) for g in results["growth"]]
    too_much = [g for g in growth if not g.ok()]
    judged = [g for g in growth if g.judged]
    check = end["check"]
    broken = [i["name"] for i in check.get("invariants", []) if not i["ok"]]
    return [
        (not wrong, "every answer was one the shop may give (201, 402, 409, 502, 503, or lost "
                    "and retried)" if not wrong else
         "the shop gave answers it must never give: " + ", ".join(
             f"{n} × {key}" for key, n in sorted(wrong.items()))),
        (totals[CONFIRMED] > 0, f"{totals[CONFIRMED]} orders confirmed"),
        (not results["fault_errors"], "every fault was applied and removed" if not
         results["fault_errors"] else "a fault could not be applied or removed: "
         + "; ".join(results["fault_errors"])),
        (end["healthy"], "every service healthy after the faults" if end["healthy"] else
         end.get("health_error", "a service stayed unhealthy")),
        (end["pending"] == 0, f"no order still pending {end['settle_s']:.0f} s after the load"
         if end["pending"] == 0 else f"{end['pending']} orders still pending after "
         f"{SETTLE_SECONDS:.0f} s: a saga did not finish"),
        (end["check_status"] == 0, "`microlab check` clean" if end["check_status"] == 0 else
         "`microlab check` found violations: " + (", ".join(broken) or str(check)[:300])),
        (not end["parked"], "no event parked in a dead-letter or unrouted queue"
         if not end["parked"] else "events parked: " + ", ".join(
             f"{q}: {n}" for q, n in end["parked"].items())),
        (True, "memory reported, not judged (a short run: warm-up and the high-water marks "
               "of its first faults are most of what it sees); largest growth: " + (max(
                   (f"{g.process} {g.growth:+.1%}" for g in judged),
                   key=lambda text: float(text.rsplit(" ", 1)[1].rstrip("%")), default="-")))
        if results["args"].get("memory") == "report" else
        (bool(judged) and not too_much,
         f"memory of {len(judged)} processes grew at most {MEMORY_LIMIT:.0%} from minute "
         f"{results['args']['judge_from']:g} to the end (largest: "
         f"{max((g.growth for g in judged), default=0):+.1%})" if judged and not too_much else
         "no process's memory could be judged" if not judged else
         "memory grew more than " f"{MEMORY_LIMIT:.0%}: " + ", ".join(
             f"{g.process} {g.start_bytes / 2**20:.0f} → {g.end_bytes / 2**20:.0f} MiB "
             f"({g.growth:+.1%})" for g in too_much)),
    ]


def plot(results: dict, path: Path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = int(results["seconds"])
    per_second = {int(s): c for s, c in results["per_second"].items()}
    smooth = 5  # seconds of moving average: one-second counts are too jumpy to read

    def series(what: str) -> list[float]:
        raw = [per_second.get(s, {}).get(what, 0) for s in range(seconds)]
        return [sum(raw[max(0, s - smooth + 1):s + 1]) / min(smooth, s + 1)
                for s in range(seconds)]

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(13, 8), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 2]})
    colours = {"latency": "tab:blue", "cut": "tab:red", "restart": "tab:purple"}
    for fault in results["faults"]:
        for axis in (top, bottom):
            axis.axvspan(fault["start"], max(fault["end"], fault["start"] + 1), alpha=0.15,
                         color=colours[fault["kind"]], lw=0)
        top.text(fault["start"], 0.99, fault["label"].replace(" ", "\n", 1), rotation=90,
                 transform=top.get_xaxis_transform(), va="top", ha="right", fontsize=7)
    x = list(range(seconds))
    top.plot(x, series(CONFIRMED), color="tab:green", label="confirmed (201)")
    top.plot(x, series(UNAVAILABLE), color="tab:orange", label="refused: 502/503")
    top.plot(x, series(DECLINED), color="tab:olive", label="declined: 402", lw=0.8)
    top.plot(x, series(LOST), color="black", label="lost after retries", lw=0.8)
    top.set(ylabel=f"answers/s ({smooth} s mean)",
            title=f"Soak: {results['args']['clients']} clients, a fault every "
                  f"{results['args']['every']:g} s (seed {results['args']['seed']}); "
                  "blue latency, red cut, purple restart")
    top.set_ylim(bottom=0, top=top.get_ylim()[1] * 1.35)  # room for the labels
    top.legend(loc="lower left", fontsize=8, ncol=4)
    by_process: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for sample in results["memory"]:
        by_process[sample["process"]].append((sample["t"], sample["pss_bytes"]))
    palette = plt.get_cmap("tab20").colors  # more processes than tab10 has colours
    for n, (process, points) in enumerate(sorted(by_process.items())):
        bottom.plot([t for t, _ in points], [b / 2**20 for _, b in points], label=process,
                    lw=1, color=palette[n % len(palette)])
    bottom.axvline(results["args"]["judge_from"] * 60, color="grey", ls="--", lw=0.8)
    bottom.set(xlabel="seconds since the load started", ylabel="PSS MiB",
               title="Memory per process (dashed: where the growth is judged from)")
    bottom.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path.name


def render(results: dict, outcome_lines: list[tuple[bool, str]], image: str) -> str:
    args = results["args"]
    totals = Counter(results["totals"])
    seconds = results["seconds"]
    per_second = {int(s): Counter(c) for s, c in results["per_second"].items()}
    lines = [
        "# Soak",
        "",
        f"Run {results['date']} on {results['cpus']} CPUs: `python -m bench.soak --minutes "
        f"{args['minutes']:g} --clients {args['clients']} --seed {args['seed']} --every "
        f"{args['every']:g} --judge-from {args['judge_from']:g} --breaker-recovery "
        f"{args['breaker_recovery']:g}`; load {seconds:.0f} s, "
        f"{results['total_s']:.0f} s in all (start, settle, check, stop).",
        "",
        f"**{'PASSED' if all(ok for ok, _ in outcome_lines) else 'FAILED'}**",
        "",
    ]
    lines += [f"- {'✓' if ok else '✗'} {sentence}" for ok, sentence in outcome_lines]
    lines += ["", "## Orders", "",
              f"{totals[CONFIRMED] / seconds:.1f} orders/s confirmed on average; every answer: "
              + ", ".join(f"{key} {n}" for key, n in sorted(totals.items())) + ". Answers "
              "other than 201, by status and error code: " + (", ".join(
                  f"`{reason}` {n}" for reason, n in results["reasons"].items()) or "none")
              + ".",
              "", "| minute | orders/s | answers |", "|---|---|---|"]
    minutes = max(1, round(seconds / 60))
    for minute in range(minutes):
        last = minute == minutes - 1  # with the answers of orders in flight at the stop
        counts = sum((c for s, c in per_second.items()
                      if minute * 60 <= s and (last or s < minute * 60 + 60)), Counter())
        span = seconds - minute * 60 if last else 60.0
        lines.append(f"| {minute + 1} | {counts[CONFIRMED] / span:.1f} | "
                     + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + " |")
    lines += ["", "## Faults", "", "| start s | end s | fault | confirmed/s during |",
              "|---|---|---|---|"]
    for fault in results["faults"]:
        during = sum((per_second.get(s, Counter())
                      for s in range(int(fault["start"]), int(fault["end"]) + 1)), Counter())
        span = max(1.0, fault["end"] - fault["start"])
        lines.append(f"| {fault['start']:.0f} | {fault['end']:.0f} | `{fault['label']}` | "
                     f"{during[CONFIRMED] / span:.1f} |")
    lines += ["", f"## Memory (PSS, growth judged from minute {args['judge_from']:g})", "",
              "| process | at the start of the window MiB | at the end MiB | growth | note |",
              "|---|---|---|---|---|"]
    for g in sorted((Growth(**g) for g in results["growth"]), key=lambda g: g.process):
        if g.judged:
            lines.append(f"| {g.process} | {g.start_bytes / 2**20:.1f} | "
                         f"{g.end_bytes / 2**20:.1f} | {g.growth:+.1%}"
                         f"{'' if g.ok() else ' ✗'} | {g.why} |")
        else:
            lines.append(f"| {g.process} | | | not judged | {g.why} |")
    if results["unexpected"]:
        lines += ["", "## Answers the shop must never give (first ones)", ""]
        lines += [f"- {u['t']} s: {u['answer']} {u['detail']}" for u in results["unexpected"]]
    lines += ["", f"![orders/s with the faults shaded, and memory per process]({image})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between faults")
    parser.add_argument("--breaker-recovery", type=float, default=5.0,
                        help="seconds an open breaker waits before trying a call again")
    parser.add_argument("--judge-from", type=float, default=2.0,
                        help="minute from which memory growth is judged")
    parser.add_argument("--memory", choices=("judge", "report"), default="judge",
                        help="report: show memory growth without failing on it (short runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "soak.md")
    args = parser.parse_args(argv)
    if args.judge_from * 60 >= args.minutes * 60 - 2 * MEMORY_WINDOW * SAMPLE_EVERY:
        parser.error("--judge-from leaves too little of the run to judge memory")

    results = soak(args)
    results.update(date=f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
                   cpus=os.cpu_count())
    found = verdicts(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image = plot(results, args.out.with_suffix(".png"))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    args.out.write_text(render(results, found, image))
    for ok, sentence in found:
        print(f"{'✓' if ok else '✗'} {sentence}")
    failed = [sentence for ok, sentence in found if not ok]
    print(f"\nreport: {args.out}")
    if failed:
        print(f"SOAK FAILED: {failed[0]}" + (f" (and {len(failed) - 1} more)"
                                             if len(failed) > 1 else ""))
        return 1
    print("SOAK PASSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
