"""A learner's path through the whole sandbox, through the gateway only, as a browser would go:
register, log in, browse, listen on Socket.IO, order, get notified, get the receipt by email —
then order again with payments cut off and watch the saga compensate and the breaker open.

Tests in this file run in order and share the learner they create (module-scoped fixtures).
"""

from __future__ import annotations

import subprocess
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


class LiveSocket:
    """A real Socket.IO client, through the gateway (long-polling), with the learner's JWT; keeps
    every notification pushed to it."""

    def __init__(self, gateway: str, token: str) -> None:
        self.received: list[dict] = []
        self.client = socketio.Client(reconnection=False)
        self.client.on("notification", self.received.append)
        self.client.connect(gateway, auth={"token": token}, transports=["polling"],
                            wait_timeout=15)

    def about(self, order_id: str) -> list[dict]:
        return [n for n in self.received if n["data"].get("order_id") == order_id]


@pytest.fixture(scope="module")
def live_notifications(gateway: str, learner: dict) -> Iterator[LiveSocket]:
    socket = LiveSocket(gateway, learner["token"])
    yield socket
    if socket.client.connected:
        socket.client.disconnect()


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

    # The browser starts the trace itself, so the last test can find this order's own trace.
    learner.update(trace_id=uuid.uuid4().hex, client_span=uuid.uuid4().hex[:16])
    traceparent = f"00-{learner['trace_id']}-{learner['client_span']}-01"
    answer = browser.call("POST", "/api/orders", headers={"traceparent": traceparent},
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

    confirmed = wait_for(lambda: [n for n in live_notifications.about(order["id"])
                                  if n["type"] == "order.confirmed"],
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


def test_offline_notifications_wait_and_mark_as_read_persists(learner, live_notifications):
    """The learner closes the tab, an order of theirs goes through, and its notifications are
    waiting, unread, when they come back."""
    browser = learner["browser"]
    live_notifications.client.disconnect()  # the learner's only socket: they are offline now
    product, _ = in_stock_product(browser, 1)
    answer = browser.call("POST", "/api/orders",
                          json={"items": [{"product_id": product["id"], "quantity": 1}]})
    assert answer.status_code == 201, answer.text
    order_id = answer.json()["id"]

    def unread_about_the_order() -> list[dict]:
        unread = browser.call("GET", "/api/notifications",
                              params={"unread": "true", "limit": 100}).json()
        return [n for n in unread["items"] if n["data"].get("order_id") == order_id]

    def all_waiting() -> list[dict] | None:
        found = unread_about_the_order()
        return found if "order.confirmed" in {n["type"] for n in found} else None

    waiting = wait_for(all_waiting, what="the offline order's notifications, stored unread")
    # By the time order.confirmed is stored, a live socket would have had order.created & co.
    assert live_notifications.about(order_id) == [], "pushed to a socket that was closed"
    assert all(n["user_id"] == learner["user"]["id"] and not n["read"] for n in waiting)

    confirmed = next(n["id"] for n in waiting if n["type"] == "order.confirmed")
    marked = browser.call("POST", f"/api/notifications/{confirmed}/read")
    assert marked.status_code == 200 and marked.json()["read"] is True
    assert confirmed not in [n["id"] for n in unread_about_the_order()]
    everything = browser.call("GET", "/api/notifications", params={"limit": 100}).json()
    [stored] = [n for n in everything["items"] if n["id"] == confirmed]
    assert stored["read"] is True and stored["read_at"]
    # ...and only that one: the order's other notifications are still waiting.
    still_unread = {n["id"] for n in unread_about_the_order()}
    assert {n["id"] for n in waiting} - {confirmed} <= still_unread


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

        def payments_breaker() -> dict:
            return requests.get(f"{sandbox.urls['orders']}/admin/breakers", timeout=10,
                                headers=admin.session.headers).json()["payments"]

        before = payments_breaker()
        assert before["state"] == "open"
        fast = browser.call("POST", "/api/orders", json=order_request)
        assert fast.status_code == 503 and "circuit" in fast.json()["error"]["message"]
        after = payments_breaker()  # fast: refused by the breaker, payments not even tried
        assert after["rejected"] > before["rejected"] and after["calls"] == before["calls"]
        # ...and the gateway did not blame orders: its own breaker stays closed.
        gateway_breakers = admin.call("GET", "/api/admin/breakers").json()
        assert gateway_breakers["orders"]["state"] == "closed"
    finally:
        subprocess.run(sandbox.command("chaos", "reset"), capture_output=True)
    stock_after = browser.call("GET", f"/api/inventory/{product['id']}").json()
    assert stock_after["available"] == stock_before["available"]


def test_the_order_left_one_trace_across_the_services_it_touched(sandbox, learner):
    from patterns.tracing import load_spans, span_tree, waterfall

    trace_file = sandbox.run_dir.path / "traces.jsonl"

    def whole_order_trace() -> list | None:
        spans = [span for span in load_spans(trace_file)
                 if span["trace_id"] == learner["trace_id"]]
        services = {span["service"] for span in spans}
        roots = [span for depth, span in span_tree(spans) if depth == 0]
        # One tree: every span hangs from the gateway's, and that one from the browser's call.
        if {"gateway", "orders", "inventory", "payments"} <= services and len(roots) == 1:
            return spans
        return None

    spans = wait_for(whole_order_trace, what=f"trace {learner['trace_id']} of the order to reach "
                                             "gateway, orders, inventory and payments as one tree")
    [root] = [span for depth, span in span_tree(spans) if depth == 0]
    assert root["service"] == "gateway" and root["parent_id"] == learner["client_span"]
    drawing = waterfall(spans)
    assert drawing.startswith(f"trace {learner['trace_id']}")
    assert "orders" in drawing and "payments" in drawing
