"""The email service in-process: real events on the real RabbitMQ become stored emails, once
each, addressed through a real users service; and the API shows each reader what they may see.

Each test gets its own bus namespace (inside the session's), so the `email.events` queue of one
test never hands its messages to the next test's app.
"""

from __future__ import annotations

import functools
import socket
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from patterns.bus import Bus
from services.email.app import create_app
from services.users.app import create_app as create_users_app
from tests.helpers import wait_for

NOWHERE = "http://127.0.0.1:9"  # a users URL for tests whose events carry the address


@pytest.fixture
def namespace(bus_namespace: str) -> str:
    return f"{bus_namespace}.email-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bus(amqp_url: str, namespace: str) -> Iterator[Bus]:
    bus = Bus(amqp_url, namespace=namespace)
    yield bus
    bus.close()


@pytest.fixture
def start_email(build_app, make_settings, namespace) -> Callable[..., Flask]:
    def start(users_url: str = NOWHERE) -> Flask:
        return build_app(create_app, make_settings("email", peers={"users": users_url},
                                                   bus_namespace=namespace))
    return start


@pytest.fixture
def users_app(build_app, make_settings, namespace) -> Flask:
    return build_app(functools.partial(create_users_app, env={}),
                     make_settings("users", bus_namespace=namespace))


def headers(app: Flask, subject: str, *roles: str, email: str | None = None) -> dict[str, str]:
    claims = {"email": email} if email else {}
    token = app.extensions["kit"].tokens.issue(subject, roles=roles, **claims)
    return {"Authorization": f"Bearer {token}"}


def admin(app: Flask) -> dict[str, str]:
    return headers(app, "usr_admin", "customer", "admin", email="admin@microlab.local")


