"""`microlab up` and `down`: clean starts, clean stops, clear failures, no process left behind."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from microlab.launcher import SandboxError, SandboxProcess
from microlab.processes import ROOT
from microlab.topology import free_ports

pytestmark = pytest.mark.slow


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def assert_all_gone(processes: list[psutil.Process], within: float = 15.0) -> None:
    _, alive = psutil.wait_procs(processes, timeout=within)
    assert alive == [], f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"


def start_sandbox(tmp_path: Path) -> tuple[SandboxProcess, list[psutil.Process]]:
    sandbox = SandboxProcess(tmp_path / "run").start()
    children = descendants(sandbox.supervisor_pid)
    # mongo, the chaos proxy, the zygote, the control room and the 9 services
    if len(children) < 13:
        sandbox.stop()  # not left running for the rest of the session
        pytest.fail(f"expected 13 processes: {[child.cmdline() for child in children]}")
    return sandbox, children


def test_ctrl_c_stops_everything_and_frees_every_port(tmp_path):
    sandbox, children = start_sandbox(tmp_path)
    ports = [int(url.rsplit(":", 1)[1].rstrip("/")) for name, url in sandbox.urls.items()
             if name != "rabbitmq"]
    assert sandbox.stop(signal.SIGINT) == 0
    assert_all_gone(children)
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, port
    assert not sandbox.run_dir.state_file.exists()
    assert "microlab: stopped" in sandbox.output()


def test_down_stops_a_running_sandbox_and_a_second_up_is_refused(tmp_path):
    sandbox, children = start_sandbox(tmp_path)
    second = subprocess.run(sandbox.command("up", "--free-ports"), capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert second.returncode == 1
    assert "already running" in second.stderr
    down = subprocess.run(sandbox.command("down"), capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert sandbox.popen.wait(timeout=30) == 0
    assert_all_gone(children)


def test_children_die_with_a_killed_supervisor(tmp_path):
    sandbox, children = start_sandbox(tmp_path)
    os.kill(sandbox.supervisor_pid, signal.SIGKILL)
    assert_all_gone(children, within=20)
    sandbox.popen.wait(timeout=5)


def run_up(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "microlab", "--run-dir", str(tmp_path / "run"), "up", "--quiet",
         *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, **(env or {})})


def test_missing_rabbitmq_gives_a_how_to_and_no_traceback(tmp_path):
    closed_port = free_ports(1)[0]
    result = run_up(tmp_path, "--free-ports",
                    env={"AMQP_URL": f"amqp://guest:secret@127.0.0.1:{closed_port}/"})
    assert result.returncode == 3
    assert "RabbitMQ is not reachable at amqp://guest:***@127.0.0.1" in result.stderr
    assert "docker compose up -d rabbitmq" in result.stderr
    assert "apt-get install rabbitmq-server" in result.stderr
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_busy_port_is_named_before_anything_starts(tmp_path):
    squatter = socket.socket()
    for offset in random.Random().sample(range(1000, 30000), 50):
        try:
            squatter.bind(("127.0.0.1", 3000 + offset))  # the gateway's default port is 3000
            break
        except OSError:
            continue
    with squatter:
        squatter.listen()
        result = run_up(tmp_path, "--port-offset", str(offset))
    assert result.returncode == 3
    assert f"{offset + 3000} (gateway)" in result.stderr
    assert "--free-ports" in result.stderr
    assert "Traceback" not in result.stderr


def test_startup_failure_names_the_service_and_shows_its_log(tmp_path):
    sandbox = SandboxProcess(tmp_path / "run", env={"BREAKER_RECOVERY_TIMEOUT": "soon"})
    try:
        with pytest.raises(SandboxError) as failure:
            sandbox.start(timeout=60)
    finally:
        sandbox.stop()  # had it started after all, it must not outlive the test
    message = str(failure.value)
    assert "startup failed" in message and "exited with code 2" in message
    assert "BREAKER_RECOVERY_TIMEOUT must be a number" in message
    left = [process for process in psutil.process_iter(["cmdline"])
            if str(sandbox.run_dir.path) in " ".join(process.info["cmdline"] or [])]
    assert left == []
