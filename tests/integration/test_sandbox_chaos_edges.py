"""Every hop of the sandbox runs through a chaos proxy that `microlab chaos` can slow or cut."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from microlab.launcher import SandboxProcess
from microlab.topology import load_topology


def chaos(sandbox: SandboxProcess, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(sandbox.command("chaos", *args), capture_output=True, text=True,
                            timeout=60)
    return result


def through_edge(sandbox: SandboxProcess, edge: str, path: str = "/health") -> str:
    return f"http://127.0.0.1:{sandbox.state['plan']['proxy_ports'][edge]}{path}"


@pytest.fixture(autouse=True)
def reset_chaos(sandbox):
    yield
    assert chaos(sandbox, "reset").returncode == 0


def test_list_shows_every_edge_of_the_topology(sandbox):
    result = chaos(sandbox, "list")
    assert result.returncode == 0, result.stderr
    for edge in load_topology().edges():
        assert edge.name in result.stdout


def test_a_cut_edge_fails_fast_and_heals_when_restored(sandbox):
    url = through_edge(sandbox, "orders->payments")
    assert requests.get(url, timeout=5).status_code == 200
    assert chaos(sandbox, "down", "orders:payments").returncode == 0
    started = time.perf_counter()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)
    assert time.perf_counter() - started < 1.0  # refused, not timed out
    # Only that edge is down: the service itself and other edges to it still answer.
    assert requests.get(f"{sandbox.urls['payments']}/health", timeout=5).status_code == 200
    assert requests.get(through_edge(sandbox, "gateway->payments"), timeout=5).ok
    assert chaos(sandbox, "up", "orders->payments").returncode == 0
    assert requests.get(url, timeout=5).status_code == 200


def test_latency_slows_down_only_its_edge(sandbox):
    result = chaos(sandbox, "latency", "orders->payments", "400", "--jitter", "20")
    assert result.returncode == 0, result.stderr
    assert "latency(latency=400,jitter=20) downstream" in chaos(sandbox, "list").stdout
    started = time.perf_counter()
    assert requests.get(through_edge(sandbox, "orders->payments"), timeout=5).ok
    slow = time.perf_counter() - started
    started = time.perf_counter()
    assert requests.get(through_edge(sandbox, "orders->users"), timeout=5).ok
    fast = time.perf_counter() - started
    assert slow >= 0.38
    assert fast < slow / 2


def test_cutting_a_services_database_edge_shows_in_its_health(sandbox):
    assert chaos(sandbox, "down", "users->mongo").returncode == 0
    response = requests.get(f"{sandbox.urls['users']}/health", timeout=10)
    assert response.status_code == 503
    assert response.json()["checks"]["mongo"]["status"] == "down"
    assert requests.get(f"{sandbox.urls['products']}/health", timeout=10).status_code == 200
    assert chaos(sandbox, "up", "users->mongo").returncode == 0
    assert requests.get(f"{sandbox.urls['users']}/health", timeout=10).status_code == 200


def test_unknown_edges_are_named_in_the_error(sandbox):
    result = chaos(sandbox, "down", "payments->orders")
    assert result.returncode == 1
    assert "unknown edge 'payments->orders'" in result.stderr
