"""The payments service in-process, on the embedded MongoDB and the real RabbitMQ: charges and
refunds happen once per Idempotency-Key, a down provider stores nothing, events go out."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from pymongo import MongoClient

from patterns.bus import Bus
from services.payments.app import create_app
from services.payments.domain import DEFAULT_PROVIDERS
from services.payments.store import ProviderStore
from tests.helpers import EventRecorder, relayed


@pytest.fixture
def app(make_settings, build_app):
    return build_app(create_app, make_settings("payments"))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def tokens(app):
    kit = app.extensions["kit"]

    def bearer(subject: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {kit.tokens.issue(subject, roles=roles)}"}

    return bearer


@pytest.fixture
def admin(tokens):
    return tokens("svc:orders", "admin")


@pytest.fixture
def bus(app, amqp_url) -> Iterator[Bus]:
    bus = Bus(amqp_url, namespace=app.extensions["kit"].settings.bus_namespace)
    yield bus
    bus.close()


@pytest.fixture
def payment_events(bus) -> Iterator[EventRecorder]:
    events = EventRecorder()
    with bus.consumer(f"test.payments.{uuid.uuid4().hex[:8]}", events, ("payments", "payment.*")):
        yield events


@pytest.fixture
def all_events_in(app, bus, payment_events) -> Callable[[], None]:
    """`all_events_in()` returns once every event payments has written is in payment_events."""
    return lambda: payment_events.settle(bus, "payments", "payment.marker",
                                         relayed=relayed(app.extensions["kit"].db, "payments"))


def charge(client, headers, key, **body):
    body = {"order_id": "ord_1", "user_id": "usr_1", "amount_cents": 2500, **body}
    return client.post("/api/v1/payments/charges", json=body,
                       headers={**headers, "Idempotency-Key": key})


def set_provider(client, admin, name, **changes):
    response = client.put(f"/api/v1/payments/providers/{name}", json=changes, headers=admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_two_charges_with_one_key_make_one_payment_and_one_event(client, admin, payment_events,
                                                                 all_events_in):
    first = charge(client, admin, "k-1")
    second = charge(client, admin, "k-1")

    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json()
    payment = first.get_json()
    assert payment["id"].startswith("pay_") and payment["status"] == "captured"
    assert payment["provider"] == "stripe-sim" and payment["amount_cents"] == 2500
    listed = client.get("/api/v1/payments?order_id=ord_1", headers=admin).get_json()
    assert listed["total"] == 1 and [p["id"] for p in listed["items"]] == [payment["id"]]

    all_events_in()
    messages = payment_events.messages
    assert [m.routing_key for m in messages] == ["payment.captured"]
    assert messages[0].body["payment_id"] == payment["id"]
    assert messages[0].body["amount_cents"] == 2500 and "occurred_at" in messages[0].body


def test_the_same_key_with_another_body_is_a_conflict(client, admin):
    assert charge(client, admin, "k-2").status_code == 201
    reused = charge(client, admin, "k-2", amount_cents=9999)
    assert reused.status_code == 409
    assert reused.get_json()["error"]["code"] == "idempotency_key_reused"


def test_a_charge_needs_an_idempotency_key_and_a_valid_body(client, admin):
    missing = client.post("/api/v1/payments/charges", headers=admin, json={
        "order_id": "o", "user_id": "u", "amount_cents": 1})
    assert missing.status_code == 400 and "Idempotency-Key" in missing.get_json()["error"]["message"]
    bad = charge(client, admin, "k-3", amount_cents=-5, provider="cash")
    assert bad.status_code == 400
    assert {f["field"] for f in bad.get_json()["error"]["fields"]} == {"amount_cents", "provider"}
    assert client.get("/api/v1/payments?order_id=o", headers=admin).get_json()["total"] == 0


def test_a_provider_that_is_down_is_503_and_nothing_is_captured(client, admin, payment_events,
                                                                 all_events_in):
    set_provider(client, admin, "paypal-sim", down=True)
    down = charge(client, admin, "k-4", provider="paypal-sim", order_id="ord_down")
    assert down.status_code == 503
    assert down.get_json()["error"]["code"] == "provider_unavailable"
    assert client.get("/api/v1/payments?order_id=ord_down", headers=admin).get_json()["total"] == 0

    set_provider(client, admin, "paypal-sim", down=False)  # back up: the same key tries again
    retried = charge(client, admin, "k-4", provider="paypal-sim", order_id="ord_down")
    assert retried.status_code == 201 and retried.get_json()["provider"] == "paypal-sim"
    all_events_in()  # the down attempt announced nothing
    assert [m.routing_key for m in payment_events.messages] == ["payment.captured"]


def test_a_declined_charge_is_402_stored_as_failed_and_repeats_as_402(
        client, admin, payment_events):
    set_provider(client, admin, "stripe-sim", failure_rate=1.0)
    declined = charge(client, admin, "k-5", order_id="ord_declined")
    assert declined.status_code == 402
    error = declined.get_json()["error"]
    assert error["code"] == "payment_declined"
    again = charge(client, admin, "k-5", order_id="ord_declined")
    assert again.status_code == 402 and again.get_json() == declined.get_json()

    stored = client.get(f"/api/v1/payments/{error['payment_id']}", headers=admin).get_json()
    assert stored["status"] == "failed" and "declined" in stored["reason"]
    messages = payment_events.wait_for(lambda message: True)
    assert messages[0].routing_key == "payment.failed"
    assert messages[0].body["reason"] and messages[0].body["order_id"] == "ord_declined"


def test_a_payment_is_refunded_once(client, admin, payment_events, all_events_in):
    payment = charge(client, admin, "k-6").get_json()
    refund = f"/api/v1/payments/{payment['id']}/refund"

    assert client.post(refund, headers=admin).status_code == 400  # no key
    first = client.post(refund, headers={**admin, "Idempotency-Key": "r-6"})
    repeat = client.post(refund, headers={**admin, "Idempotency-Key": "r-6"})
    other_key = client.post(refund, headers={**admin, "Idempotency-Key": "r-6b"})

    assert first.status_code == repeat.status_code == 200
    assert first.get_json() == repeat.get_json()
    assert first.get_json()["status"] == "refunded" and first.get_json()["refunded_at"]
    assert other_key.status_code == 409
    assert other_key.get_json()["error"]["code"] == "not_refundable"
    stored = client.get(f"/api/v1/payments/{payment['id']}", headers=admin).get_json()
    assert stored["status"] == "refunded" and stored["refunded_at"] == first.get_json()["refunded_at"]
    all_events_in()
    assert [m.routing_key for m in payment_events.messages] == [
        "payment.captured", "payment.refunded"]


def test_a_failed_payment_cannot_be_refunded_and_a_refund_key_cannot_be_reused(client, admin):
    set_provider(client, admin, "stripe-sim", failure_rate=1.0)
    failed_id = charge(client, admin, "k-7").get_json()["error"]["payment_id"]
    refused = client.post(f"/api/v1/payments/{failed_id}/refund",
                          headers={**admin, "Idempotency-Key": "r-7"})
    assert refused.status_code == 409

    set_provider(client, admin, "stripe-sim", failure_rate=0.0)
    one = charge(client, admin, "k-8", order_id="ord_8").get_json()
    two = charge(client, admin, "k-9", order_id="ord_9").get_json()
    assert client.post(f"/api/v1/payments/{one['id']}/refund",
                       headers={**admin, "Idempotency-Key": "r-8"}).status_code == 200
    reused = client.post(f"/api/v1/payments/{two['id']}/refund",
                         headers={**admin, "Idempotency-Key": "r-8"})
    assert reused.status_code == 409
    assert client.get(f"/api/v1/payments/{two['id']}", headers=admin).get_json()["status"] == \
        "captured"


def test_customers_see_and_pay_only_their_own(client, tokens):
    alice, bob = tokens("usr_alice"), tokens("usr_bob")
    assert charge(client, alice, "k-10", user_id="usr_bob").status_code == 403
    payment = charge(client, alice, "k-11", user_id="usr_alice").get_json()

    assert client.get(f"/api/v1/payments/{payment['id']}", headers=alice).status_code == 200
    assert client.get(f"/api/v1/payments/{payment['id']}", headers=bob).status_code == 404
    assert client.post(f"/api/v1/payments/{payment['id']}/refund",
                       headers={**bob, "Idempotency-Key": "r-11"}).status_code == 404
    assert client.get("/api/v1/payments", headers=bob).get_json()["total"] == 0
    assert client.get("/api/v1/payments", headers=alice).get_json()["total"] == 1
    assert client.get("/api/v1/payments").status_code == 401


def test_providers_are_listed_and_only_admins_change_them(client, admin, tokens):
    names = [p["name"] for p in client.get("/api/v1/payments/providers").get_json()["items"]]
    assert names == ["paypal-sim", "stripe-sim"]
    customer = tokens("usr_1")
    assert client.put("/api/v1/payments/providers/stripe-sim", json={"down": True},
                      headers=customer).status_code == 403
    assert client.put("/api/v1/payments/providers/nope", json={"down": True},
                      headers=admin).status_code == 404
    assert client.put("/api/v1/payments/providers/stripe-sim", json={"failure_rate": 2},
                      headers=admin).status_code == 400
    changed = set_provider(client, admin, "stripe-sim", down=True, latency_ms=0)
    assert changed == {"name": "stripe-sim", "failure_rate": 0.0, "latency_ms": 0, "down": True}
    listed = {p["name"]: p for p in client.get("/api/v1/payments/providers").get_json()["items"]}
    assert listed["stripe-sim"]["down"] is True


def test_the_seed_makes_declines_reproducible(make_settings, build_app, monkeypatch):
    def outcomes() -> list[int]:
        app = build_app(create_app, make_settings("payments"))
        client = app.test_client()
        token = app.extensions["kit"].tokens.issue("svc", roles=["admin"])
        admin = {"Authorization": f"Bearer {token}"}
        set_provider(client, admin, "stripe-sim", failure_rate=0.5, latency_ms=0)
        return [charge(client, admin, f"seeded-{n}", order_id=f"o-{n}").status_code
                for n in range(12)]

    monkeypatch.setenv("PAYMENTS_SEED", "42")
    first = outcomes()
    assert first == outcomes()
    assert set(first) == {201, 402}


def test_provider_settings_are_read_once_a_second_and_a_change_here_shows_at_once(mongo_url):
    collection = MongoClient(mongo_url)[f"providers_{uuid.uuid4().hex[:8]}"]["providers"]
    moment = [100.0]
    providers = ProviderStore(collection, DEFAULT_PROVIDERS, clock=lambda: moment[0])
    assert providers.get("stripe-sim").failure_rate == 0.0
    # Another replica changes it in the database: seen once the kept copy is a second old.
    collection.update_one({"_id": "stripe-sim"}, {"$set": {"failure_rate": 0.5}})
    assert providers.get("stripe-sim").failure_rate == 0.0
    moment[0] += 1.0
    assert providers.get("stripe-sim").failure_rate == 0.5
    # A change made through this store: seen by the next charge.
    providers.save(providers.get("stripe-sim").with_changes({"down": True}))
    assert providers.get("stripe-sim").down
