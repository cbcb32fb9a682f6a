"""Every hop of the sandbox runs through a chaos proxy that `microlab chaos` can slow or cut."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from microlab.launcher import SandboxProcess
from microlab.topology import load_topology
from tests.helpers import passing_instances, wait_for


def chaos(sandbox: SandboxProcess, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(sandbox.command("chaos", *args), capture_output=True, text=True,
                            timeout=60)
    return result


def through_edge(sandbox: SandboxProcess, edge: str, path: str = "/health") -> str:
    return f"http://127.0.0.1:{sandbox.state['plan']['proxy_ports'][edge]}{path}"


def round_trip(url: str) -> float:
    started = time.perf_counter()
    assert requests.get(url, timeout=5).ok
    return time.perf_counter() - started


@pytest.fixture(autouse=True)
def reset_chaos(sandbox):
    yield
    assert chaos(sandbox, "reset").returncode == 0
    # A cut database edge turned its service's /health check in the registry critical, until the
    # registry's next probe (every 10 s): leave the registry as the next test expects it.
    others = [name for name in load_topology().services if name != "registry"]
    wait_for(lambda: all(passing_instances(sandbox, name) for name in others), 30,
             "every service passing in the registry again")


def test_list_shows_every_edge_of_the_topology(sandbox):
    result = chaos(sandbox, "list")
    assert result.returncode == 0, result.stderr
    for edge in load_topology().edges():
        assert edge.name in result.stdout


def test_a_cut_edge_fails_fast_and_heals_when_restored(sandbox):
    url = through_edge(sandbox, "orders->payments")
    assert requests.get(url, timeout=5).status_code == 200
    assert chaos(sandbox, "down", "orders:payments").returncode == 0
    with pytest.raises(requests.ConnectionError) as refused:
        requests.get(url, timeout=5)
    assert not isinstance(refused.value, requests.Timeout)  # refused at once, not timed out
    # Only that edge is down: the service itself and other edges to it still answer.
    assert requests.get(f"{sandbox.urls['payments']}/health", timeout=5).status_code == 200
    assert requests.get(through_edge(sandbox, "gateway->payments"), timeout=5).ok
    assert chaos(sandbox, "up", "orders->payments").returncode == 0
    assert requests.get(url, timeout=5).status_code == 200


def test_latency_slows_down_only_its_edge(sandbox):
    result = chaos(sandbox, "latency", "orders->payments", "400", "--jitter", "20")
    assert result.returncode == 0, result.stderr
    assert "latency(latency=400,jitter=20) downstream" in chaos(sandbox, "list").stdout
    slow = round_trip(through_edge(sandbox, "orders->payments"))
    # The fastest of three: one request of a busy machine may be slow for other reasons.
    fast = min(round_trip(through_edge(sandbox, "orders->users")) for _ in range(3))
    assert slow >= 0.38  # a lower bound: no load makes a request faster
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


class Shopper:
    """The demo admin, logged in once (scrypt is slow on purpose: not part of any order)."""

    def __init__(self, sandbox: SandboxProcess) -> None:
        self.gateway = sandbox.urls["gateway"]
        login = requests.post(f"{self.gateway}/api/users/login", timeout=30, json={
            "email": "admin@microlab.local", "password": "admin-password"})
        assert login.status_code == 200, login.text
        self.headers = {"Authorization": f"Bearer {login.json()['token']}"}

    def get(self, path: str, **params) -> dict:
        answer = requests.get(f"{self.gateway}{path}", params=params, headers=self.headers,
                              timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def order(self, product_id: str) -> requests.Response:
        return requests.post(f"{self.gateway}/api/orders", headers=self.headers, timeout=30,
                             json={"items": [{"product_id": product_id, "quantity": 1}]})


def test_an_order_fails_fast_while_orders_to_payments_is_down_and_succeeds_after_up(sandbox):
    shopper = Shopper(sandbox)
    product = shopper.get("/api/products", limit=1)["items"][0]["id"]
    stock_before = shopper.get(f"/api/inventory/{product}")
    assert chaos(sandbox, "down", "orders->payments").returncode == 0

    failed = shopper.order(product)
    assert failed.status_code == 503, failed.text
    error = failed.json()["error"]
    assert error["reason"] == "payments_unavailable"
    # Fast: the cut edge refused the connection (or orders' breaker, still open from an
    # earlier test, refused the call); nothing waited for a timeout.
    message = error["message"]
    assert ("ConnectionError" in message or "circuit" in message) and "Timeout" not in message
    # ...and compensated: its stock was reserved and released again, the order is cancelled,
    # nothing was charged.
    order_id = error["order_id"]
    order = shopper.get(f"/api/orders/{order_id}")
    assert order["status"] == "cancelled" and order["reason"] == "payments_unavailable"
    wait_for(lambda: {"stock.reserved", "stock.released"} <= {
        n["type"] for n in shopper.get("/api/notifications", limit=100)["items"]
        if n["data"].get("order_id") == order_id},
        what="inventory's stock.reserved and stock.released for the order")
    stock = shopper.get(f"/api/inventory/{product}")
    assert (stock["available"], stock["reserved"]) == (stock_before["available"],
                                                       stock_before["reserved"])
    assert shopper.get("/api/payments", order_id=order_id)["items"] == []

    assert chaos(sandbox, "up", "orders->payments").returncode == 0
    # The breaker lets a trial through after 3 s here.
    answer = wait_for(lambda: (a if (a := shopper.order(product)).status_code == 201 else None),
                      timeout=30, what="an order to go through again after the edge is up")
    assert answer.json()["status"] == "confirmed"


def test_the_supervisor_tells_each_process_its_wiring(sandbox):
    # Forked from the zygote, a service's /proc/<pid>/environ is the zygote's: the supervisor
    # says what it started each one with, passwords hidden.
    chaos_ports = {proxy["listen"].rsplit(":", 1)[1]
                   for proxy in requests.get(f"{sandbox.urls['chaos']}/proxies",
                                             timeout=10).json().values()}
    control = sandbox.control_url
    seen = set()
    for service in load_topology().services:
        wiring = requests.get(f"{control}/services/{service}/wiring", timeout=10).json()
        for name in {"MONGO_URL", "AMQP_URL"} & wiring.keys():
            seen.add(name)
            assert wiring[name].rstrip("/").rsplit(":", 1)[1] in chaos_ports, (service, name)
        if "AMQP_URL" in wiring:
            assert "guest:guest" not in wiring["AMQP_URL"] and ":***@" in wiring["AMQP_URL"]
    assert seen == {"MONGO_URL", "AMQP_URL"}
    orders = requests.get(f"{control}/services/orders/wiring", timeout=10).json()
    assert orders["PAYMENTS_URL"].rsplit(":", 1)[1] in chaos_ports
    unknown = requests.get(f"{control}/services/nobody/wiring", timeout=10)
    assert unknown.status_code == 404 and "nobody" in unknown.json()["error"]
