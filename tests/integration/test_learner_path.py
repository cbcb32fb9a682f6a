"""A learner's path through the whole sandbox, through the gateway only, as a browser would go:
register, log in, browse, listen on Socket.IO, order, get notified, get the receipt by email —
then order again with payments cut off and watch the saga compensate and the breaker open.

Tests in this file run in order and share the learner they create (module-scoped fixtures).
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
import socketio

from microlab.launcher import SandboxProcess
from tests.helpers import wait_for

ADMIN = {"email": "admin@microlab.local", "password": "admin-password"}  # dev-mode defaults


class Browser:
    """Talks to the gateway only, carrying a bearer token once logged in."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.session = requests.Session()

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, f"{self.gateway}{path}", timeout=30, **kwargs)

    def log_in(self, email: str, password: str) -> dict:
        answer = self.call("POST", "/api/users/login", json={"email": email,
                                                            "password": password})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        self.session.headers["Authorization"] = f"Bearer {body['token']}"
        return body


@pytest.fixture(scope="module")
def gateway(sandbox: SandboxProcess) -> str:
    return sandbox.urls["gateway"]


@pytest.fixture(scope="module")
def learner(gateway: str) -> dict:
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    browser = Browser(gateway)
    answer = browser.call("POST", "/api/users/register",
                          json={"email": email, "password": "correct-horse-battery",
                                "name": "Ada"})
    assert answer.status_code == 201, answer.text
    user = answer.json()
    assert "correct-horse-battery" not in answer.text and "scrypt" not in answer.text
    assert not {"password", "password_hash"} & set(user)
    login = browser.log_in(email, "correct-horse-battery")
    return {"browser": browser, "user": user, "email": email, "token": login["token"]}


@pytest.fixture(scope="module")
def admin(gateway: str) -> Browser:
    browser = Browser(gateway)
    browser.log_in(**ADMIN)
    return browser


@pytest.fixture(scope="module")
def live_notifications(gateway: str, learner: dict) -> Iterator[list[dict]]:
    """A real Socket.IO client, through the gateway (long-polling), with the learner's JWT."""
    received: list[dict] = []
    arrived = threading.Event()
    client = socketio.Client(reconnection=False)

    @client.on("notification")
    def on_notification(notification: dict) -> None:
        received.append(notification)
        arrived.set()

    client.connect(gateway, auth={"token": learner["token"]}, transports=["polling"],
                   wait_timeout=15)
    yield received
    client.disconnect()


def test_private_routes_need_a_token_and_public_ones_do_not(gateway):
    anonymous = Browser(gateway)
    assert anonymous.call("GET", "/api/products").status_code == 200
    refused = anonymous.call("GET", "/api/orders")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_socket_without_a_valid_token_is_refused(gateway):
    client = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(gateway, auth={"token": "not-a-jwt"}, transports=["polling"],
                       wait_timeout=10)


def test_browsing_finds_the_demo_catalogue_with_search_and_filters(learner):
    browser = learner["browser"]
    page = browser.call("GET", "/api/products", params={"limit": 5}).json()
    assert page["total"] >= 5 and len(page["items"]) == 5
    books = browser.call("GET", "/api/products", params={"category": "books"}).json()
    assert books["items"] and {p["category"] for p in books["items"]} == {"books"}
    first = page["items"][0]
    term = first["name"].split()[0].lower()
    found = browser.call("GET", "/api/products", params={"q": term}).json()
    assert first["id"] in [product["id"] for product in found["items"]]
    bad = browser.call("GET", "/api/products", params={"limit": "lots"})
    assert bad.status_code == 400 and bad.json()["error"]["fields"][0]["field"] == "limit"


def in_stock_product(browser: Browser, quantity: int) -> tuple[dict, dict]:
    for product in browser.call("GET", "/api/products", params={"limit": 50}).json()["items"]:
        stock = browser.call("GET", f"/api/inventory/{product['id']}").json()
        if stock.get("available", 0) >= quantity + 10:  # stay clear of low-stock alerts
            return product, stock
    raise AssertionError("no product in stock: did the demo seed reach inventory?")


