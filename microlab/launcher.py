"""Start a whole sandbox from Python, as `microlab up` in a child process, and drive it.

Tests, notebooks and experiments use this to get a sandbox of their own on free ports:

    with SandboxProcess(tmp_path / "run") as sandbox:
        requests.get(sandbox.urls["gateway"] + "/health")
        sandbox.stop_service("payments")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

import requests

from microlab.processes import ROOT
from microlab.supervisor import RunDir, supervisor_alive


# The admin account users creates in dev mode (ADMIN_EMAIL/ADMIN_PASSWORD when set).
DEV_ADMIN = {"email": "admin@microlab.local", "password": "admin-password"}


def admin_session(gateway: str, timeout: float = 30.0) -> requests.Session:
    """A requests session logged in through the gateway as the dev-mode admin."""
    session = requests.Session()
    answer = session.post(f"{gateway}/api/users/login", json=DEV_ADMIN, timeout=timeout)
    answer.raise_for_status()
    session.headers["Authorization"] = f"Bearer {answer.json()['token']}"
    return session


class SandboxError(RuntimeError):
    pass


class SandboxProcess:
    def __init__(self, run_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.run_dir = RunDir(Path(run_dir))
        # Free ports and a namespace of its own: runs never collide on ports or on the broker.
        self.namespace = f"sandbox-{uuid.uuid4().hex[:8]}"
        self.args = list(args) or ["--free-ports", "--namespace", self.namespace]
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen[str] | None = None
        self.state: dict = {}

    @property
    def output_file(self) -> Path:
        return self.run_dir.path / "supervisor.out"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "microlab", "--run-dir", str(self.run_dir.path), *args]

    def start(self, timeout: float = 90.0) -> SandboxProcess:
        """Run `microlab up` (in its own process group, like a terminal would) until ready."""
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        with open(self.output_file, "w") as output:
            self.popen = subprocess.Popen(
                self.command("up", "--quiet", *self.args), cwd=ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise SandboxError(f"microlab up exited with {self.popen.returncode}:\n"
                                   f"{self.output()}")
            state = self.run_dir.read_state()
            if state and state.get("ready"):
                self.state = state
                return self
            time.sleep(0.1)
        self.stop()
        raise SandboxError(f"sandbox not ready after {timeout:.0f}s:\n{self.output()}")

    def output(self) -> str:
        return self.output_file.read_text() if self.output_file.exists() else ""

    @property
    def urls(self) -> dict[str, str]:
        return self.state["urls"]

    @property
    def control_url(self) -> str:
        return self.state["control_url"]

    @property
    def supervisor_pid(self) -> int:
        return self.state["supervisor_pid"]

    def status(self) -> dict:
        return requests.get(f"{self.control_url}/status", timeout=30).json()

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """`microlab ARGS` against this sandbox, as a learner types it; its exit code and output."""
        return subprocess.run(self.command(*args), cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)

    def _lifecycle(self, service: str, action: str) -> dict:
        response = requests.post(f"{self.control_url}/services/{service}/{action}", timeout=120)
        if response.status_code != 200:
            raise SandboxError(response.json()["error"])
        return response.json()

    def stop_service(self, service: str) -> dict:
        return self._lifecycle(service, "stop")

    def start_service(self, service: str) -> dict:
        return self._lifecycle(service, "start")

    def restart_service(self, service: str) -> dict:
        return self._lifecycle(service, "restart")

    def stop(self, signum: int = signal.SIGINT, timeout: float = 60.0) -> int:
        """Stop the way a terminal's Ctrl-C does: signal the supervisor's process group."""
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else 0
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
            raise SandboxError(f"supervisor did not stop within {timeout:.0f}s") from None

    @property
    def running(self) -> bool:
        return supervisor_alive(self.run_dir.read_state())

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
