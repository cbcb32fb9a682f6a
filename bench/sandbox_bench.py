"""Benchmark of a whole sandbox, as `microlab up` runs it, on loopback, in about 2 minutes.

    python -m bench.sandbox_bench [--out reports/bench-sandbox.md] [--seconds 10] [--quick]

The headline is the CPU time a confirmed order costs, summed over the sandbox's processes.
Wall-clock rates (orders/s, latency) move with whatever else runs on a laptop or a shared CI
machine; the CPU seconds a process spends on an order hardly do. The report opens with the
targets, each met (✓) or not (✗), and the change against the previous run, read from the JSON
of raw numbers the benchmark writes beside its report (reports/bench-sandbox.json):

    CPU per confirmed order, 8 clients   ≤ 20 ms     cold start (wall, median)   ≤ 3 s
    confirmed orders/s, 8 clients        ≥ 80        PSS of the sandbox, idle    ≤ 450 MiB
    p99 of an order, 8 clients           ≤ 250 ms    idle CPU                    ≤ 2 % of a core

(450 MiB is the "450 MB" `microlab status` would print: it counts MB of 2**20 bytes.)

What it measures, and why (a learner's laptop runs all of it at once, so these are the numbers
that say whether the sandbox is pleasant to use and what each pattern costs):

1. Cold start: from launching `microlab up --free-ports` (a fresh run directory each time:
   empty databases, demo catalogue seeded) to every service healthy, median of 3 starts. Two
   figures: the supervisor's own `startup_s` (from its start() to the last service healthy) and
   the wall time seen by the caller (interpreter start and imports included; polled every
   0.1 s). Then memory: the sum of PSS over every process of the sandbox (the supervisor's
   `total_pss_bytes`: shared pages are split between the processes that share them, so the sum
   is what the sandbox really takes), per service, idle and after the workload below. Then
   idle CPU: the CPU every process uses in 10 s (--idle-seconds) without a request, just after
   start, as % of one core (polling loops and timers show up here).
2. Hop overhead on the same small GET of one product: on products directly
   (`/api/v1/products/<id>`), through the chaos proxy of the `gateway->products` edge, and
   through the gateway (`/api/products/<id>`, which itself reaches products through that same
   proxy, as every hop inside the sandbox does). Sequential keep-alive requests (one
   requests.Session per path), in alternating blocks so drift on a shared machine hits all
   three alike; p50/p99, requests/s and the ratios to direct, measured in the same run.
3. Orders per second end to end: `POST /api/orders` through the gateway (JWT, rate limiter,
   the whole saga: products, inventory reservation, payment, confirmation) by 1, 4 and 8
   concurrent clients, each level for --seconds; orders/s, p50/p99 and every non-201 answer.
   Stock is topped up by an admin adjust before each level so the run never sells out.
   Around each level, the user + system CPU time of every process of the sandbox (psutil),
   divided by the confirmed orders (201): a service counts with all its descendants (a
   gunicorn master and its worker, exited ones too, through their parent's children times),
   the supervisor only itself, since its children are the other rows. RabbitMQ (and Redis,
   when REDIS_URL points to one) runs outside the sandbox and is not counted, nor is this
   client.

The gateway's default rate limit (100 requests burst, 50/s per user) would turn most of 2 and
3 into 429s, so the sandbox under measurement runs with RATE_LIMIT_CAPACITY and
RATE_LIMIT_REFILL_PER_SECOND raised: the limiter still runs on every request (its cost is
measured), it just never says no. Everything else is `microlab up` as a learner runs it.
Needs a RabbitMQ at AMQP_URL (the default of `microlab up`); each sandbox gets a namespace of
its own, deleted from the broker after it stops.

--quick is for iterating, not for the record: one start, 3 s idle, 200 GETs per hop path, only
the 8 clients level for 3 s; it writes reports/bench-sandbox-quick.md (and .json) unless --out
says otherwise, so a quick run is compared with the previous quick run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests
from pymongo import MongoClient

from microlab.launcher import SandboxProcess
from microlab.mongo_server import OPCOUNTERS
from microlab.rabbit import delete_namespace
from patterns.tracing import SpanRecord, load_spans

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"email": "admin@microlab.local", "password": "admin-password"}  # dev-mode defaults
BENCH_ENV = {"RATE_LIMIT_CAPACITY": "1000000", "RATE_LIMIT_REFILL_PER_SECOND": "1000000"}
CONCURRENCY = (1, 4, 8)
HEADLINE_CLIENTS = 8  # the level the targets and the per-process CPU table are read at
BLOCK = 50  # requests per block when alternating between paths
PRODUCTS_USED = 8  # orders spread over this many products (1 unit each)
MAX_ORDERS_PER_CLIENT_S = 100  # generous bound on the order rate, to size the restock


def progress(message: str) -> None:
    print(f"[sandbox_bench] {message}", file=sys.stderr, flush=True)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# 1. Cold start and memory


def start_sandbox(run_dir: Path) -> tuple[SandboxProcess, float]:
    sandbox = SandboxProcess(run_dir, env=BENCH_ENV)
    began = time.perf_counter()
    sandbox.start(timeout=90)
    return sandbox, time.perf_counter() - began


def stop_sandbox(sandbox: SandboxProcess) -> None:
    amqp_url = sandbox.state.get("amqp_url") or os.environ.get(
        "AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    try:
        sandbox.stop()
    finally:
        deleted = delete_namespace(amqp_url, sandbox.namespace)
        progress(f"stopped; {sandbox.namespace}: " + (
            f"{deleted} queues and exchanges deleted from RabbitMQ" if deleted >= 0
            else "could not list RabbitMQ queues (no rabbitmqctl?), nothing deleted"))


def memory(sandbox: SandboxProcess) -> dict:
    status = sandbox.status()
    return {"total": status["total_pss_bytes"],
            "rows": {row["service"]: row["pss_bytes"] for row in status["services"]},
            "unhealthy": [row["service"] for row in status["services"] if row["health"] != "ok"]}


def sandbox_pids(status: dict) -> dict[str, int]:
    """The pid of every running process of the sandbox, by name, from the status rows."""
    return {row["service"]: row["pid"] for row in status["services"] if row["pid"]}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process of the sandbox has used since it started.

    A service counts with all its descendants, and with the descendants that already exited:
    the kernel adds their time to the parent that waited for them (psutil's children_user and
    children_system). The supervisor counts only itself: its children are the other rows. A
    process that is gone (crashed, restarted under another pid) is left out.
    """
    used = {}
    for name, pid in pids.items():
        try:
            root = psutil.Process(pid)
            members = [root] if name == "supervisor" else [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        total = 0.0
        for member in members:
            try:
                times = member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
            if name != "supervisor":
                total += times.children_user + times.children_system
        used[name] = total
    return used


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used between two readings of cpu_seconds()."""
    return {name: after[name] - before[name] for name in before if name in after}


def measure_idle_cpu(pids: dict[str, int], seconds: float) -> dict:
    """CPU the sandbox uses while nobody calls it, as % of one core."""
    before = cpu_seconds(pids)
    began = time.monotonic()
    time.sleep(seconds)
    used = cpu_used(before, cpu_seconds(pids))
    elapsed = time.monotonic() - began
    return {"seconds": elapsed, "cpu_s": used, "percent": 100 * sum(used.values()) / elapsed,
            "missing": sorted(set(pids) - set(used))}


# 2. Hop overhead


def timed_get(session: requests.Session, url: str) -> tuple[float, int]:
    began = time.perf_counter()
    response = session.get(url, timeout=10)
    response.content  # noqa: B018 - the whole body, as a client would read it
    return time.perf_counter() - began, response.status_code


def measure_hops(paths: dict[str, str], rounds: int, seconds: float) -> dict[str, dict]:
    """Blocks of BLOCK sequential GETs, path after path, until `rounds` each or `seconds`."""
    sessions = {name: requests.Session() for name in paths}
    times: dict[str, list[float]] = {name: [] for name in paths}
    errors: Counter[str] = Counter()
    try:
        for name, url in paths.items():  # warm up: connections, code paths, caches
            for _ in range(BLOCK):
                timed_get(sessions[name], url)
        deadline = time.monotonic() + seconds
        while min(len(t) for t in times.values()) < rounds and time.monotonic() < deadline:
            for name, url in paths.items():
                for _ in range(BLOCK):
                    elapsed, status = timed_get(sessions[name], url)
                    if status == 200:
                        times[name].append(elapsed)
                    else:
                        errors[f"{name} {status}"] += 1
    finally:
        for session in sessions.values():
            session.close()
    results = {}
    for name, samples in times.items():
        results[name] = {"n": len(samples), "p50": statistics.median(samples),
                         "p99": percentile(samples, 0.99), "rps": len(samples) / sum(samples),
                         "errors": sum(v for k, v in errors.items() if k.startswith(name + " "))}
    return results


# 3. Orders per second


class Shop:
    """The calls the orders benchmark makes through the gateway."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.session = requests.Session()
        self.admin = self.login(ADMIN["email"], ADMIN["password"])
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        password = "bench-password"
        self.call("POST", "/api/users/register",
                  json={"email": email, "password": password, "name": "Bench"}, expect=201)
        self.user = self.login(email, password)

    def call(self, method: str, path: str, *, token: str | None = None, expect: int = 200,
             **kwargs: object) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.session.request(method, self.gateway + path, headers=headers,
                                        timeout=30, **kwargs)
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def login(self, email: str, password: str) -> str:
        return self.call("POST", "/api/users/login",
                         json={"email": email, "password": password})["token"]

    def products_with_stock(self, count: int, timeout: float = 15.0) -> list[str]:
        """Active products that inventory has a stock record for (it creates them on the
        `product.created` events of the seeded catalogue, a moment after start)."""
        items = self.call("GET", "/api/products?limit=50")["items"]
        deadline = time.monotonic() + timeout
        while True:
            found = []
            for item in items:
                response = self.session.get(f"{self.gateway}/api/inventory/{item['id']}",
                                            headers={"Authorization": f"Bearer {self.admin}"},
                                            timeout=10)
                if response.status_code == 200:
                    found.append(item["id"])
                if len(found) == count:
                    return found
            if found and time.monotonic() > deadline:
                return found
            if time.monotonic() > deadline:
                raise RuntimeError("inventory has no stock record for any product")
            time.sleep(0.5)

    def restock(self, product_ids: list[str], at_least: int) -> None:
        for product_id in product_ids:
            available = self.call("GET", f"/api/inventory/{product_id}",
                                  token=self.admin)["available"]
            if available < at_least:
                self.call("POST", f"/api/inventory/{product_id}/adjust", token=self.admin,
                          json={"operation": "add", "quantity": at_least - available})


def order_client(gateway: str, token: str, product_ids: list[str], offset: int,
                 deadline: float) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {token}"}
    with requests.Session() as session:
        i = offset
        while time.monotonic() < deadline:
            body = {"items": [{"product_id": product_ids[i % len(product_ids)], "quantity": 1}]}
            i += 1
            began = time.perf_counter()
            try:
                response = session.post(f"{gateway}/api/orders", json=body, headers=headers,
                                        timeout=30)
            except requests.RequestException as error:
                failures[type(error).__name__] += 1
                continue
            latencies.append(time.perf_counter() - began)
            if response.status_code != 201:
                try:
                    code = response.json().get("error") or response.json().get("reason")
                except ValueError:
                    code = None
                failures[f"{response.status_code} {code or ''}".strip()] += 1
    return latencies, failures


def measure_orders(shop: Shop, product_ids: list[str], clients: int,
                   seconds: float, pids: dict[str, int] | None = None) -> dict:
    """One level of `clients` ordering for `seconds`; with `pids`, the CPU each process of the
    sandbox used meanwhile (the restock before it is left out)."""
    per_product = math.ceil(clients * seconds * MAX_ORDERS_PER_CLIENT_S / len(product_ids))
    shop.restock(product_ids, per_product)
    cpu_before = cpu_seconds(pids or {})
    began = time.monotonic()
    deadline = began + seconds
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(order_client, shop.gateway, shop.user, product_ids,
                               n * len(product_ids) // clients, deadline)
                   for n in range(clients)]
        outcomes = [future.result() for future in futures]
    elapsed = time.monotonic() - began
    cpu = cpu_used(cpu_before, cpu_seconds(pids or {}))
    latencies = [value for samples, _ in outcomes for value in samples]
    failures: Counter[str] = sum((f for _, f in outcomes), Counter())
    answered = len(latencies)
    created = answered - sum(count for key, count in failures.items() if key[:1].isdigit())
    return {"clients": clients, "seconds": elapsed, "requests": answered, "created": created,
            "orders_s": created / elapsed, "p50": statistics.median(latencies),
            "p99": percentile(latencies, 0.99), "failures": dict(failures),
            "non_201": sum(failures.values()), "cpu_s": cpu,
            "cpu_ms_per_order": 1000 * sum(cpu.values()) / max(created, 1),
            "cpu_missing": sorted(set(pids or {}) - set(cpu))}


def mongo_operations(url: str) -> int:
    """Operations the MongoDB at `url` has served since it started (its serverStatus
    opcounters: inserts per document, updates and deletes per statement, finds, commands)."""
    with MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        counters = client.admin.command("serverStatus")["opcounters"]
    return sum(counters[field] for field in OPCOUNTERS)


def operations(spans: list[SpanRecord], began_ns: int, ended_ns: int) -> Counter[str]:
    """The spans that started between two moments, counted by the operation they record."""
    counted: Counter[str] = Counter()
    for span in spans:
        if not began_ns <= span["start_ns"] <= ended_ns:
            continue
        attributes, kind = span["attributes"], span["kind"]
        if kind == "server":
            counted["http_served"] += 1
        elif kind == "client" and ("http.method" in attributes
                                   or "http.request.method" in attributes):
            counted["http_calls"] += 1
        elif "messaging.system" in attributes and kind in ("producer", "consumer"):
            counted["publishes" if kind == "producer" else "deliveries"] += 1
    return counted


def count_per_order(sandbox: SandboxProcess, run_level: Callable[[], dict]) -> dict:
    """Run one level and count what its orders did: MongoDB operations from the server's own
    counters, HTTP calls and messages from the spans the services wrote, per confirmed order."""
    mongo_before, began_ns = mongo_operations(sandbox.urls["mongo"]), time.time_ns()
    level = run_level()
    time.sleep(1.0)  # the last orders' events consumed, their spans written
    mongo = mongo_operations(sandbox.urls["mongo"]) - mongo_before
    counted = operations(load_spans(sandbox.run_dir.path / "traces.jsonl"), began_ns,
                         time.time_ns())
    created = max(level["created"], 1)
    level["ops_per_order"] = {"mongo_ops": mongo / created, **{
        name: counted[name] / created
        for name in ("http_calls", "http_served", "publishes", "deliveries")}}
    return level


# Report


@dataclass(frozen=True)
class Target:
    figure: str  # a key of figures()
    label: str
    unit: str
    limit: float
    at_most: bool  # the figure must stay at or below the limit (else at or above it)
    digits: int  # decimals shown

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit

    def describe(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.limit:g} {self.unit}"


TARGETS = (
    Target("cpu_ms_per_order", "**CPU per confirmed order**, summed over the sandbox's "
           f"processes, {HEADLINE_CLIENTS} clients", "ms", 20, True, 1),
    Target("orders_s", f"confirmed orders/s, {HEADLINE_CLIENTS} clients", "orders/s", 80, False,
           1),
    Target("p99_ms", f"p99 of an order, {HEADLINE_CLIENTS} clients", "ms", 250, True, 0),
    Target("pss_idle_mib", "PSS of the whole sandbox, idle after start", "MiB", 450, True, 0),
    Target("cold_start_s", "cold start, `microlab up` to ready (wall, median)", "s", 3, True, 2),
    Target("idle_cpu_percent", "idle CPU just after start, sum of the processes", "% of a core",
           2, True, 1),
)


def headline_level(results: dict) -> dict:
    return next(r for r in results["orders"] if r["clients"] == HEADLINE_CLIENTS)


def figures(results: dict) -> dict[str, float]:
    """The figures the targets are about, in the units the report shows."""
    level = headline_level(results)
    return {"cpu_ms_per_order": level["cpu_ms_per_order"], "orders_s": level["orders_s"],
            "p99_ms": level["p99"] * 1000,
            "pss_idle_mib": results["memory_idle"]["total"] / 2**20,
            "cold_start_s": statistics.median(start["wall_s"] for start in results["starts"]),
            "idle_cpu_percent": results["idle_cpu"]["percent"]}


def per_process(results: dict) -> dict[str, dict[str, float]]:
    """CPU ms per confirmed order and idle PSS in MiB, process by process."""
    level = headline_level(results)
    return {"cpu_ms_per_order": {name: 1000 * seconds / max(level["created"], 1)
                                 for name, seconds in level["cpu_s"].items()},
            "pss_idle_mib": {name: size / 2**20
                             for name, size in results["memory_idle"]["rows"].items()}}


def change(before: float | None, now: float, unit: str, digits: int) -> str:
    """The previous run's figure against this run's: '82.0 → 21.3 ms (−74 %)'."""
    if before is None:
        return "-"
    text = f"{before:.{digits}f} → {now:.{digits}f} {unit}"
    if before == 0:
        return text
    percent = round(100 * (now - before) / before)
    sign = "±" if percent == 0 else "+" if percent > 0 else "−"
    return f"{text} ({sign}{abs(percent)} %)"


def raw_numbers(results: dict, machine: dict) -> dict:
    """What the JSON beside the report keeps, for the next run to compare itself with."""
    return {"date": machine["date"], "machine": machine, "figures": figures(results),
            "per_process": per_process(results), "results": results}


def read_previous(path: Path) -> dict:
    """The raw numbers a previous run left at `path`; empty when there are none to read."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def plot(results: dict, path: Path) -> str | None:
    """A PNG of orders/s and latency against clients, if matplotlib is there."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    levels = results["orders"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot([r["clients"] for r in levels], [r["orders_s"] for r in levels], marker="o")
    left.set(xlabel="concurrent clients", ylabel="orders/s", title="Orders through the gateway")
    left.set_ylim(bottom=0)
    for key in ("p50", "p99"):
        right.plot([r["clients"] for r in levels], [r[key] * 1000 for r in levels], marker="o",
                   label=key)
    right.set(xlabel="concurrent clients", ylabel="ms", title="Order latency")
    right.set_ylim(bottom=0)
    right.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path.name


def render_headline(results: dict, previous: dict, source: str) -> list[str]:
    """The targets, met or not, then the CPU of an order process by process, each with the
    change against the previous run (`previous`, read from `source`)."""
    now, before = figures(results), previous.get("figures", {})
    lines = [
        "## Targets",
        "",
        "| figure | this run | target | met | change against the previous run |",
        "|---|---|---|---|---|",
    ]
    for target in TARGETS:
        value = now[target.figure]
        lines.append(
            f"| {target.label} | {value:.{target.digits}f} {target.unit} | {target.describe()} "
            f"| {'✓' if target.met(value) else '✗'} "
            f"| {change(before.get(target.figure), value, target.unit, target.digits)} |")
    lines += ["", f"Previous run: {previous['date']}, numbers from `{source}`."
              if "date" in previous else f"No previous run's numbers at `{source}`: the change "
              "column fills in from the next run on."]

    level, idle = headline_level(results), results["idle_cpu"]
    cpu = per_process(results)["cpu_ms_per_order"]
    cpu_before = previous.get("per_process", {}).get("cpu_ms_per_order", {})
    total = sum(cpu.values()) or 1.0
    lines += [
        "",
        f"## CPU per confirmed order, process by process ({HEADLINE_CLIENTS} clients: "
        f"{level['created']} orders confirmed in {level['seconds']:.1f} s)",
        "",
        "| process | CPU ms per order | share | change against the previous run "
        f"| idle CPU, % of a core ({idle['seconds']:.0f} s) |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(cpu, key=cpu.__getitem__, reverse=True):
        idle_share = (f"{100 * idle['cpu_s'][name] / idle['seconds']:.1f}"
                      if name in idle["cpu_s"] else "-")
        lines.append(f"| {name} | {cpu[name]:.2f} | {100 * cpu[name] / total:.0f} % "
                     f"| {change(cpu_before.get(name), cpu[name], 'ms', 2)} | {idle_share} |")
    lines += [
        f"| **total** | **{level['cpu_ms_per_order']:.2f}** | 100 % "
        f"| {change(before.get('cpu_ms_per_order'), level['cpu_ms_per_order'], 'ms', 2)} "
        f"| {idle['percent']:.1f} |",
        "",
        "User + system CPU time of every process of the sandbox (psutil), read just before and "
        "just after the level and divided by the orders confirmed (201): a service with its "
        "gunicorn worker and any other descendant, the supervisor alone (its children are the "
        "other rows). RabbitMQ (and Redis, when REDIS_URL points to one) runs outside the "
        "sandbox and is not counted, nor is this benchmark's client. CPU seconds are the "
        "headline because they hold on a noisy machine: a program competing for the cores "
        "makes an order wait longer, it hardly makes it cost more CPU.",
    ]
    missing = sorted(set(level["cpu_missing"]) | set(idle["missing"]))
    if missing:
        lines += ["", f"Not measured (the process was gone at a reading): {', '.join(missing)}."]
    return lines + [""]


def render(results: dict, args: argparse.Namespace, machine: dict, image: str | None,
           previous: dict) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.2f}"

    def mib(size: int) -> str:
        return f"{size / 2**20:.1f}"

    starts = results["starts"]
    supervisor = [s["startup_s"] for s in starts]
    wall = [s["wall_s"] for s in starts]
    idle, loaded = results["memory_idle"], results["memory_loaded"]
    numbers = args.out.with_suffix(".json").resolve()
    lines = [
        "# Sandbox benchmark",
        "",
        f"Run {machine['date']} on {platform.node()}: {machine['cpus']} CPUs "
        f"({machine['model']}), Python {machine['python']}, load average "
        f"{machine['load_before']:.2f} before and {machine['load_after']:.2f} after; loopback "
        f"only, `python -m bench.sandbox_bench{' --quick' if args.quick else ''} --seconds "
        f"{args.seconds:g} --idle-seconds {args.idle_seconds:g} --rounds {args.rounds} "
        f"--starts {args.starts}`, {results['total_s']:.0f} s in all. The client is this "
        "process; every service, the chaos proxy and the embedded MongoDB are processes of the "
        "sandbox on the same machine, so the client's own CPU competes with them.",
        "",
        *render_headline(results, previous, str(
            numbers.relative_to(ROOT) if numbers.is_relative_to(ROOT) else numbers)),
        f"## 1. Cold start ({len(starts)} starts, fresh run directory each) and memory",
        "",
        "| | median s | runs s |",
        "|---|---|---|",
        f"| supervisor `startup_s` (its start() to every service healthy) "
        f"| {statistics.median(supervisor):.2f} | {', '.join(f'{s:.2f}' for s in supervisor)} |",
        f"| wall: `microlab up` launched to state ready (imports included, polled every 0.1 s) "
        f"| {statistics.median(wall):.2f} | {', '.join(f'{s:.2f}' for s in wall)} |",
        "",
        "Each start seeds the demo catalogue into empty databases; the OS page cache and the "
        "`.pyc` files are warm after the first (a first start after a reboot is slower).",
        "",
        f"Total PSS of the sandbox: **{mib(idle['total'])} MiB** idle just after start, "
        f"{mib(loaded['total'])} MiB after the hop and order workloads. PSS splits shared pages "
        "between the processes sharing them, so the column adds up to the total.",
        "",
        "| process | PSS MiB idle | PSS MiB after load | idle: change against the previous run |",
        "|---|---|---|---|",
    ]
    pss_before = previous.get("per_process", {}).get("pss_idle_mib", {})
    total_before = previous.get("figures", {}).get("pss_idle_mib")
    for name, size in idle["rows"].items():
        lines.append(f"| {name} | {mib(size)} | {mib(loaded['rows'].get(name, 0))} "
                     f"| {change(pss_before.get(name), size / 2**20, 'MiB', 1)} |")
    lines.append(f"| **total** | **{mib(idle['total'])}** | **{mib(loaded['total'])}** "
                 f"| {change(total_before, idle['total'] / 2**20, 'MiB', 1)} |")
    unhealthy = sorted(set(idle["unhealthy"]) | set(loaded["unhealthy"]))
    if unhealthy:
        lines += ["", f"Not healthy at a memory reading: {', '.join(unhealthy)}."]

    hops = results["hops"]
    direct = hops["direct"]
    labels = {"direct": "products directly, `GET /api/v1/products/<id>`",
              "proxy": "products through the chaos proxy (`gateway->products` edge)",
              "gateway": "gateway, `GET /api/products/<id>` (gateway → proxy → products)"}
    lines += [
        "",
        f"## 2. Hop overhead (same product GET, sequential keep-alive, blocks of {BLOCK} "
        "alternating between the three paths)",
        "",
        "| path | n | p50 ms | p99 ms | req/s | p50 ratio to direct | p99 ratio | req/s ratio "
        "(direct / path) | non-200 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in hops.items():
        lines.append(
            f"| {labels[name]} | {r['n']} | {ms(r['p50'])} | {ms(r['p99'])} | {r['rps']:.0f} "
            f"| {r['p50'] / direct['p50']:.2f} | {r['p99'] / direct['p99']:.2f} "
            f"| {direct['rps'] / r['rps']:.2f} | {r['errors']} |")
    proxy_added = hops["proxy"]["p50"] - direct["p50"]
    gateway_added = hops["gateway"]["p50"] - direct["p50"]
    lines += [
        "",
        f"At p50 the chaos proxy hop adds {proxy_added * 1000:+.2f} ms to the call and the "
        f"gateway {gateway_added * 1000:+.2f} ms; the gateway reaches products through that "
        "same proxy, so its own work (a second gunicorn + Flask server, token check, rate "
        "limiter, breaker, forwarding, tracing) is about "
        f"{(gateway_added - proxy_added) * 1000:.2f} ms. Gateway / direct: "
        f"**{hops['gateway']['p50'] / direct['p50']:.2f}** at p50, "
        f"{direct['rps'] / hops['gateway']['rps']:.2f}x fewer requests/s. A product GET "
        "costs milliseconds here (Flask, a MongoDB read through its own proxy hop, a span "
        "written, on a machine shared with the whole sandbox), so a proxy difference of a few "
        "tenths of a millisecond, or a negative one, is within this run's noise; "
        "`bench.proxy_bench` measures the bare proxy hop in isolation "
        "(`reports/bench-proxy.md`).",
        "",
        "## 3. Orders per second end to end (`POST /api/orders` through the gateway, one "
        "item, saga orchestrated)",
        "",
        "| clients | seconds | answered | created (201) | orders/s | p50 ms | p99 ms "
        "| CPU ms per order | non-201 | non-201 by answer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["orders"]:
        detail = ", ".join(f"{key}: {count}" for key, count in sorted(r["failures"].items()))
        lines.append(
            f"| {r['clients']} | {r['seconds']:.1f} | {r['requests']} | {r['created']} "
            f"| {r['orders_s']:.1f} | {ms(r['p50'])} | {ms(r['p99'])} "
            f"| {r['cpu_ms_per_order']:.2f} | {r['non_201']} | {detail or '-'} |")
    lines += [
        "",
        f"Orders spread over {results['products_used']} products, one unit each, by one "
        "registered user (each client its own keep-alive session). An order crosses the "
        "gateway, orders, products (validate), inventory (reserve, commit), payments "
        "(`stripe-sim`, 20 ms simulated provider latency by default) and MongoDB writes, every "
        "hop through the chaos proxy; the latency is the whole saga. With "
        f"{machine['cpus']} CPUs shared by the sandbox's {len(idle['rows'])} supervised processes "
        "(and this client), throughput stops growing once the CPUs are busy, and more clients "
        "only add queueing to the latency.",
        "",
    ]
    counts = headline_level(results).get("ops_per_order")
    if counts:
        lines += [
            f"What one confirmed order made ({HEADLINE_CLIENTS} clients level): "
            f"{counts['mongo_ops']:.1f} MongoDB operations (the server's opcounters), "
            f"{counts['http_calls']:.1f} HTTP calls between services and "
            f"{counts['http_served']:.1f} requests served (the gateway's from this client "
            f"included), {counts['publishes']:.1f} messages published and "
            f"{counts['deliveries']:.1f} delivered (spans). `python -m bench.floor_bench` "
            "prices them with the bare libraries: the floor under the CPU of an order "
            "(`reports/bench-floor.md`).",
            "",
        ]
    if image:
        lines += [f"![orders per second and latency against clients]({image})", ""]
    else:
        lines += ["No plot: matplotlib is not installed (the benchmark draws one only when it "
                  "can import it).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="default reports/bench-sandbox.md "
                        "(--quick: reports/bench-sandbox-quick.md); raw numbers beside it, .json")
    parser.add_argument("--seconds", type=float, help="seconds of each orders level (hop "
                        "series: at most twice that); default 10, --quick 3")
    parser.add_argument("--idle-seconds", type=float,
                        help="seconds of idle CPU after start; default 10, --quick 3")
    parser.add_argument("--rounds", type=int,
                        help="requests per hop path; default 1000, --quick 200")
    parser.add_argument("--starts", type=int, help="cold starts to time; default 3, --quick 1")
    parser.add_argument("--quick", action="store_true",
                        help=f"for iterating: the defaults above, {HEADLINE_CLIENTS} clients only")
    args = parser.parse_args(argv)
    defaults = ({"seconds": 3.0, "idle_seconds": 3.0, "rounds": 200, "starts": 1} if args.quick
                else {"seconds": 10.0, "idle_seconds": 10.0, "rounds": 1000, "starts": 3})
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.out = args.out or ROOT / "reports" / (
        "bench-sandbox-quick.md" if args.quick else "bench-sandbox.md")
    levels = (HEADLINE_CLIENTS,) if args.quick else CONCURRENCY

    began = time.monotonic()
    machine = {"date": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
               "cpus": os.cpu_count() or multiprocessing.cpu_count(), "model": cpu_model(),
               "python": platform.python_version(), "load_before": os.getloadavg()[0]}
    results: dict = {"starts": []}
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as scratch:
        sandbox: SandboxProcess | None = None
        try:
            for n in range(args.starts):
                sandbox, wall = start_sandbox(Path(scratch) / f"run-{n}")
                results["starts"].append({"startup_s": sandbox.state["startup_s"],
                                          "wall_s": wall})
                progress(f"cold start {n + 1}/{args.starts}: supervisor "
                         f"{sandbox.state['startup_s']:.2f} s, wall {wall:.2f} s")
                if n < args.starts - 1:
                    stop_sandbox(sandbox)
                    sandbox = None
            assert sandbox is not None
            time.sleep(1.0)  # let the last start settle (seeding events) before reading PSS
            results["memory_idle"] = memory(sandbox)
            progress(f"memory: {results['memory_idle']['total'] / 2**20:.0f} MiB PSS idle")
            pids = sandbox_pids(sandbox.status())
            results["idle_cpu"] = measure_idle_cpu(pids, args.idle_seconds)
            progress(f"idle CPU: {results['idle_cpu']['percent']:.1f} % of a core "
                     f"over {args.idle_seconds:g} s")

            urls = sandbox.urls
            proxy_port = sandbox.state["plan"]["proxy_ports"]["gateway->products"]
            shop = Shop(urls["gateway"])
            product_id = shop.call("GET", "/api/products?limit=1")["items"][0]["id"]
            paths = {"direct": f"{urls['products']}/api/v1/products/{product_id}",
                     "proxy": f"http://127.0.0.1:{proxy_port}/api/v1/products/{product_id}",
                     "gateway": f"{urls['gateway']}/api/products/{product_id}"}
            progress(f"hop overhead: up to {args.rounds} GETs per path, "
                     f"at most {2 * args.seconds:.0f} s")
            results["hops"] = measure_hops(paths, args.rounds, 2 * args.seconds)
            progress("hop overhead: p50 " + ", ".join(
                f"{name} {r['p50'] * 1000:.2f} ms" for name, r in results["hops"].items()))

            product_ids = shop.products_with_stock(PRODUCTS_USED)
            results["products_used"] = len(product_ids)
            shop.restock(product_ids, 100)
            for _ in range(5):  # warm up the saga's code paths and connections
                shop.call("POST", "/api/orders", token=shop.user, expect=201,
                          json={"items": [{"product_id": product_ids[0], "quantity": 1}]})
            results["orders"] = []
            for clients in levels:
                progress(f"orders: {clients} client(s) for {args.seconds:g} s")
                run_level = functools.partial(measure_orders, shop, product_ids, clients,
                                              args.seconds, pids)
                level = (count_per_order(sandbox, run_level) if clients == HEADLINE_CLIENTS
                         else run_level())
                results["orders"].append(level)
                progress(f"orders: {clients} client(s): {level['orders_s']:.1f} orders/s, "
                         f"p50 {level['p50'] * 1000:.0f} ms, {level['non_201']} non-201, "
                         f"{level['cpu_ms_per_order']:.1f} ms CPU per order")
            results["memory_loaded"] = memory(sandbox)
        finally:
            if sandbox is not None:
                progress("stopping the sandbox")
                stop_sandbox(sandbox)
    machine["load_after"] = os.getloadavg()[0]
    results["total_s"] = time.monotonic() - began

    args.out.parent.mkdir(parents=True, exist_ok=True)
    numbers = args.out.with_suffix(".json")
    previous = read_previous(numbers)
    image = plot(results, args.out.with_suffix(".png"))
    report = render(results, args, machine, image, previous)
    args.out.write_text(report)
    numbers.write_text(json.dumps(raw_numbers(results, machine), indent=2))
    print(report)
    print(f"written to {args.out} (raw numbers: {numbers})")


if __name__ == "__main__":
    main()