def test_placing_an_order_confirms_it_notifies_live_and_sends_a_receipt(
        learner, live_notifications, admin):
    browser = learner["browser"]
    product, stock_before = in_stock_product(browser, 2)

    answer = browser.call("POST", "/api/orders",
                          json={"items": [{"product_id": product["id"], "quantity": 2}]})
    assert answer.status_code == 201, answer.text
    order = answer.json()
    assert order["status"] == "confirmed"
    assert order["total_cents"] == 2 * product["price_cents"]

    stock = browser.call("GET", f"/api/inventory/{product['id']}").json()
    assert stock["available"] == stock_before["available"] - 2
    payments = admin.call("GET", "/api/payments", params={"order_id": order["id"]}).json()
    captured = [p for p in payments["items"] if p["status"] == "captured"]
    assert [p["amount_cents"] for p in captured] == [order["total_cents"]]

    confirmed = wait_for(lambda: [n for n in live_notifications if n["type"] == "order.confirmed"
                                  and n["data"].get("order_id") == order["id"]],
                         what="the order.confirmed notification on the socket")
    assert confirmed[0]["user_id"] == learner["user"]["id"]

    receipt = wait_for(lambda: [e for e in browser.call("GET", "/api/emails").json()["items"]
                                if e["event_type"] == "order.confirmed"
                                and e["related"].get("order_id") == order["id"]],
                       what="the receipt email")
    assert receipt[0]["to"] == learner["email"]

    dashboard = browser.call("GET", "/api/dashboard").json()
    assert dashboard["degraded"] == []
    assert order["id"] in [o["id"] for o in dashboard["orders"]]


def test_offline_notifications_wait_and_mark_as_read_persists(learner):
    browser = learner["browser"]
    unread = browser.call("GET", "/api/notifications", params={"unread": "true"}).json()
    assert unread["items"], "the order's notifications should be waiting"
    first = unread["items"][0]["id"]
    assert browser.call("POST", f"/api/notifications/{first}/read").status_code == 200
    still_unread = browser.call("GET", "/api/notifications", params={"unread": "true"}).json()
    assert first not in [n["id"] for n in still_unread["items"]]


def test_with_payments_cut_off_the_saga_compensates_and_the_breaker_opens(
        sandbox, learner, admin):
    browser = learner["browser"]
    product, stock_before = in_stock_product(browser, 1)
    order_request = {"items": [{"product_id": product["id"], "quantity": 1}]}
    cut = subprocess.run(sandbox.command("chaos", "down", "orders->payments"),
                         capture_output=True, text=True)
    assert cut.returncode == 0, cut.stderr
    try:
        failed = browser.call("POST", "/api/orders", json=order_request)
        assert failed.status_code == 503, failed.text
        error = failed.json()["error"]
        order_id = error["order_id"]

        order = browser.call("GET", f"/api/orders/{order_id}").json()
        assert order["status"] == "cancelled" and order["reason"]
        stock = browser.call("GET", f"/api/inventory/{product['id']}").json()
        assert stock["available"] == stock_before["available"]  # the reservation was released
        assert stock["reserved"] == stock_before["reserved"]
        charges = admin.call("GET", "/api/payments", params={"order_id": order_id}).json()
        assert [p for p in charges["items"] if p["status"] == "captured"] == []

        # Keep ordering: orders' breaker on payments opens, then orders fail fast.
        for _ in range(6):
            browser.call("POST", "/api/orders", json=order_request)
        orders_admin = requests.get(f"{sandbox.urls['orders']}/admin/breakers", timeout=10,
                                    headers=admin.session.headers)
        assert orders_admin.json()["payments"]["state"] == "open"
        started = time.perf_counter()
        fast = browser.call("POST", "/api/orders", json=order_request)
        assert fast.status_code == 503 and "circuit" in fast.json()["error"]["message"]
        assert time.perf_counter() - started < 1.0
        # ...and the gateway did not blame orders: its own breaker stays closed.
        gateway_breakers = admin.call("GET", "/api/admin/breakers").json()
        assert gateway_breakers["orders"]["state"] == "closed"
    finally:
        subprocess.run(sandbox.command("chaos", "reset"), capture_output=True)
    stock_after = browser.call("GET", f"/api/inventory/{product['id']}").json()
    assert stock_after["available"] == stock_before["available"]


def test_the_order_left_one_trace_across_the_services_it_touched(sandbox, learner):
    from patterns.tracing import load_spans, traces, waterfall

    trace_file = sandbox.run_dir.path / "traces.jsonl"

    def order_trace() -> list | None:
        for spans in traces(load_spans(trace_file)).values():
            services = {span["service"] for span in spans}
            if {"gateway", "orders", "inventory", "payments"} <= services:
                return spans
        return None

    spans = wait_for(order_trace, what="a trace through gateway, orders, inventory, payments")
    drawing = waterfall(spans)
    assert "orders" in drawing and "payments" in drawing
