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


def test_a_service_without_its_database_answers_503_naming_it_not_500(sandbox):
    assert chaos(sandbox, "down", "products->mongo").returncode == 0
    try:
        for url in (f"{sandbox.urls['products']}/api/v1/products",
                    f"{sandbox.urls['gateway']}/api/products"):  # the gateway passes it on
            answer = requests.get(url, timeout=30)
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert (error["code"], error["dependency"]) == ("dependency_unavailable", "mongo")
            assert int(answer.headers["Retry-After"]) >= 1
    finally:
        assert chaos(sandbox, "up", "products->mongo").returncode == 0
    assert requests.get(f"{sandbox.urls['gateway']}/api/products", timeout=30).status_code == 200


def test_unknown_edges_are_named_in_the_error(sandbox):
    result = chaos(sandbox, "down", "payments->orders")
    assert result.returncode == 1
    assert "unknown edge 'payments->orders'" in result.stderr


def place_order(sandbox: SandboxProcess) -> requests.Response:
    gateway = sandbox.urls["gateway"]
    login = requests.post(f"{gateway}/api/users/login", timeout=10, json={
        "email": "admin@microlab.local", "password": "admin-password"}).json()
    headers = {"Authorization": f"Bearer {login['token']}"}
    product = requests.get(f"{gateway}/api/products", params={"limit": 1}, timeout=10
                           ).json()["items"][0]
    return requests.post(f"{gateway}/api/orders", headers=headers, timeout=30, json={
        "items": [{"product_id": product["id"], "quantity": 1}]})


def test_an_order_fails_fast_while_orders_to_payments_is_down_and_succeeds_after_up(sandbox):
    assert chaos(sandbox, "down", "orders->payments").returncode == 0
    started = time.perf_counter()
    failed = place_order(sandbox)
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["reason"] == "payments_unavailable"
    assert time.perf_counter() - started < 2.0  # refused at once, compensated, answered

    assert chaos(sandbox, "up", "orders->payments").returncode == 0
    deadline = time.monotonic() + 20  # the breaker lets a trial through after 3 s here
    while (answer := place_order(sandbox)).status_code != 201 and time.monotonic() < deadline:
        time.sleep(1)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "confirmed"
