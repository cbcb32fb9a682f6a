"""Notifications against real infrastructure: events published on the real RabbitMQ, stored in
the embedded MongoDB, pushed to a real python-socketio client over a real server.

In-process tests serve the app with werkzeug (the `serve_app` fixture), which serves both
Socket.IO transports: WebSocket (werkzeug hands the raw socket to simple-websocket) and
long-polling. One test runs `python -m services.notifications` under gunicorn gthread, as the
sandbox does.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
import socketio

from microlab.processes import ROOT
from microlab.topology import free_ports
from patterns.auth import Tokens, secret_from_env
from patterns.bus import Bus
from patterns.service import TOKEN_AUDIENCE, TOKEN_ISSUER
from services.notifications.app import create_app

WAIT = 15.0  # seconds to wait for an event to go through the broker (a loaded machine is slow)


def new_user() -> str:
    return f"usr_{uuid.uuid4().hex[:12]}"


def new_order() -> str:
    return f"ord_{uuid.uuid4().hex[:12]}"


def confirmed(user_id: str, order_id: str | None = None) -> dict[str, Any]:
    return {"order_id": order_id or new_order(), "user_id": user_id, "total_cents": 4250,
            "occurred_at": "2026-11-25T10:00:00+00:00"}


class Listener:
    """A real Socket.IO client that keeps every `notification` it receives."""

    def __init__(self) -> None:
        self.client = socketio.Client(reconnection=False)
        self.received: queue.Queue[dict] = queue.Queue()
        self.client.on("notification", self.received.put)

    def next(self, timeout: float = WAIT) -> dict:
        return self.received.get(timeout=timeout)

    def nothing_else(self) -> bool:
        return self.received.empty()


@contextmanager
def listening(url: str, token: str, transport: str = "websocket") -> Iterator[Listener]:
    listener = Listener()
    listener.client.connect(url, auth={"token": token}, transports=[transport],
                            wait_timeout=WAIT)
    try:
        yield listener
    finally:
        listener.client.disconnect()


def refusal(url: str, **connect: Any) -> str:
    """The message the server gives when it refuses a connection."""
    client = socketio.Client(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(url, transports=["websocket"], wait_timeout=WAIT, **connect)
    client.disconnect()
    assert errors, "refused without a connect_error"
    return errors[0]["message"]


def eventually(probe: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


@pytest.fixture
def settings(make_settings):
    return make_settings("notifications")


@pytest.fixture
def app(build_app, settings):
    return build_app(create_app, settings)


@pytest.fixture
def url(app, serve_app) -> str:
    return serve_app(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def token(app) -> Callable[..., str]:
    def issue(user_id: str, *roles: str, **options: Any) -> str:
        return app.extensions["kit"].tokens.issue(user_id, roles=["customer", *roles], **options)

    return issue


@pytest.fixture
def publish(amqp_url, settings) -> Iterator[Callable[..., str]]:
    """Publish an event on the real bus, in the test's namespace; returns its message id."""
    bus = Bus(amqp_url, namespace=settings.bus_namespace)

    def send(exchange: str, routing_key: str, body: Any, message_id: str | None = None) -> str:
        return bus.publish(exchange, routing_key, body, message_id=message_id)

    yield send
    bus.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def inbox(client, token: str, **query: Any) -> dict:
    response = client.get("/api/v1/notifications", headers=auth(token), query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def wait_for_inbox(client, token: str, count: int, **query: Any) -> dict:
    body = eventually(lambda: len((page := inbox(client, token, **query))["items"]) >= count
                      and page)
    assert body, f"fewer than {count} notifications after {WAIT}s"
    return body


# -- live pushes -------------------------------------------------------------------------------

def test_a_connected_user_receives_an_event_as_it_happens(url, client, token, publish):
    user = new_user()
    order_id = new_order()
    with listening(url, token(user)) as listener:
        publish("orders", "order.confirmed", confirmed(user, order_id))
        pushed = listener.next()
    assert pushed["user_id"] == user and pushed["type"] == "order.confirmed"
    assert pushed["title"] == "Order confirmed"
    assert pushed["message"] == f"Your order {order_id} of 42.50 is confirmed."
    assert pushed["data"] == {"order_id": order_id, "user_id": user}
    assert pushed["read"] is False and pushed["id"].startswith("ntf_")
    assert inbox(client, token(user))["items"] == [pushed]  # what was pushed is what is stored


def test_long_polling_and_a_token_in_the_query_work_too(url, token, publish):
    user = new_user()
    listener = Listener()
    listener.client.connect(f"{url}?token={token(user)}", transports=["polling"],
                            wait_timeout=WAIT)
    try:
        publish("payments", "payment.captured", {
            "payment_id": "pay_1", "order_id": "ord_1", "user_id": user, "amount_cents": 999,
            "provider": "stripe"})
        assert listener.next()["message"] == "We received 9.99 for order ord_1."
    finally:
        listener.client.disconnect()


@pytest.mark.parametrize("credentials, reason", [
    ({}, "a token is required"),
    ({"auth": {"token": "not-a-jwt"}}, "invalid token"),
    ({"auth": {"token": Tokens("another-secret-that-is-long-enough-for-hs256",
                               issuer=TOKEN_ISSUER, audience=TOKEN_AUDIENCE).issue("usr_x")}},
     "invalid token"),
])
def test_a_missing_or_forged_token_is_refused(url, credentials, reason):
    assert reason in refusal(url, **credentials)


def test_an_expired_token_is_refused(url, token):
    assert "expired" in refusal(url, auth={"token": token(new_user(), ttl=-60)})


def test_a_user_never_receives_another_users_notification(url, token, publish):
    alice, bob = new_user(), new_user()
    with listening(url, token(alice)) as for_alice, listening(url, token(bob)) as for_bob:
        publish("orders", "order.confirmed", confirmed(alice))
        # Bob's own event comes after Alice's on the same queue: once it arrives, hers was
        # handled too, and it did not reach Bob.
        publish("orders", "order.cancelled", {"order_id": "ord_b", "user_id": bob,
                                              "reason": "changed my mind"})
        assert for_bob.next()["type"] == "order.cancelled"
        assert for_alice.next()["user_id"] == alice
    assert for_bob.nothing_else() and for_alice.nothing_else()


def test_admin_alerts_reach_admins_and_no_customer(url, client, token, publish):
    admin, customer = new_user(), new_user()
    product_id = f"prd_{uuid.uuid4().hex[:12]}"
    with listening(url, token(admin, "admin")) as for_admin, \
            listening(url, token(customer)) as for_customer:
        publish("inventory", "stock.low", {"product_id": product_id, "available": 1,
                                           "threshold": 5})
        publish("orders", "order.created", confirmed(customer))  # after the alert, for her
        assert for_customer.next()["type"] == "order.created"
        # Other tests' products may alert the admins too: look for this product's alert.
        alert = eventually(lambda: (n := for_admin.next())["data"].get("product_id")
                           == product_id and n)
    assert alert["user_id"] is None and alert["message"].startswith("Only 1 left")
    assert for_customer.nothing_else()
    admin_view = inbox(client, token(admin, "admin"))["items"]
    assert alert["id"] in [item["id"] for item in admin_view]
    assert alert["id"] not in [item["id"] for item in inbox(client, token(customer))["items"]]


def test_a_redelivered_event_is_stored_once_and_pushed_once(url, client, token, publish):
    user = new_user()
    event = confirmed(user)
    with listening(url, token(user)) as listener:
        message_id = publish("orders", "order.confirmed", event)
        publish("orders", "order.confirmed", event, message_id=message_id)  # the duplicate
        publish("orders", "order.status_changed", {"order_id": event["order_id"],
                                                   "user_id": user, "from": "confirmed",
                                                   "to": "shipped"})
        pushes = [listener.next(), listener.next()]
    # The status change follows the duplicate on the queue, so the duplicate was handled.
    assert [push["type"] for push in pushes] == ["order.confirmed", "order.status_changed"]
    assert listener.nothing_else()
    stored = wait_for_inbox(client, token(user), 2)
    assert stored["total"] == 2
    assert sorted(item["type"] for item in stored["items"]) == [
        "order.confirmed", "order.status_changed"]


# -- offline fallback and read state -----------------------------------------------------------

def test_an_offline_user_finds_the_notification_later_unread(client, token, publish):
    user = new_user()
    publish("users", "user.registered", {"user_id": user, "email": "ada@example.com",
                                         "name": "Ada"})
    page = wait_for_inbox(client, token(user), 1)
    assert page["total"] == 1 and page["page"] == 1 and page["limit"] == 20
    [welcome] = page["items"]
    assert welcome["type"] == "user.registered" and welcome["read"] is False
    assert welcome["message"].startswith("Hi Ada")
    assert inbox(client, token(user), unread="true")["total"] == 1


def test_newest_first_with_pages_and_an_unread_filter(client, token, publish):
    user = new_user()
    for count, order_id in enumerate(["ord_first", "ord_second", "ord_third"], start=1):
        publish("orders", "order.created", confirmed(user, order_id))
        wait_for_inbox(client, token(user), count)
    first_page = inbox(client, token(user), limit=2)
    assert [item["data"]["order_id"] for item in first_page["items"]] == [
        "ord_third", "ord_second"]
    assert first_page["total"] == 3
    second_page = inbox(client, token(user), limit=2, page=2)
    assert [item["data"]["order_id"] for item in second_page["items"]] == ["ord_first"]

    newest = first_page["items"][0]["id"]
    assert client.post(f"/api/v1/notifications/{newest}/read",
                       headers=auth(token(user))).status_code == 200
    unread = inbox(client, token(user), unread="true")
    assert unread["total"] == 2 and newest not in [item["id"] for item in unread["items"]]


def test_mark_read_is_idempotent_and_only_for_the_recipient(client, token, publish):
    owner, stranger = new_user(), new_user()
    publish("orders", "order.confirmed", confirmed(owner))
    [notification] = wait_for_inbox(client, token(owner), 1)["items"]
    read_url = f"/api/v1/notifications/{notification['id']}/read"

    refused = client.post(read_url, headers=auth(token(stranger)))
    assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "not_found"
    assert client.post("/api/v1/notifications/ntf_000000000000/read",
                       headers=auth(token(owner))).status_code == 404
    assert client.post(read_url).status_code == 401

    first = client.post(read_url, headers=auth(token(owner))).get_json()
    again = client.post(read_url, headers=auth(token(owner))).get_json()
    assert first["read"] is True and first["read_at"] is not None
    assert again == first  # nothing changed the second time


def test_read_all_marks_every_unread_one_and_says_how_many(client, token, publish):
    user, other = new_user(), new_user()
    publish("orders", "order.confirmed", confirmed(user))
    publish("orders", "order.confirmed", confirmed(user))
    publish("orders", "order.confirmed", confirmed(other))
    wait_for_inbox(client, token(user), 2)
    wait_for_inbox(client, token(other), 1)
    response = client.post("/api/v1/notifications/read-all", headers=auth(token(user)))
    assert response.status_code == 200 and response.get_json() == {"updated": 2}
    assert client.post("/api/v1/notifications/read-all",
                       headers=auth(token(user))).get_json() == {"updated": 0}
    assert inbox(client, token(user), unread="true")["total"] == 0
    assert inbox(client, token(other), unread="true")["total"] == 1


def test_read_marks_survive_a_new_app_instance_on_the_same_database(
        build_app, settings, client, token, publish):
    user = new_user()
    publish("orders", "order.confirmed", confirmed(user))
    publish("orders", "order.confirmed", confirmed(user))
    publish("orders", "order.confirmed", confirmed(user))
    first, second, third = wait_for_inbox(client, token(user), 3)["items"]
    client.post(f"/api/v1/notifications/{first['id']}/read", headers=auth(token(user)))

    restarted = build_app(create_app, settings).test_client()
    after = {item["id"]: item["read"] for item in inbox(restarted, token(user))["items"]}
    assert after == {first["id"]: True, second["id"]: False, third["id"]: False}
    assert restarted.post("/api/v1/notifications/read-all",
                          headers=auth(token(user))).get_json() == {"updated": 2}
    assert [item["read"] for item in inbox(client, token(user))["items"]] == [True, True, True]


def test_mark_read_over_the_socket_is_acknowledged_with_the_result(url, client, token, publish):
    user, stranger = new_user(), new_user()
    with listening(url, token(user)) as listener:
        publish("orders", "order.confirmed", confirmed(user))
        pushed = listener.next()
        ack = listener.client.call("mark_read", {"id": pushed["id"]}, timeout=WAIT)
        assert ack["id"] == pushed["id"] and ack["read"] is True
        bad = listener.client.call("mark_read", {"nope": 1}, timeout=WAIT)
        assert bad["error"]["code"] == "bad_request"
        missing = listener.client.call("mark_read", {"id": "ntf_000000000000"}, timeout=WAIT)
        assert missing["error"]["code"] == "not_found"
    assert inbox(client, token(user))["items"][0]["read"] is True
    with listening(url, token(stranger)) as intruder:
        refused = intruder.client.call("mark_read", {"id": pushed["id"]}, timeout=WAIT)
        assert refused["error"]["code"] == "not_found"


# -- capacity and health -----------------------------------------------------------------------

def test_sockets_beyond_the_thread_budget_are_refused_until_one_leaves(
        build_app, make_settings, serve_app, token):
    app = build_app(create_app, make_settings("notifications", threads=5))  # one socket
    url = serve_app(app)
    live = app.extensions["notifications.live"]
    with listening(url, token(new_user())):
        assert live.connected == 1
        assert "limit of 1 live connections" in refusal(url, auth={"token": token(new_user())})
    assert eventually(lambda: live.connected == 0)
    with listening(url, token(new_user())):
        assert live.connected == 1


def test_health_reports_the_database_and_the_consumer(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"mongo": {"status": "ok"},
                                             "consumers": {"status": "ok"}}


# -- as the sandbox runs it --------------------------------------------------------------------

@pytest.mark.slow
def test_the_service_runs_under_gunicorn_gthread(settings, publish, tmp_path):
    port = free_ports(1)[0]
    env = {**os.environ, "PORT": str(port), "MONGO_URL": settings.mongo_url,
           "MONGO_DB": settings.mongo_db, "AMQP_URL": settings.amqp_url,
           "BUS_NAMESPACE": settings.bus_namespace, "THREADS": "8"}
    log = (tmp_path / "notifications.log").open("w")
    service = subprocess.Popen([sys.executable, "-m", "services.notifications"], cwd=ROOT,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    tokens = Tokens(secret_from_env(), issuer=TOKEN_ISSUER, audience=TOKEN_AUDIENCE)
    user = new_user()
    try:
        def healthy() -> bool:
            try:
                return requests.get(f"{url}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        assert eventually(healthy, timeout=60), (tmp_path / "notifications.log").read_text()
        for transport in ("websocket", "polling"):
            with listening(url, tokens.issue(user), transport) as listener:
                publish("orders", "order.confirmed", confirmed(user))
                assert listener.next()["user_id"] == user
        page = requests.get(f"{url}/api/v1/notifications", timeout=5,
                            headers=auth(tokens.issue(user))).json()
        assert page["total"] == 2
    finally:
        service.terminate()
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()
