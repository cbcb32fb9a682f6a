"""The local-mode supervisor: starts the whole sandbox, keeps it observable, stops it cleanly.

`microlab up` runs one Supervisor in the foreground. It checks what the sandbox needs, starts
the embedded MongoDB, then every service (each `python -m services.<name>`, a gunicorn with one
gthread worker) on the ports of the topology, waits until each answers /health, and prints the
URLs. Then it streams everyone's logs, prefixed, and answers a small control API (status, stop,
start or restart any process by name, services and infrastructure alike) that `microlab
status/stop/start/restart` and the tests use. A process that crashes is brought back under the
restart policy of restarts.py: always for infrastructure, for services with `--restart
on-failure`.

Ctrl-C or SIGTERM stops services first, then infrastructure, and leaves no process behind.

Every process is started from the main thread (see processes.py for why); the control API
hands its requests to the main thread through a queue.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

from microlab.chaos import ChaosClient, edge_proxies
from microlab.control import ControlServer
from microlab.embedded_mongo import mongo_command, wait_for_mongo
from microlab.preflight import (PreflightError, check_executables, check_ports_free,
                                check_rabbitmq, redact)
from microlab.processes import ManagedProcess, pss_bytes
from microlab.zygote import Zygote
from microlab.restarts import CrashCounter, RestartPolicy
from microlab.topology import (DEFAULT_AMQP_URL, LOOPBACK, PortPlan, Topology, service_env)

STARTUP_TIMEOUT = 60.0
INFRASTRUCTURE = ("mongo", "chaos", "dashboard")


class StartupError(Exception):
    """A part of the sandbox did not come up; the message says which and shows its last logs."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while starting."""


@dataclass(frozen=True)
class RunDir:
    """Where one sandbox keeps its state, logs and data (default: .microlab/)."""

    path: Path

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def data(self) -> Path:
        return self.path / "data"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write_state(self, state: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2))
        temporary.replace(self.state_file)


