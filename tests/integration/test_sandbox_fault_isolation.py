"""The lesson's first point: one service failing does not take the others down.

These tests share one sandbox (the session fixture) and put it back as they found it.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
import requests

from microlab.launcher import SandboxProcess
from microlab.topology import load_topology
from tests.helpers import passing_instances, wait_for

SERVICES = list(load_topology().services)


def health_status(sandbox: SandboxProcess, service: str) -> int | None:
    try:
        return requests.get(f"{sandbox.urls[service]}/health", timeout=3).status_code
    except requests.ConnectionError:
        return None


def rows_by_name(sandbox: SandboxProcess) -> dict[str, dict]:
    return {row["service"]: row for row in sandbox.status()["services"]}


def test_every_service_answers_health_with_its_name(sandbox):
    for service in SERVICES:
        response = requests.get(f"{sandbox.urls[service]}/health", timeout=3)
        assert response.status_code == 200, service
        assert response.json()["service"] == service
        assert response.headers["X-Request-Id"]


def test_services_with_a_database_report_it_in_health(sandbox):
    checks = requests.get(f"{sandbox.urls['users']}/health", timeout=3).json()["checks"]
    assert checks["mongo"] == {"status": "ok"}
    assert checks["consumers"] == {"status": "ok"}


def test_status_command_shows_every_process_startup_and_memory(sandbox):
    result = sandbox.cli("status")
    assert result.returncode == 0, result.stderr
    for name in ["mongo", *SERVICES, "supervisor"]:
        assert name in result.stdout
    assert "startup:" in result.stdout
    total_mb = float(result.stdout.split("total memory (PSS):")[1].split("MB")[0])
    assert 50 < total_mb < 4000


def test_every_service_registered_itself_in_the_registry(sandbox):
    for service in SERVICES:
        if service == "registry":
            continue
        # Within one probe of the registry's /health checks (10 s), should an earlier test
        # have made one fail.
        instances = wait_for(lambda: passing_instances(sandbox, service), 15,
                             f"{service} passing in the registry")
        assert len(instances) == 1, service
        assert instances[0]["Service"]["Port"] == int(sandbox.urls[service].rsplit(":", 1)[1])


def test_stopped_service_refuses_connections_while_the_rest_answer(sandbox):
    row = sandbox.stop_service("payments")
    try:
        assert row["state"] == "stopped"
        assert health_status(sandbox, "payments") is None
        assert passing_instances(sandbox, "payments") == []  # it deregistered on the way out
        for service in SERVICES:
            if service != "payments":
                assert health_status(sandbox, service) == 200, service
        result = sandbox.cli("status")
        assert result.returncode == 1  # something is not healthy, and status says so
        assert "stopped" in result.stdout
    finally:
        sandbox.start_service("payments")
    assert health_status(sandbox, "payments") == 200


def test_restarting_one_service_does_not_interrupt_the_others(sandbox):
    others = [service for service in SERVICES if service != "users"]
    failures: list[str] = []
    polls = 0
    done = threading.Event()

    def poll_others() -> None:
        nonlocal polls
        while not done.is_set():
            for service in others:
                status = health_status(sandbox, service)
                polls += 1
                if status != 200:
                    failures.append(f"{service}: {status}")

    poller = threading.Thread(target=poll_others)
    before = rows_by_name(sandbox)["users"]["pid"]
    poller.start()
    try:
        row = sandbox.restart_service("users")
    finally:
        done.set()
        poller.join()
    assert row["health"] == "ok" and row["pid"] != before
    assert polls >= len(others)
    assert failures == []


def test_a_crashed_service_is_reported_and_can_be_started_again(sandbox):
    pid = rows_by_name(sandbox)["email"]["pid"]
    os.killpg(pid, signal.SIGKILL)  # its whole process group, as in a crash
    try:
        row = rows_by_name(sandbox)["email"]
        for _ in range(50):
            if row["state"] != "running":
                break
            row = rows_by_name(sandbox)["email"]
        assert row["state"] == "exited (-9)"
        assert health_status(sandbox, "gateway") == 200
    finally:
        result = sandbox.cli("start", "email")
    assert result.returncode == 0, result.stderr
    assert "running (health ok)" in result.stdout


def test_logs_command_prints_the_services_json_lines(sandbox):
    requests.get(f"{sandbox.urls['products']}/no-such-page", timeout=3)
    result = sandbox.cli("logs", "products", "-n", "20")
    assert result.returncode == 0
    assert '"service": "products"' in result.stdout
    assert '"path": "/no-such-page"' in result.stdout


@pytest.mark.parametrize("command", ["stop", "start", "restart"])
def test_lifecycle_commands_name_unknown_services(sandbox, command):
    result = sandbox.cli(command, "nosuch")
    assert result.returncode == 1
    assert "unknown service 'nosuch'" in result.stderr