def emails_to(app: Flask, address: str) -> list[dict]:
    response = app.test_client().get("/api/v1/emails", query_string={"to": address},
                                     headers=admin(app))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def register(users_app: Flask, email: str, name: str = "Ann") -> dict:
    response = users_app.test_client().post("/api/v1/users/register", json={
        "email": email, "password": "correct horse", "name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def welcome(bus: Bus, email: str, *, message_id: str | None = None) -> str:
    return bus.publish("users", "user.registered", {
        "user_id": f"usr_{uuid.uuid4().hex[:12]}", "email": email, "name": "Ann",
        "occurred_at": "2026-01-01T00:00:00.000Z"}, message_id=message_id)


def address() -> str:
    return f"ann-{uuid.uuid4().hex[:8]}@example.org"


# -- events become emails -------------------------------------------------------------------

def test_a_registration_on_users_sends_a_welcome_email(start_email, users_app, serve_app):
    email_app = start_email(serve_app(users_app))
    user = register(users_app, "Zoe@Example.org", name="Zoe")

    [email] = wait_for(lambda: emails_to(email_app, "zoe@example.org"))
    assert email["subject"] == "Welcome to Microlab Shop"
    assert email["event_type"] == "user.registered"
    assert email["body"].startswith("Hello Zoe,")
    assert email["related"] == {"user_id": user["id"]}
    assert email["id"].startswith("eml_")


def test_a_password_change_sends_a_security_notice(start_email, users_app):
    email_app = start_email()
    user = register(users_app, "yan@example.org")
    client = users_app.test_client()
    token = client.post("/api/v1/users/login", json={
        "email": "yan@example.org", "password": "correct horse"}).get_json()["token"]
    changed = client.post("/api/v1/users/me/password", headers={"Authorization": f"Bearer {token}"},
                          json={"current_password": "correct horse",
                                "new_password": "battery staple"})
    assert changed.status_code == 200

    emails = wait_for(lambda: [e for e in emails_to(email_app, "yan@example.org")
                               if e["event_type"] == "user.password_changed"])
    assert emails[0]["subject"] == "Your password was changed"
    assert emails[0]["related"] == {"user_id": user["id"]}
    assert "battery" not in emails[0]["body"]


@pytest.mark.parametrize("routing_key, exchange, facts, subject", [
    ("order.confirmed", "orders", {"total_cents": 4599}, "Receipt for order ord_"),
    ("order.cancelled", "orders", {"reason": "payment declined"}, "Order ord_"),
    ("payment.refunded", "payments", {"payment_id": "pay_1", "amount_cents": 4599},
     "Refund of $45.99 for order ord_"),
])
def test_order_and_payment_emails_are_addressed_through_users(
        start_email, users_app, serve_app, bus, routing_key, exchange, facts, subject):
    email_app = start_email(serve_app(users_app))
    user = register(users_app, address(), name="Bea")
    order_id = f"ord_{uuid.uuid4().hex[:12]}"
    bus.publish(exchange, routing_key, {"order_id": order_id, "user_id": user["id"], **facts})

    [email] = wait_for(lambda: [e for e in emails_to(email_app, user["email"])
                                if e["event_type"] == routing_key])  # besides the welcome
    assert email["subject"].startswith(subject)
    assert email["body"].startswith("Hello Bea,")
    assert email["related"]["order_id"] == order_id
    assert email["related"]["user_id"] == user["id"]


def test_a_redelivered_event_stores_one_email(start_email, bus):
    email_app = start_email()
    to = address()
    message_id = uuid.uuid4().hex
    welcome(bus, to, message_id=message_id)
    welcome(bus, to, message_id=message_id)  # the same event again, as a redelivery would
    marker = address()
    welcome(bus, marker)  # the queue is handled in order: once this is in, so are the two above

    wait_for(lambda: emails_to(email_app, marker))
    emails = emails_to(email_app, to)
    assert len(emails) == 1 and emails[0]["message_id"] == message_id


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_email_waits_out_a_users_outage(start_email, users_app, bus):
    """users is down when the order is confirmed: the receipt goes out once it is back."""
    port = free_port()
    email_app = start_email(f"http://127.0.0.1:{port}")
    user = register(users_app, address())
    bus.publish("orders", "order.confirmed", {
        "order_id": "ord_outage", "user_id": user["id"], "total_cents": 100})

    breaker = email_app.extensions["kit"].breakers.get("users")
    def receipts() -> list[dict]:
        return [email for email in emails_to(email_app, user["email"])
                if email["event_type"] == "order.confirmed"]

    wait_for(lambda: breaker.snapshot()["failures"] > 0)  # the lookup failed at least once
    assert receipts() == []

    server = make_server("127.0.0.1", port, users_app, threaded=True)  # users comes back
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        [receipt] = wait_for(receipts, timeout=45)
        assert receipt["related"]["order_id"] == "ord_outage"
    finally:
        server.shutdown()
        server.server_close()


# -- reading emails -------------------------------------------------------------------------

@pytest.fixture
def mailbox(start_email, bus) -> tuple[Flask, str, str]:
    """An email app holding three emails to Ann and one to Bob."""
    app = start_email()
    ann, bob = address(), address()
    for to in (ann, ann, ann, bob):
        welcome(bus, to)
    wait_for(lambda: len(emails_to(app, ann)) == 3 and emails_to(app, bob))
    return app, ann, bob


def test_an_admin_sees_everyone_and_pages_newest_first(mailbox):
    app, ann, bob = mailbox
    client = app.test_client()
    everything = client.get("/api/v1/emails", headers=admin(app)).get_json()
    assert everything["total"] == 4 and everything["page"] == 1 and everything["limit"] == 20
    assert {email["to"] for email in everything["items"]} == {ann, bob}
    created = [email["created_at"] for email in everything["items"]]
    assert created == sorted(created, reverse=True)

    second = client.get("/api/v1/emails", query_string={"to": ann.upper(), "page": 2, "limit": 2},
                        headers=admin(app)).get_json()
    assert (second["total"], second["page"], second["limit"]) == (3, 2, 2)
    assert len(second["items"]) == 1 and second["items"][0]["to"] == ann


def test_a_customer_sees_only_their_own_emails(mailbox):
    app, ann, bob = mailbox
    client = app.test_client()
    as_ann = headers(app, "usr_ann", "customer", email=ann)
    mine = client.get("/api/v1/emails", headers=as_ann).get_json()
    assert mine["total"] == 3 and {email["to"] for email in mine["items"]} == {ann}
    assert client.get("/api/v1/emails", query_string={"to": bob},
                      headers=as_ann).status_code == 403

    email_id = mine["items"][0]["id"]
    assert client.get(f"/api/v1/emails/{email_id}", headers=as_ann).get_json()["to"] == ann
    as_bob = headers(app, "usr_bob", "customer", email=bob)
    assert client.get(f"/api/v1/emails/{email_id}", headers=as_bob).status_code == 403
    assert client.get(f"/api/v1/emails/{email_id}", headers=admin(app)).status_code == 200


def test_reading_needs_a_token_and_an_existing_email(mailbox):
    app, _, _ = mailbox
    client = app.test_client()
    assert client.get("/api/v1/emails").status_code == 401
    assert client.get("/api/v1/emails/eml_000000000000", headers=admin(app)).status_code == 404
    assert client.get("/api/v1/emails", query_string={"limit": 0},
                      headers=admin(app)).status_code == 400