def supervisor_alive(state: dict | None) -> bool:
    """Is the supervisor recorded in `state` still running (a zombie counts as gone)?"""
    if not state or "supervisor_pid" not in state:
        return False
    try:
        return psutil.Process(state["supervisor_pid"]).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Supervisor:
    def __init__(self, topology: Topology, plan: PortPlan, run_dir: RunDir, *,
                 amqp_url: str = DEFAULT_AMQP_URL, chaos: bool = True, namespace: str = "",
                 restart_services: bool = False, policy: RestartPolicy = RestartPolicy(),
                 on_line: Callable[[str, str], None] | None = None,
                 out: Callable[[str], None] = functools.partial(print, flush=True)) -> None:
        self.topology = topology
        self.plan = plan
        self.run_dir = run_dir
        self.amqp_url = amqp_url
        self.chaos = chaos
        self.namespace = namespace
        self.out = out
        self.started_at = time.time()
        self.startup_seconds: float | None = None
        self.stopping = threading.Event()
        self._commands: queue.Queue[tuple[Callable[[], Any], queue.Queue]] = queue.Queue()
        self._stopped_on_purpose: set[str] = set()
        self._handled_exits: set[str] = set()
        self.restart_services = restart_services
        self.crashes = CrashCounter(policy)
        self._restart_at: dict[str, float] = {}  # name -> time.monotonic() to start it again
        self.control = ControlServer(self, LOOPBACK, plan.port("control"))
        self.zygote = Zygote(self.run_dir.log_file("zygote"))
        self.processes = self._build_processes(on_line)

    # -- the processes -------------------------------------------------------------------
    def _build_processes(self, on_line) -> dict[str, ManagedProcess]:
        processes = {
            "mongo": ManagedProcess(
                "mongo", mongo_command(self.run_dir.data / "mongo", self.plan.port("mongo")),
                dict(os.environ), self.run_dir.log_file("mongo"), on_line),
        }
        if self.chaos:
            processes["chaos"] = ManagedProcess(
                "chaos", [sys.executable, "-m", "microlab.chaosproxy",
                          "--host", LOOPBACK, "--port", str(self.plan.port("chaos")),
                          "-proxy-metrics"],  # per-edge byte counters, as Toxiproxy's flag
                dict(os.environ), self.run_dir.log_file("chaos"), on_line,
                health_url=f"{self.plan.url('chaos')}/version")
        for name, service in self.topology.services.items():
            env = {**os.environ, "PYTHONUNBUFFERED": "1",
                   # We restart a service that dies: it needs no gunicorn master of its own.
                   "MICROLAB_SUPERVISED": "1",
                   # Every service appends its spans to one file the dashboard reads.
                   "OTEL_TRACES_EXPORTER": "jsonl",
                   "TRACE_FILE": str(self.run_dir.path / "traces.jsonl"),
                   "BUS_NAMESPACE": self.namespace,
                   **service_env(self.topology, self.plan, name, through_proxies=self.chaos,
                                 amqp_url=self.amqp_url)}
            processes[name] = ManagedProcess(
                name, [sys.executable, "-m", service.module], env, self.run_dir.log_file(name),
                on_line, health_url=f"{self.plan.url(name)}/health", zygote=self.zygote)
        # The control room: a client of the sandbox like any other, started last.
        processes["dashboard"] = ManagedProcess(
            "dashboard", [sys.executable, "-m", "microlab.dashboard",
                          "--port", str(self.plan.port("dashboard"))],
            {**os.environ, "MICROLAB_RUN_DIR": str(self.run_dir.path)},
            self.run_dir.log_file("dashboard"), on_line,
            health_url=f"{self.plan.url('dashboard')}/health", zygote=self.zygote)
        return processes

    @property
    def services(self) -> list[str]:
        return list(self.topology.services)

    def urls(self) -> dict[str, str]:
        urls = {name: self.plan.url(name) for name in self.services}
        urls["mongo"] = f"mongodb://{LOOPBACK}:{self.plan.port('mongo')}/"
        urls["rabbitmq"] = self.amqp_url
        if self.chaos:
            urls["chaos"] = self.plan.url("chaos")
        urls["control"] = self.plan.url("control")
        urls["dashboard"] = self.plan.url("dashboard")
        return urls

    # -- starting ------------------------------------------------------------------------
    def start(self, *, fresh: bool = False) -> float:
        """Bring everything up; returns the seconds it took. Raises on any failure."""
        began = time.monotonic()
        check_executables()
        check_ports_free(self.plan)
        check_rabbitmq(self.amqp_url)
        if fresh and self.run_dir.data.exists():
            shutil.rmtree(self.run_dir.data)
        (self.run_dir.data / "mongo").mkdir(parents=True, exist_ok=True)
        self.control.start()
        self._write_state(ready=False)
        self.zygote.start()  # imports the services' libraries while the databases start

        for infrastructure in ("mongo", "chaos"):
            if infrastructure in self.processes:
                self._bring_up(infrastructure)
        self._check_interrupted()
        # The control room needs nothing but its port to answer /health: it starts now and is
        # waited for with the last wave, so it adds nothing to the start-up time.
        self.processes["dashboard"].start()
        waves = self.topology.waves()
        for number, wave in enumerate(waves, start=1):
            for name in wave:
                self.processes[name].start()
            self._wait_healthy([*wave, "dashboard"] if number == len(waves) else wave)
        self.startup_seconds = round(time.monotonic() - began, 2)
        self._write_state(ready=True)
        return self.startup_seconds

    def _bring_up(self, name: str) -> None:
        """Start one process and wait until it can be used."""
        self.processes[name].start()
        if name == "mongo":
            try:
                wait_for_mongo(self.urls()["mongo"], timeout=20)
            except TimeoutError as error:
                raise StartupError(self._failure_report("mongo", str(error))) from None
            return
        self._wait_healthy([name])
        if name == "chaos":
            # One proxy per edge, before any service tries to use one (a restarted proxy
            # starts empty: its edges come back, their toxics do not).
            ChaosClient(self.plan.url("chaos"), self.topology).populate(
                edge_proxies(self.topology, self.plan))

    def _check_interrupted(self) -> None:
        if self.stopping.is_set():
            raise Interrupted()

    def _wait_healthy(self, names: list[str], timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        with requests.Session() as session:
            while pending:
                self._check_interrupted()
                for name in list(pending):
                    process = self.processes[name]
                    if not process.running:
                        raise StartupError(self._failure_report(
                            name, f"exited with code {process.returncode}"))
                    try:
                        if session.get(process.health_url, timeout=1).status_code == 200:
                            pending.remove(name)
                    except requests.RequestException:
                        pass
                if pending and time.monotonic() > deadline:
                    raise StartupError(self._failure_report(
                        pending[0], f"not healthy after {timeout:.0f}s"))
                if pending:
                    time.sleep(0.1)

    def _failure_report(self, name: str, what: str, lines: int = 20) -> str:
        try:
            tail = self.run_dir.log_file(name).read_text().splitlines()[-lines:]
        except FileNotFoundError:
            tail = []
        shown = "\n".join(f"  {line}" for line in tail) or "  (no output)"
        return f"{name} {what}. Its last log lines:\n{shown}"

    # -- running -------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def request_stop(signum, _frame) -> None:
            self.stopping.set()
            self._commands.put((lambda: None, queue.Queue()))  # wake the main loop

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

    def serve_forever(self) -> None:
        """Run control commands on the main thread until asked to stop."""
        while not self.stopping.is_set():
            self._watch_exits()
            try:
                command, reply = self._commands.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                reply.put((True, command()))
            except Exception as error:  # reported to the caller of the control API
                reply.put((False, error))

    def submit(self, command: Callable[[], Any], timeout: float = 90.0) -> Any:
        """Run `command` on the main thread (from any thread) and return its result."""
        if self.stopping.is_set():
            raise RuntimeError("the sandbox is stopping")
        reply: queue.Queue = queue.Queue()
        self._commands.put((command, reply))
        ok, result = reply.get(timeout=timeout)
        if not ok:
            raise result
        return result

    # -- crashes and the restart policy --------------------------------------------------
    def restarts(self, name: str) -> bool:
        """Is `name` brought back when it crashes? Infrastructure always, services on request."""
        return name in INFRASTRUCTURE or self.restart_services

    def _watch_exits(self) -> None:
        for name, process in self.processes.items():
            if (process.popen is not None and not process.running
                    and name not in self._stopped_on_purpose
                    and name not in self._handled_exits):
                self._handled_exits.add(name)
                self._crashed(name, process)
        now = time.monotonic()
        for name, when in list(self._restart_at.items()):
            if now >= when:
                del self._restart_at[name]
                self._restart(name)

    def _crashed(self, name: str, process: ManagedProcess) -> None:
        code = process.returncode
        # on-failure, as in compose: a process that exits with 0 meant to stop.
        if not self.restarts(name) or code == 0:
            self.out(f"!! {name} exited with code {code}; "
                     f"`microlab start {name}` starts it again")
            return
        self._schedule_restart(name, f"exited with code {code}", process)

    def _schedule_restart(self, name: str, what: str, process: ManagedProcess) -> None:
        uptime = time.time() - (process.started_at or time.time())
        count, delay = self.crashes.crashed(name, uptime)
        if delay is None:
            self.out(f"!! {name} {what}, its {count}th crash in a row: a crash loop, not "
                     f"restarting it again. Look at `microlab logs {name}`; "
                     f"`microlab start {name}` tries again")
            return
        self.out(f"!! {name} {what}; restarting it in {delay:g} s (crash {count} in a row, "
                 f"the policy gives up at {self.crashes.policy.max_crashes})")
        self._restart_at[name] = time.monotonic() + delay

    def _restart(self, name: str) -> None:
        self._handled_exits.discard(name)
        try:
            self._bring_up(name)
        except Interrupted:
            return
        except Exception as error:  # any failure to come back is the next crash in a row
            process = self.processes[name]
            process.stop(timeout=5)  # may exit 0 on SIGTERM: counted here, not by its code
            self._handled_exits.add(name)
            self._schedule_restart(name, f"did not come back ({str(error)[:300]})", process)
            return
        self.out(f"** {name} is back (pid {self.processes[name].pid})")
        self._write_state(ready=True)

    # -- one process at a time (fault isolation) ----------------------------------------
    def _known(self, name: str) -> ManagedProcess:
        if name not in self.processes:
            raise KeyError(f"unknown service {name!r} (known: {', '.join(self.processes)})")
        self._restart_at.pop(name, None)
        self.crashes.forget(name)
        return self.processes[name]

    def stop_service(self, name: str) -> dict:
        process = self._known(name)
        self._stopped_on_purpose.add(name)
        process.stop()
        self._write_state(ready=True)
        return self.service_row(name)

    def start_service(self, name: str) -> dict:
        self._known(name)
        self._stopped_on_purpose.discard(name)
        self._handled_exits.discard(name)
        self._bring_up(name)
        self._write_state(ready=True)
        return self.service_row(name)

    def restart_service(self, name: str) -> dict:
        self.stop_service(name)
        return self.start_service(name)

    # -- stopping ------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Services first (gateway first, so nothing new comes in), infrastructure last."""
        self.stopping.set()
        self.control.stop()
        self._stopped_on_purpose.update(self.processes)
        self.processes["dashboard"].stop(timeout=10)
        services = [self.processes[name] for name in reversed(self.services)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(services)) as pool:
            list(pool.map(lambda process: process.stop(timeout=10), services))
        for infrastructure in ("chaos", "mongo"):
            if infrastructure in self.processes:
                self.processes[infrastructure].stop(timeout=10)
        self.zygote.stop()
        self.run_dir.state_file.unlink(missing_ok=True)

    def wiring(self, name: str) -> dict[str, str]:
        """The URLs `name` was started with (its peers, MongoDB, the broker), passwords hidden.
        A forked process's /proc/<pid>/environ shows the zygote's, so this is where to look."""
        if name not in self.processes:
            raise KeyError(f"unknown process {name!r}")
        return {key: redact(value) for key, value in sorted(self.processes[name].env.items())
                if key.endswith("_URL")}

    # -- status --------------------------------------------------------------------------
    def service_row(self, name: str, session: requests.Session | None = None) -> dict:
        process = self.processes[name]
        row: dict[str, Any] = {"service": name, "pid": process.pid if process.running else None,
                               "port": self.plan.port(name)}
        if process.running:
            row["state"] = "running"
            row["uptime_s"] = round(time.time() - (process.started_at or time.time()), 1)
            row["pss_bytes"] = sum(pss_bytes(member.pid) for member in process.tree())
        elif process.popen is None:
            row.update(state="not started", uptime_s=None, pss_bytes=0)
        else:
            stopped = name in self._stopped_on_purpose
            row.update(state="stopped" if stopped else f"exited ({process.returncode})",
                       uptime_s=None, pss_bytes=0)
        row["health"] = self._health(process, session) if process.running else "-"
        return row

    @staticmethod
    def _health(process: ManagedProcess, session: requests.Session | None) -> str:
        if not process.health_url:
            return "ok" if process.running else "-"
        try:
            response = (session or requests).get(process.health_url, timeout=2)
        except requests.RequestException:
            return "down"
        return "ok" if response.status_code == 200 else "degraded"

    def status(self) -> dict:
        with requests.Session() as session, \
                concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            rows = list(pool.map(lambda name: self.service_row(name, session), self.processes))
        own = [("supervisor", os.getpid(), self.plan.port("control"))]
        if self.zygote.pid:  # it holds the pages the services share: its share counts too
            own.append(("zygote", self.zygote.pid, None))
        rows += [{"service": name, "pid": pid, "port": port, "state": "running", "health": "ok",
                  "uptime_s": round(time.time() - self.started_at, 1),
                  "pss_bytes": pss_bytes(pid)} for name, pid, port in own]
        return {"startup_s": self.startup_seconds, "urls": self.urls(), "services": rows,
                "total_pss_bytes": sum(row["pss_bytes"] for row in rows)}

    def _write_state(self, *, ready: bool) -> None:
        self.run_dir.write_state({
            "supervisor_pid": os.getpid(),
            "control_url": self.plan.url("control"),
            "ready": ready,
            "started_at": self.started_at,
            "startup_s": self.startup_seconds,
            "amqp_url": self.amqp_url,
            "namespace": self.namespace,
            "plan": self.plan.to_json(),
            "urls": self.urls(),
            "pids": {name: process.pid for name, process in self.processes.items()
                     if process.running},
        })


__all__ = ["Interrupted", "PreflightError", "RunDir", "StartupError", "Supervisor",
           "supervisor_alive"]
