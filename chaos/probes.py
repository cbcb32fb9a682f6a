"""The probes and actions the experiments in `chaos/*.json` call (Chaos Toolkit, Python provider).

- `place_orders`: a small, bounded load: orders placed through the gateway by a few threads,
  until `stop_placing_orders` is called, `max_orders` are placed or `max_seconds` pass. Run it
  as a background activity, so it keeps going while the fault is on; it returns every order's
  time and answer, which the journal keeps and `chaos.report` plots.
- `check_invariants`: the invariant checker (`microlab check --json`), retried until the
  system has settled; its `status` is the checker's exit code, so a tolerance of 0 means "no
  violation".
- `all_upstreams_ok`: a tolerance for an HTTP probe on the gateway's `/api/health`.
- `wait_for_recovery`: how long the gateway takes to see every service healthy again.
- `answers_dependency_unavailable`: during a database outage, the gateway passes on the
  service's 503 that names the database, with Retry-After, fast; the activity fails otherwise.
- `kill_service`: SIGKILL a service's process group, a crash as the kernel's OOM killer does it.
- `stop_broker` / `start_broker`: a real RabbitMQ restart (`rabbitmqctl stop_app|start_app`),
  only when the broker is the sandbox's own (CHAOS_OWN_BROKER=1): never the shared one by
  accident.

Only loopback gateways are accepted: this is a load generator, pointed at your own sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from microlab.lab import ORDER_ATTEMPTS, place_order
from microlab.launcher import admin_session
from microlab.processes import ROOT
from microlab.supervisor import RunDir

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ORDER_TIMEOUT = 35.0  # seconds; the gateway gives orders 30 s before answering 504
STOCK_MARGIN = 20  # units left on the shelf after the load, clear of low-stock alerts

_stop_orders = threading.Event()


# -- load ---------------------------------------------------------------------------------------

def _loopback(url: str) -> str:
    if urlsplit(url).hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"{url} is not on this machine: the load only targets loopback")
    return url.rstrip("/")


def _stocked_product(session: requests.Session, gateway: str, wanted: int) -> str:
    """A product of the catalogue, its stock topped up (admin adjust) so that the whole load
    can buy it with a margin: orders that fail then fail because of the fault, not the shelf."""
    products = session.get(f"{gateway}/api/products", params={"limit": 1}, timeout=10)
    product_id = products.json()["items"][0]["id"]
    stock = session.get(f"{gateway}/api/inventory/{product_id}", timeout=10).json()
    missing = wanted + STOCK_MARGIN - stock["available"]
    if missing > 0:
        session.post(f"{gateway}/api/inventory/{product_id}/adjust", timeout=10,
                     json={"operation": "add", "quantity": missing}).raise_for_status()
    return product_id


def _place_one(session: requests.Session, gateway: str, product_id: str) -> dict[str, Any]:
    """One order, retried with its Idempotency-Key while its answer is lost (as a careful
    client does: never a second order for it); its final answer and the attempts it took."""
    started = time.time()
    attempts = 1
    try:
        answer, attempts = place_order(session, gateway, [{"product_id": product_id,
                                                           "quantity": 1}],
                                       timeout=ORDER_TIMEOUT)
        status: int | None = answer.status_code
        reason = _reason(answer)
    except requests.RequestException as error:
        status, reason, attempts = None, type(error).__name__, ORDER_ATTEMPTS
    return {"at": started, "seconds": round(time.time() - started, 3), "status": status,
            "reason": reason, "attempts": attempts}


def _reason(answer: requests.Response) -> str:
    if answer.status_code < 400:
        return answer.json().get("status", "")
    try:
        error = answer.json()["error"]
    except (ValueError, KeyError, TypeError):
        return answer.text[:80]
    return error.get("reason") or error.get("code", "")


def outcome_counts(orders: list[dict[str, Any]]) -> dict[str, int]:
    """How many orders got each answer: {"201": 12, "503": 4, "no answer": 1}."""
    counts = Counter("no answer" if order["status"] is None else str(order["status"])
                     for order in orders)
    return dict(sorted(counts.items()))


def place_orders(gateway_url: str, max_orders: int = 60, max_seconds: float = 120.0,
                 workers: int = 2, pause_seconds: float = 0.5) -> dict[str, Any]:
    """Place orders of one unit through the gateway, `workers` at a time, until stopped."""
    gateway = _loopback(gateway_url)
    _stop_orders.clear()
    session = admin_session(gateway, timeout=10)
    product_id = _stocked_product(session, gateway, max_orders)
    deadline = time.monotonic() + max_seconds
    orders: list[dict[str, Any]] = []
    lock = threading.Lock()

    def worker() -> None:
        while not _stop_orders.is_set() and time.monotonic() < deadline:
            with lock:
                if len(orders) >= max_orders:
                    return
                orders.append({})  # hold the slot: the count never goes past max_orders
                slot = len(orders) - 1
            orders[slot] = _place_one(session, gateway, product_id)
            _stop_orders.wait(pause_seconds)

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(worker) for _ in range(workers)]:
            future.result()
    orders.sort(key=lambda order: order["at"])
    return {"orders": orders, "counts": outcome_counts(orders)}


def wait_for_confirmed_order(gateway_url: str, within_seconds: float = 60.0,
                             pause_seconds: float = 1.0) -> dict[str, Any]:
    """After the repair: place orders one at a time until one is confirmed (201), so the run
    shows the shop heal (a breaker closing takes its recovery timeout). Fails past the bound."""
    gateway = _loopback(gateway_url)
    session = admin_session(gateway, timeout=10)
    product_id = _stocked_product(session, gateway, 10)
    started, attempts = time.monotonic(), []
    while time.monotonic() - started < within_seconds:
        attempts.append(_place_one(session, gateway, product_id))
        if attempts[-1]["status"] == 201:
            last = attempts[-1]
            return {"confirmed_at": last["at"] + last["seconds"], "attempts": len(attempts),
                    "counts": outcome_counts(attempts)}
        time.sleep(pause_seconds)
    raise RuntimeError(f"no order confirmed within {within_seconds} s of the repair: "
                       f"{outcome_counts(attempts)}")


def stop_placing_orders() -> None:
    """End the background `place_orders`; orders in flight still get their answer."""
    _stop_orders.set()


# -- faults the Toxiproxy API cannot make ------------------------------------------------------

def kill_service(run_dir: str, service: str) -> dict[str, Any]:
    """SIGKILL `service`'s whole process group: no clean shutdown, requests in flight lost,
    a saga cut between two steps. `microlab start SERVICE` (or the supervisor's restart
    policy, with `up --restart on-failure`) brings it back."""
    path = Path(run_dir) if Path(run_dir).is_absolute() else ROOT / run_dir
    state = RunDir(path).read_state() or {}
    # The pid from the supervisor as it is now (the state file's may be a crashed process's).
    rows = (requests.get(f"{state['control_url']}/status", timeout=30).json()["services"]
            if "control_url" in state else [])
    pid = next((row["pid"] for row in rows
                if row["service"] == service and row["state"] == "running"), None)
    if pid is None:
        raise RuntimeError(f"{service} is not running in the sandbox at {path}")
    os.killpg(pid, signal.SIGKILL)
    return {"service": service, "pid": pid}


BROKER_IS_OURS = "CHAOS_OWN_BROKER"


def _rabbitmqctl(action: str) -> dict[str, Any]:
    if os.environ.get(BROKER_IS_OURS) != "1":
        raise RuntimeError(
            f"refusing to {action} the RabbitMQ node: it may be shared with other sandboxes "
            f"and programs. Set {BROKER_IS_OURS}=1 when the broker is this sandbox's own "
            f"(compose mode, a CI machine); the broker-restart experiment cuts the hops "
            f"instead and is safe anywhere")
    command = os.environ.get("CHAOS_RABBITMQCTL", "rabbitmqctl").split() + [action]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-300:]}")
    return {"command": " ".join(command)}


def stop_broker() -> dict[str, Any]:
    """Stop the RabbitMQ application (the Erlang node stays up): every connection drops."""
    return _rabbitmqctl("stop_app")


def start_broker() -> dict[str, Any]:
    """Start it again; durable queues and their persistent messages are still there."""
    return _rabbitmqctl("start_app")


# -- health and invariants ----------------------------------------------------------------------

def answers_dependency_unavailable(gateway_url: str, path: str = "/api/products",
                                   dependency: str = "mongo",
                                   within_seconds: float = 3.0) -> dict[str, Any]:
    """While a service's database is cut: GET `path` through the gateway must answer 503
    `dependency_unavailable` naming `dependency`, with a Retry-After, within `within_seconds`
    (a known failure is said at once, never a 500 or a hang). Raises otherwise, which fails the
    activity and so the experiment."""
    gateway = _loopback(gateway_url)
    started = time.monotonic()
    answer = requests.get(f"{gateway}{path}", timeout=within_seconds + 5)
    seconds = round(time.monotonic() - started, 3)
    try:
        error = answer.json().get("error", {})
    except ValueError:
        error = {}
    seen = {"status": answer.status_code, "code": error.get("code"),
            "dependency": error.get("dependency"),
            "retry_after": answer.headers.get("Retry-After"), "seconds": seconds}
    expected = {"status": 503, "code": "dependency_unavailable", "dependency": dependency}
    if (any(seen[key] != value for key, value in expected.items()) or not seen["retry_after"]
            or seconds > within_seconds):
        raise RuntimeError(f"expected {expected} with Retry-After within {within_seconds} s, "
                           f"got {seen}")
    return seen


def all_upstreams_ok(value: dict[str, Any]) -> bool:
    """Tolerance for an HTTP probe on /api/health: every service behind the gateway is ok."""
    body = value.get("body")
    if isinstance(body, str):
        body = json.loads(body or "{}")
    return value.get("status") == 200 and body.get("status") == "ok"


def wait_for_recovery(gateway_url: str, within_seconds: float = 30.0) -> dict[str, float]:
    """Poll /api/health until every service is ok; fail if that takes over `within_seconds`."""
    gateway = _loopback(gateway_url)
    started = time.monotonic()
    while time.monotonic() - started < within_seconds:
        try:
            answer = requests.get(f"{gateway}/api/health", timeout=5)
            if all_upstreams_ok({"status": answer.status_code, "body": answer.json()}):
                return {"recovered_after_seconds": round(time.monotonic() - started, 2)}
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the gateway still sees a service unhealthy after {within_seconds} s")


def _run_checker(run_dir: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "microlab", "--run-dir", str(run_dir), "check", "--json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)  # exit 1 means violations: read the report
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = {"error": (result.stderr or result.stdout).strip()[-500:]}
    return {"status": result.returncode, "report": report}


def check_invariants(run_dir: str = ".microlab", settle_seconds: float = 0.0,
                     interval_seconds: float = 2.0) -> dict[str, Any]:
    """Run `microlab check --json`, again every `interval_seconds` while it finds violations,
    for at most `settle_seconds` (sagas and events in flight show as violations for a moment).

    Returns {"status": exit code (0: clean), "attempts", "waited_seconds", "report"}."""
    path = Path(run_dir) if Path(run_dir).is_absolute() else ROOT / run_dir
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        result = _run_checker(path)
        waited = time.monotonic() - started
        if result["status"] == 0 or waited + interval_seconds > settle_seconds:
            return {**result, "attempts": attempts, "waited_seconds": round(waited, 1)}
        time.sleep(interval_seconds)
