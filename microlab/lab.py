"""The sandbox as a notebook sees it: where everything is, and how to put it back.

Every notebook starts with

    from microlab.lab import Lab
    lab = Lab.connect()

which finds the running sandbox from the environment (the variables `make lab` and
`make notebooks` set: GATEWAY_URL, USERS_URL, ..., MONGO_URL, AMQP_URL, TOXIPROXY_URL,
CONTROL_URL, BUS_NAMESPACE, TRACE_FILE, MICROLAB_RUN_DIR), else from the state file of
`.microlab/` (a plain `make up`), else from the topology's default ports. It also remembers what a
notebook may change — which services run, every edge's toxics, the payment providers — so that
the last cell, `lab.tidy()`, puts the sandbox back as the notebook found it, even after a cell
failed half-way.

Everything else in a notebook is what a learner would type: `requests`, `pika`, `pymongo`,
`toxiproxy`, `socketio` and our `patterns`. The helpers here only save the lines that would
repeat in every notebook (a logged-in customer, the admin, the CLI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from microlab.chaos import ChaosClient
from microlab.launcher import DEV_ADMIN, admin_session
from microlab.processes import ROOT
from microlab.supervisor import RunDir
from microlab.topology import DEFAULT_AMQP_URL, load_topology, peer_env_name, plan_ports

DEFAULT_RUN_DIR = ROOT / ".microlab"

# Infrastructure URLs and the env var each is read from (services: <NAME>_URL).
INFRA_ENV = {"mongo": "MONGO_URL", "rabbitmq": "AMQP_URL", "chaos": "TOXIPROXY_URL",
             "control": "CONTROL_URL"}


def answer_was_lost(status: int | None, code: str | None = None) -> bool:
    """No answer, the gateway gave up waiting (504), it could not reach the service (502
    `upstream_unreachable`; orders' own 502 `peer_rejected` is an answer), or orders says the
    first request with this key is still running (409 `order_in_progress`): the order may exist
    or not yet, so only a retry with the same Idempotency-Key is safe."""
    return (status in (None, 0, 504) or (status == 502 and code == "upstream_unreachable")
            or (status == 409 and code == "order_in_progress"))


def error_code(answer: Any) -> str | None:
    """The `error.code` of a JSON error answer, if it has one."""
    try:
        return answer.json()["error"]["code"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


ORDER_ATTEMPTS = 3  # a careful client's tries of one order, with the same key


def place_order(session: requests.Session, gateway: str, items: list[dict], *,
                attempts: int = ORDER_ATTEMPTS, timeout: float = 35.0
                ) -> tuple[requests.Response, int]:
    """POST /api/orders as a careful client does: with an Idempotency-Key, retried with the
    same key while the answer was lost (no answer, 502, 504) or is still being worked out (409
    order_in_progress). Orders places one order per key
    and answers a repeat as it answered the first, so a retry can neither order twice nor
    charge twice. Returns the last answer and how many attempts it took; raises the last
    `requests` error when no attempt got an answer."""
    headers = {"Idempotency-Key": f"client-{uuid.uuid4().hex}"}
    for attempt in range(1, attempts + 1):
        try:
            answer = session.post(f"{gateway}/api/orders", json={"items": items},
                                  headers=headers, timeout=timeout)
            lost = answer_was_lost(answer.status_code, error_code(answer))
            if not lost or attempt == attempts:
                return answer, attempt
        except requests.RequestException:
            if attempt == attempts:
                raise
        time.sleep(0.5 * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def sandbox_env(state: dict, run_dir: Path) -> dict[str, str]:
    """The variables that point a notebook (or anything else) at one running sandbox."""
    urls = state["urls"]
    env = {env_name(name): url for name, url in urls.items()}
    env.update(MICROLAB_RUN_DIR=str(run_dir), BUS_NAMESPACE=state.get("namespace", ""),
               TRACE_FILE=str(run_dir / "traces.jsonl"), CONSUL_URL=urls["registry"])
    return env


def env_name(name: str) -> str:
    return INFRA_ENV.get(name) or peer_env_name(name)


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, every: float = 0.2,
               what: str = "") -> Any:
    """Poll `condition` until it returns something truthy, and return that. Raises
    TimeoutError after `timeout` seconds, so a notebook cell fails instead of hanging."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"still not true after {timeout:.0f} s: {what or condition}")
        time.sleep(every)


@dataclass
class Snapshot:
    """What a notebook may change, as it was when the notebook started."""

    running: set[str] = field(default_factory=set)
    proxies: dict[str, dict] = field(default_factory=dict)
    providers: dict[str, dict] = field(default_factory=dict)

    def differences(self, other: Snapshot) -> list[str]:
        """What `other` (the sandbox now) has that this snapshot did not, in words."""
        found = [f"{name} is not running" for name in sorted(self.running - other.running)]
        for name in sorted(set(self.proxies) | set(other.proxies)):
            before, after = self.proxies.get(name), other.proxies.get(name)
            if before != after:
                found.append(f"proxy {name}: {before} -> {after}")
        for name in sorted(self.providers):
            if self.providers[name] != other.providers.get(name):
                found.append(f"provider {name}: {self.providers[name]} -> "
                             f"{other.providers.get(name)}")
        return found


class Lab:
    def __init__(self, urls: dict[str, str], *, run_dir: Path | None = None,
                 namespace: str = "", trace_file: Path | None = None) -> None:
        self.urls = urls
        self.run_dir = run_dir
        self.namespace = namespace
        self.trace_file = trace_file
        self.topology = load_topology()
        self.snapshot = Snapshot()
        self._admin: requests.Session | None = None

    # -- finding the sandbox -----------------------------------------------------------------
    @classmethod
    def connect(cls, environ: dict[str, str] | None = None) -> Lab:
        """The running sandbox, its state remembered for `tidy()`."""
        lab = cls.from_env(environ)
        lab.wait_ready()
        lab.snapshot = lab.take_snapshot()
        return lab

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Lab:
        environ = dict(os.environ if environ is None else environ)
        run_dir = Path(environ.get("MICROLAB_RUN_DIR") or DEFAULT_RUN_DIR)
        state = RunDir(run_dir).read_state() or {}
        if state.get("urls"):
            urls = dict(state["urls"])
        else:  # no state file (e.g. inside a compose container): the topology's ports
            topology = load_topology()
            plan = plan_ports(topology)
            urls = {name: plan.url(name) for name in topology.services}
            urls.update(mongo=f"mongodb://127.0.0.1:{plan.port('mongo')}/",
                        rabbitmq=DEFAULT_AMQP_URL, chaos=plan.url("chaos"),
                        control=plan.url("control"))
        for name in list(urls):
            urls[name] = environ.get(env_name(name)) or urls[name]
        trace_file = environ.get("TRACE_FILE") or (str(run_dir / "traces.jsonl")
                                                   if state else "")
        return cls(urls, run_dir=run_dir if state else None,
                   namespace=environ.get("BUS_NAMESPACE", state.get("namespace", "")),
                   trace_file=Path(trace_file) if trace_file else None)

    def url(self, name: str) -> str:
        return self.urls[name]

    @property
    def gateway(self) -> str:
        return self.urls["gateway"]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the gateway to say every upstream is healthy (a sandbox just started, or
        a notebook before this one that restarted a service)."""
        def healthy() -> bool:
            try:
                return requests.get(f"{self.gateway}/api/health", timeout=5).status_code == 200
            except requests.RequestException:
                return False
        wait_until(healthy, timeout, what=f"{self.gateway}/api/health answering 200 "
                   "(is the sandbox running? `make up` starts it)")

    # -- the CLI and the parts -------------------------------------------------------------
    def microlab(self, *args: str, check: bool = True, show: bool = True) -> str:
        """Run `python -m microlab ARGS` against this sandbox; print and return its output."""
        command = [sys.executable, "-m", "microlab"]
        if self.run_dir:
            command += ["--run-dir", str(self.run_dir)]
        done = subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        output = done.stdout + done.stderr
        if show:
            print(output.rstrip())
        if check and done.returncode != 0:
            raise RuntimeError(f"microlab {' '.join(args)} exited with {done.returncode}")
        return output

    @property
    def chaos(self) -> ChaosClient:
        return ChaosClient(self.urls["chaos"], self.topology)

    def toxiproxy(self) -> Any:
        """A `toxiproxy-python` client for this sandbox's Toxiproxy(-compatible) server."""
        from toxiproxy import Toxiproxy
        server = Toxiproxy()
        address = urlsplit(self.urls["chaos"])
        server.update_api_consumer(address.hostname, address.port)
        return server

    def status(self) -> dict:
        """The supervisor's view: every process, its state, health and memory."""
        return requests.get(f"{self.urls['control']}/status", timeout=30).json()

    def wiring(self, service: str) -> dict[str, str]:
        """The URLs the supervisor started `service` with (peers, MongoDB, broker), passwords
        hidden: the process's environment, as it reads it."""
        return self._control("GET", f"/services/{service}/wiring", timeout=30)

    def _lifecycle(self, service: str, action: str) -> dict:
        return self._control("POST", f"/services/{service}/{action}", timeout=120)

    def _control(self, method: str, path: str, timeout: float) -> dict:
        """The supervisor's answer; its error, as it words it, raised as a RuntimeError."""
        answer = requests.request(method, f"{self.urls['control']}{path}", timeout=timeout)
        if answer.status_code != 200:
            raise RuntimeError(answer.json().get("error", answer.text))
        return answer.json()

    def stop(self, service: str) -> dict:
        return self._lifecycle(service, "stop")

    def start(self, service: str) -> dict:
        return self._lifecycle(service, "start")

    # -- people in the shop ------------------------------------------------------------------
    def admin(self) -> requests.Session:
        """A session logged in through the gateway as the dev-mode admin (logged in once: the
        gateway allows few logins per second)."""
        if self._admin is None:
            self._admin = admin_session(self.gateway)
        return self._admin

    def customer(self, name: str = "Ada") -> requests.Session:
        """A new customer, registered and logged in through the gateway. The session carries
        the token; `session.user` is the profile."""
        email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
        password = "correct-horse-battery"
        session = requests.Session()
        registered = session.post(f"{self.gateway}/api/users/register", timeout=30,
                                  json={"email": email, "password": password, "name": name})
        registered.raise_for_status()
        login = session.post(f"{self.gateway}/api/users/login", timeout=30,
                             json={"email": email, "password": password})
        login.raise_for_status()
        session.headers["Authorization"] = f"Bearer {login.json()['token']}"
        session.user = login.json()["user"]  # type: ignore[attr-defined]
        session.password = password  # type: ignore[attr-defined]
        return session

    def products(self, **query: Any) -> list[dict]:
        answer = requests.get(f"{self.gateway}/api/products", params={"limit": 50, **query},
                              timeout=30)
        answer.raise_for_status()
        return answer.json()["items"]

    def stock(self, product_id: str) -> dict:
        answer = self.admin().get(f"{self.gateway}/api/inventory/{product_id}", timeout=30)
        answer.raise_for_status()
        return answer.json()

    def in_stock(self, minimum: int = 10) -> dict:
        """A product with at least `minimum` units available."""
        for product in self.products():
            if self.stock(product["id"])["available"] >= minimum:
                return product
        raise LookupError(f"no product with {minimum} units in stock")

    def spans(self) -> list[dict]:
        """Every span the services have written so far (JSON lines)."""
        if not self.trace_file or not self.trace_file.exists():
            return []
        with open(self.trace_file) as lines:
            return [json.loads(line) for line in lines if line.strip()]

    # -- leaving it as we found it -------------------------------------------------------
    def take_snapshot(self) -> Snapshot:
        snapshot = Snapshot()
        try:
            rows = self.status()["services"]
            snapshot.running = {row["service"] for row in rows if row["state"] == "running"
                                and row["service"] in self.topology.services}
        except requests.RequestException:
            pass  # no supervisor (compose): nothing to start again
        proxies = requests.get(f"{self.urls['chaos']}/proxies", timeout=10).json()
        snapshot.proxies = {name: {"enabled": proxy["enabled"],
                                   "toxics": sorted(json.dumps(t, sort_keys=True)
                                                    for t in proxy["toxics"])}
                            for name, proxy in proxies.items()}
        providers = requests.get(f"{self.urls['payments']}/api/v1/payments/providers",
                                 timeout=10)
        if providers.ok:
            snapshot.providers = {item.pop("name"): item
                                  for item in providers.json()["items"]}
        return snapshot

    def tidy(self) -> list[str]:
        """Put back what the notebook changed: services started again, toxics removed, proxies
        the notebook made deleted, payment providers as they were. Returns what it fixed."""
        now = self.take_snapshot()
        fixed = self.snapshot.differences(now)
        for service in sorted(self.snapshot.running - now.running):
            self.start(service)
        for name in set(now.proxies) - set(self.snapshot.proxies):
            requests.delete(f"{self.urls['chaos']}/proxies/{name}", timeout=10)
        if any(now.proxies.get(name) != state for name, state in self.snapshot.proxies.items()):
            self.chaos.reset()
        changed = {name: state for name, state in self.snapshot.providers.items()
                   if now.providers.get(name) != state}
        if changed:
            admin = self.admin()
            for name, state in changed.items():
                admin.put(f"{self.gateway}/api/payments/providers/{name}", json=state,
                          timeout=10).raise_for_status()
        if fixed:
            self.wait_ready()
        return fixed


__all__ = ["DEV_ADMIN", "Lab", "Snapshot", "sandbox_env", "wait_until"]
