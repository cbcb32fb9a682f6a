"""Every process the supervisor starts can be stopped, started and restarted by name, and a
crashed one comes back under the restart policy (always for the embedded MongoDB and the chaos
proxy; for services with `microlab up --restart on-failure`). After each, the invariants hold.

These tests kill processes with SIGKILL, so they get a sandbox of their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests

from microlab.launcher import SandboxProcess, admin_session
from microlab.rabbit import delete_namespace
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, amqp_url: str) -> Iterator[SandboxProcess]:
    runner = SandboxProcess(tmp_path_factory.mktemp("restarts") / "run")
    runner.args += ["--restart", "on-failure"]
    runner.start()
    try:
        yield runner
    finally:
        code = runner.stop()
        delete_namespace(amqp_url, runner.namespace)
        assert code == 0, f"microlab up exited with {code}:\n{runner.output()[-3000:]}"


def row(sandbox: SandboxProcess, name: str) -> dict:
    return next(r for r in sandbox.status()["services"] if r["service"] == name)


def kill(sandbox: SandboxProcess, name: str) -> int:
    """SIGKILL the process group of `name`, as a crash or the OOM killer would; its pid."""
    pid = row(sandbox, name)["pid"]
    os.killpg(pid, signal.SIGKILL)
    return pid


def back_with_a_new_pid(sandbox: SandboxProcess, name: str, old_pid: int,
                        timeout: float = 30.0) -> dict:
    def restarted() -> dict | None:
        current = row(sandbox, name)
        healthy = current["state"] == "running" and current["health"] == "ok"
        return current if healthy and current["pid"] != old_pid else None
    return wait_for(restarted, timeout=timeout, what=f"{name} restarted")


def products(sandbox: SandboxProcess) -> requests.Response:
    return requests.get(f"{sandbox.urls['gateway']}/api/products", timeout=10)


def place_order(sandbox: SandboxProcess) -> requests.Response:
    session = admin_session(sandbox.urls["gateway"])
    product_id = products(sandbox).json()["items"][0]["id"]
    return session.post(f"{sandbox.urls['gateway']}/api/orders", timeout=35,
                        json={"items": [{"product_id": product_id, "quantity": 1}]})


def assert_check_clean(sandbox: SandboxProcess) -> None:
    def clean() -> subprocess.CompletedProcess[str] | None:
        result = sandbox.cli("check")
        return result if result.returncode == 0 else None
    wait_for(clean, timeout=30, what="microlab check clean")


def test_a_killed_mongo_is_restarted_and_the_shop_heals(sandbox):
    assert place_order(sandbox).status_code == 201
    old_pid = kill(sandbox, "mongo")
    began = time.monotonic()
    # While it is gone (a second or so) the services say so with a 503, never a 500.
    assert products(sandbox).status_code != 500
    back_with_a_new_pid(sandbox, "mongo", old_pid)
    wait_for(lambda: products(sandbox).status_code == 200, timeout=30,
             what="products answer again")
    assert time.monotonic() - began < 30
    assert "mongo exited with code -9; restarting it in 1 s" in sandbox.output()
    # (said once MongoDB answers, which may be a moment after products does)
    wait_for(lambda: "mongo is back" in sandbox.output(), timeout=30, what="'mongo is back'")
    assert place_order(sandbox).status_code == 201
    assert_check_clean(sandbox)


def test_a_killed_chaos_proxy_comes_back_with_every_edge(sandbox):
    edges_before = sandbox.cli("chaos", "list").stdout.count("->")
    old_pid = kill(sandbox, "chaos")
    back_with_a_new_pid(sandbox, "chaos", old_pid)
    assert sandbox.cli("chaos", "list").stdout.count("->") == edges_before > 30
    wait_for(lambda: place_order(sandbox).status_code == 201, timeout=30,
             what="an order confirmed through the new proxies")
    assert_check_clean(sandbox)


def test_mongo_is_stopped_and_started_by_name_and_stays_stopped_meanwhile(sandbox):
    result = sandbox.cli("stop", "mongo")
    assert result.returncode == 0, result.stderr
    assert "mongo: stopped" in result.stdout
    try:
        # (a Response is falsy when it says 4xx/5xx, so wait_for gets the status, not it)
        wait_for(lambda: products(sandbox).status_code == 503, timeout=15,
                 what="503 while mongo is stopped")
        answer = products(sandbox)
        assert answer.json()["error"]["code"] == "dependency_unavailable"
        assert answer.json()["error"]["dependency"] == "mongo"
        assert answer.headers["Retry-After"]
        time.sleep(2)  # longer than the first restart delay: stopped on purpose stays stopped
        assert row(sandbox, "mongo")["state"] == "stopped"
    finally:
        result = sandbox.cli("start", "mongo")
    assert result.returncode == 0, result.stderr
    assert "mongo: running (health ok)" in result.stdout
    wait_for(lambda: products(sandbox).status_code == 200, timeout=30, what="products again")


def test_restart_by_name_covers_the_chaos_proxy(sandbox):
    old_pid = row(sandbox, "chaos")["pid"]
    result = sandbox.cli("restart", "chaos")
    assert result.returncode == 0, result.stderr
    assert row(sandbox, "chaos")["pid"] != old_pid
    assert sandbox.cli("chaos", "list").stdout.count("->") > 30


def test_with_restart_on_failure_a_crashed_service_comes_back(sandbox):
    old_pid = kill(sandbox, "payments")
    back_with_a_new_pid(sandbox, "payments", old_pid)
    assert "payments exited with code -9; restarting it in 1 s" in sandbox.output()
    wait_for(lambda: place_order(sandbox).status_code == 201, timeout=40,
             what="an order confirmed once payments is back")
    assert_check_clean(sandbox)
