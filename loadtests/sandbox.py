"""Sandboxes for the load scenarios: started on free ports, faulted, checked, torn down.

Each scenario gets sandboxes of its own (`sandboxes(...)` starts them one after the other and,
on the way out, stops them and deletes their RabbitMQ namespaces), so a scenario never disturbs a
learner's `make up` or another run.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

from microlab.launcher import SandboxProcess
from microlab.launcher import admin_session as gateway_admin_session
from microlab.rabbit import delete_namespace
from microlab.topology import load_topology

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# The gateway's per-user rate limit (100 burst, 50/s) would turn a load test into a 429 test.
UNLIMITED = {"RATE_LIMIT_CAPACITY": "100000", "RATE_LIMIT_REFILL_PER_SECOND": "100000"}


@contextmanager
def sandboxes(run_root: Path, envs: Mapping[str, dict[str, str]]) -> Iterator[
        dict[str, SandboxProcess]]:
    """One sandbox per entry of `envs` (name -> extra env), started one after the other (in
    parallel, two supervisors can pick the same free port)."""
    started: dict[str, SandboxProcess] = {}
    try:
        for name, env in envs.items():
            started[name] = SandboxProcess(run_root / name, env={**UNLIMITED, **env}).start()
        yield started
    finally:
        for sandbox in started.values():
            sandbox.stop()
            delete_namespace(AMQP_URL, sandbox.namespace)


def add_toxic(sandbox: SandboxProcess, edge: str, toxic: dict) -> None:
    """Install a Toxiproxy toxic on an edge (`microlab chaos` covers latency and down only)."""
    proxy = load_topology().edge(edge).proxy_name
    response = requests.post(f"{sandbox.urls['chaos']}/proxies/{proxy}/toxics",
                             json={"toxicity": 1.0, **toxic}, timeout=10)
    response.raise_for_status()


def chaos(sandbox: SandboxProcess, *args: str) -> None:
    """`microlab chaos ARGS` against this sandbox (down EDGE, up EDGE, reset...)."""
    subprocess.run(sandbox.command("chaos", *args), check=True, capture_output=True, timeout=30)


def admin_session(sandbox: SandboxProcess) -> requests.Session:
    return gateway_admin_session(sandbox.urls["gateway"])


def check_invariants(sandbox: SandboxProcess, settle: float) -> tuple[int, dict, float]:
    """`microlab check --json`, repeated for up to `settle` seconds while it finds violations
    (a system just out of a load test still has sagas and events in flight). Returns its exit
    code (0: no violation), its report and the seconds it took."""
    started = time.monotonic()
    while True:
        done = subprocess.run(sandbox.command("check", "--json"), capture_output=True,
                              text=True, timeout=60)
        report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {
            "error": (done.stderr or done.stdout).strip()}
        waited = time.monotonic() - started
        if done.returncode == 0 or waited > settle:
            return done.returncode, report, waited
        time.sleep(2)
