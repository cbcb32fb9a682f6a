"""The inventory service in-process, on the embedded MongoDB and the real RabbitMQ.

Stock records are opened the way they are in the sandbox: by publishing product.created.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from patterns.bus import Bus, Message
from patterns.outbox import Outbox
from services.inventory.app import create_app
from services.inventory.store import ReservationStore, StockStore
from tests.helpers import EventRecorder, relayed, wait_for


def about(routing_key: str, **facts) -> Callable[[Message], bool]:
    return lambda m: m.routing_key == routing_key and all(
        m.body.get(name) == value for name, value in facts.items())


@pytest.fixture
def bus(amqp_url: str, bus_namespace: str) -> Iterator[Bus]:
    bus = Bus(amqp_url, namespace=bus_namespace)
    yield bus
    bus.close()


@pytest.fixture
def stock_events(bus: Bus) -> Iterator[EventRecorder]:
    recorder = EventRecorder()
    with bus.consumer(f"test.inventory.{uuid.uuid4().hex[:8]}", recorder, ("inventory", "stock.*")):
        yield recorder


@pytest.fixture
def settings(make_settings):
    return make_settings("inventory")


@pytest.fixture
def app(settings, build_app, stock_events):
    return build_app(create_app, settings)


def client_with_token(app, roles: list[str]):
    """A test client that sends a token, as the orders service (role admin) does."""
    client = app.test_client()
    token = app.extensions["kit"].tokens.issue("svc:test", roles=roles)
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def client(app):
    return client_with_token(app, ["admin"])


@pytest.fixture
def admin(app) -> dict[str, str]:
    token = app.extensions["kit"].tokens.issue("usr_admin", roles=["customer", "admin"])
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def open_stock(bus: Bus, client) -> Callable[..., str]:
    """`open_stock(available)`: a new product announced with that initial stock; its id."""

    def open_stock(available: int = 0) -> str:
        product_id = f"prd_{uuid.uuid4().hex[:12]}"
        payload = {"product_id": product_id, "name": "Widget", "price_cents": 500,
                   "category": "test", "occurred_at": "2026-11-25T00:00:00.000Z"}
        if available:
            payload["initial_stock"] = available
        bus.publish("products", "product.created", payload)
        wait_for(lambda: client.get(f"/api/v1/inventory/{product_id}").status_code == 200)
        return product_id

    return open_stock


def stock_of(client, product_id: str) -> dict:
    return client.get(f"/api/v1/inventory/{product_id}").get_json()


def reserve(client, items: list[tuple[str, int]], key: str | None = None,
            order_id: str | None = None):
    headers = {"Idempotency-Key": key or uuid.uuid4().hex}
    body = {"order_id": order_id or f"ord_{uuid.uuid4().hex[:12]}",
            "items": [{"product_id": product, "quantity": quantity}
                      for product, quantity in items]}
    return client.post("/api/v1/inventory/reservations", json=body, headers=headers)


def settle(events: EventRecorder, bus: Bus, app) -> None:
    """Every stock event inventory has written so far is in `events` (no sleeping)."""
    events.settle(bus, "inventory", "stock.marker",
                  relayed=relayed(app.extensions["kit"].db, "stock", "reservations"))


def without_request_id(body: dict) -> dict:
    return {"error": {k: v for k, v in body["error"].items() if k != "request_id"}}


# -- stock records -------------------------------------------------------------------------------

def test_product_created_opens_a_stock_record_at_zero_or_at_its_initial_stock(client, open_stock):
    new = open_stock()
    assert stock_of(client, new) == {"product_id": new, "available": 0, "reserved": 0,
                                     "sold": 0, "low_stock_threshold": 10}
    assert stock_of(client, open_stock(25))["available"] == 25


def test_a_repeated_product_created_does_not_reset_the_stock(client, bus, open_stock):
    product = open_stock(5)
    assert reserve(client, [(product, 2)]).status_code == 201
    bus.publish("products", "product.created", {"product_id": product, "initial_stock": 5})
    marker = open_stock(1)  # handled after the duplicate: same queue, in order
    assert stock_of(client, marker)["available"] == 1
    assert stock_of(client, product)["available"] == 3


def test_an_unknown_product_has_no_stock_record(client):
    response = client.get("/api/v1/inventory/prd_unknown")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_an_admin_adjusts_stock_but_never_below_zero(client, admin, open_stock):
    product = open_stock(3)
    path = f"/api/v1/inventory/{product}/adjust"
    added = client.post(path, json={"operation": "add", "quantity": 10}, headers=admin)
    assert added.status_code == 200 and added.get_json()["available"] == 13
    refused = client.post(path, json={"operation": "subtract", "quantity": 14}, headers=admin)
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "insufficient_stock"
    assert stock_of(client, product)["available"] == 13
    taken = client.post(path, json={"operation": "subtract", "quantity": 13}, headers=admin)
    assert taken.get_json()["available"] == 0


def test_adjusting_needs_an_admin_a_known_product_and_a_valid_body(
        app, client, admin, open_stock):
    product = open_stock(3)
    path = f"/api/v1/inventory/{product}/adjust"
    body = {"operation": "add", "quantity": 1}
    assert app.test_client().post(path, json=body).status_code == 401
    assert client_with_token(app, ["customer"]).post(path, json=body).status_code == 403
    assert client.post("/api/v1/inventory/prd_none/adjust", json=body,
                       headers=admin).status_code == 404
    for bad in ({"operation": "multiply", "quantity": 1}, {"operation": "add", "quantity": 0},
                {"operation": "add", "quantity": 1, "note": "x"}):
        assert client.post(path, json=bad, headers=admin).status_code == 400
    assert stock_of(client, product)["available"] == 3


# -- reservations --------------------------------------------------------------------------------

def test_a_reservation_holds_the_stock_and_announces_it(client, open_stock, stock_events):
    mug, lamp = open_stock(20), open_stock(20)
    response = reserve(client, [(mug, 2), (lamp, 1)], order_id="ord_000000000001")
    assert response.status_code == 201
    reservation = response.get_json()
    assert reservation["id"].startswith("res_") and reservation["status"] == "reserved"
    assert reservation["items"] == [{"product_id": mug, "quantity": 2},
                                    {"product_id": lamp, "quantity": 1}]
    assert (stock_of(client, mug)["available"], stock_of(client, mug)["reserved"]) == (18, 2)
    found = client.get(f"/api/v1/inventory/reservations/{reservation['id']}").get_json()
    assert found == reservation
    [event] = stock_events.wait_for(about("stock.reserved", reservation_id=reservation["id"]))
    assert event.body["order_id"] == "ord_000000000001"
    assert event.body["items"] == reservation["items"]


def test_reservations_are_for_services_holding_an_admin_token(app, client, open_stock):
    product = open_stock(5)
    assert reserve(app.test_client(), [(product, 1)]).status_code == 401
    assert reserve(client_with_token(app, ["customer"]), [(product, 1)]).status_code == 403
    reservation = reserve(client, [(product, 1)]).get_json()
    for verb in ("release", "commit"):
        path = f"/api/v1/inventory/reservations/{reservation['id']}/{verb}"
        assert app.test_client().post(path).status_code == 401
    assert app.test_client().get(
        f"/api/v1/inventory/reservations/{reservation['id']}").status_code == 401
    assert stock_of(client, product)["reserved"] == 1


def test_the_idempotency_key_is_required(client, open_stock):
    product = open_stock(5)
    response = client.post("/api/v1/inventory/reservations", json={
        "order_id": "ord_1", "items": [{"product_id": product, "quantity": 1}]})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["error"]["message"]
    assert reserve(client, [(product, 1)], key="two words").status_code == 400
    assert reserve(client, [(product, 1)], key="k" * 201).status_code == 400
    assert stock_of(client, product)["available"] == 5


def test_a_repeat_with_the_same_key_gets_the_first_answer_and_reserves_nothing_more(
        client, open_stock):
    product = open_stock(5)
    first = reserve(client, [(product, 2)], key="key-1", order_id="ord_1")
    again = reserve(client, [(product, 2)], key="key-1", order_id="ord_1")
    assert (again.status_code, again.get_json()) == (first.status_code, first.get_json())
    assert stock_of(client, product)["reserved"] == 2


def test_the_same_key_with_another_body_is_a_conflict(client, open_stock):
    product = open_stock(5)
    assert reserve(client, [(product, 2)], key="key-2", order_id="ord_1").status_code == 201
    response = reserve(client, [(product, 3)], key="key-2", order_id="ord_1")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert stock_of(client, product)["reserved"] == 2


def test_all_or_nothing_a_short_line_gives_back_the_lines_before_it(client, open_stock):
    plenty, scarce = open_stock(10), open_stock(1)
    response = reserve(client, [(plenty, 4), (scarce, 2)], key="key-3", order_id="ord_3")
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert (error["code"], error["product_id"], error["requested"], error["available"]) == (
        "insufficient_stock", scarce, 2, 1)
    assert stock_of(client, plenty) == {**stock_of(client, plenty), "available": 10,
                                        "reserved": 0}
    assert stock_of(client, scarce)["available"] == 1
    client.post(f"/api/v1/inventory/{scarce}/adjust", json={"operation": "add", "quantity": 5},
                headers={"Authorization": "Bearer " + client.application.extensions[
                    "kit"].tokens.issue("usr_admin", roles=["admin"])})
    again = reserve(client, [(plenty, 4), (scarce, 2)], key="key-3", order_id="ord_3")
    assert again.status_code == 409  # the first answer was final
    assert without_request_id(again.get_json()) == without_request_id(response.get_json())
    assert stock_of(client, plenty)["reserved"] == 0


def test_a_product_without_stock_record_is_insufficient_stock(client, open_stock):
    product = open_stock(3)
    response = reserve(client, [(product, 1), ("prd_ghost", 1)])
    assert response.status_code == 409
    assert response.get_json()["error"]["product_id"] == "prd_ghost"
    assert stock_of(client, product)["available"] == 3


def test_release_gives_the_stock_back_once(app, bus, client, open_stock, stock_events):
    product = open_stock(8)
    reservation = reserve(client, [(product, 3)]).get_json()
    path = f"/api/v1/inventory/reservations/{reservation['id']}/release"
    for _ in range(2):
        response = client.post(path)
        assert response.status_code == 200 and response.get_json()["status"] == "released"
    assert (stock_of(client, product)["available"], stock_of(client, product)["reserved"]) == (
        8, 0)
    settle(stock_events, bus, app)
    assert len(stock_events.matching(
        about("stock.released", reservation_id=reservation["id"]))) == 1
    commit = client.post(f"/api/v1/inventory/reservations/{reservation['id']}/commit")
    assert commit.status_code == 409


def test_commit_turns_reserved_stock_into_sold_stock_once(client, open_stock):
    product = open_stock(8)
    reservation = reserve(client, [(product, 3)]).get_json()
    path = f"/api/v1/inventory/reservations/{reservation['id']}/commit"
    for _ in range(2):
        response = client.post(path)
        assert response.status_code == 200 and response.get_json()["status"] == "committed"
    stock = stock_of(client, product)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (5, 0, 3)
    release = client.post(f"/api/v1/inventory/reservations/{reservation['id']}/release")
    assert release.status_code == 409
    assert stock_of(client, product) == stock


def return_sold(client, reservation_id: str, key: str):
    return client.post(f"/api/v1/inventory/reservations/{reservation_id}/return",
                       headers={"Idempotency-Key": key})


def test_return_puts_sold_stock_back_on_sale_once_per_key(app, bus, client, open_stock,
                                                          stock_events):
    product = open_stock(8)
    reservation, kept = (reserve(client, [(product, quantity)]).get_json() for quantity in (3, 4))
    for sold in (reservation, kept):
        client.post(f"/api/v1/inventory/reservations/{sold['id']}/commit")
    first = return_sold(client, reservation["id"], "key-return")
    assert first.status_code == 200 and first.get_json()["status"] == "returned"
    repeat = return_sold(client, reservation["id"], "key-return")
    assert repeat.status_code == 200 and repeat.get_json() == first.get_json()
    stock = stock_of(client, product)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (4, 0, 4)

    another = return_sold(client, reservation["id"], "key-other")
    assert another.status_code == 409
    assert another.get_json()["error"]["reservation_status"] == "returned"
    for verb in ("release", "commit"):
        assert client.post(f"/api/v1/inventory/reservations/{reservation['id']}/{verb}"
                           ).status_code == 409
    assert stock_of(client, product) == stock
    settle(stock_events, bus, app)
    [returned] = stock_events.matching(about("stock.returned", reservation_id=reservation["id"]))
    assert returned.body["items"] == [{"product_id": product, "quantity": 3}]


def test_only_a_committed_reservation_can_be_returned(client, open_stock):
    product = open_stock(8)
    held = reserve(client, [(product, 2)]).get_json()
    released = reserve(client, [(product, 1)]).get_json()
    client.post(f"/api/v1/inventory/reservations/{released['id']}/release")
    for reservation, status in ((held, "reserved"), (released, "released")):
        refused = return_sold(client, reservation["id"], f"key-{status}")
        assert refused.status_code == 409, refused.get_json()
        error = refused.get_json()["error"]
        assert error["code"] == "conflict" and error["reservation_status"] == status
        assert "only a committed one can be returned" in error["message"]
    stock = stock_of(client, product)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (6, 2, 0)
    missing_key = client.post(f"/api/v1/inventory/reservations/{held['id']}/return")
    assert missing_key.status_code == 400


def test_a_return_cut_short_is_finished_by_its_repeat_moving_the_units_once(
        app, client, open_stock):
    product = open_stock(5)
    reservation = reserve(client, [(product, 2)]).get_json()
    client.post(f"/api/v1/inventory/reservations/{reservation['id']}/commit")
    database = app.extensions["kit"].db
    now = lambda: datetime.now(UTC)  # noqa: E731
    stock = StockStore(Outbox(database["stock"]), now=now)
    stock.take_back = lambda *args: (_ for _ in ()).throw(ConnectionError("the process died"))
    dying = ReservationStore(Outbox(database["reservations"]), stock, now=now)
    with pytest.raises(ConnectionError):
        dying.return_sold(reservation["id"], key="key-cut")
    assert stock_of(client, product)["sold"] == 2  # returned, but the units did not move yet

    for _ in range(2):
        assert return_sold(client, reservation["id"], "key-cut").status_code == 200
    after = stock_of(client, product)
    assert (after["available"], after["reserved"], after["sold"]) == (5, 0, 0)


def test_unknown_reservations_are_a_404(client):
    for path in ("", "/release", "/commit", "/return"):
        method = client.get if not path else client.post
        response = method(f"/api/v1/inventory/reservations/res_000000000000{path}",
                          headers={"Idempotency-Key": "key-404"})
        assert response.status_code == 404
        assert response.get_json()["error"]["message"] == "no reservation res_000000000000"


def test_concurrent_reservations_never_oversell(client, open_stock):
    product = open_stock(60)
    statuses: list[int] = []
    lock = threading.Lock()

    def customer() -> None:
        own = client_with_token(client.application, ["admin"])
        for _ in range(50):
            status = reserve(own, [(product, 1)]).status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=customer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(set(statuses)) == [201, 409] and statuses.count(201) == 60
    stock = stock_of(client, product)
    assert (stock["available"], stock["reserved"]) == (0, 60)


def test_low_stock_alerts_once_per_drop(app, bus, client, open_stock, stock_events):
    product = open_stock(12)  # threshold 10
    first = reserve(client, [(product, 2)]).get_json()  # 10 left: low
    [alert] = stock_events.wait_for(about("stock.low", product_id=product))
    assert alert.body["available"] == 10 and alert.body["threshold"] == 10
    second = reserve(client, [(product, 1)]).get_json()  # still low: no new alert
    for reservation in (first, second):  # back to 12: re-armed
        client.post(f"/api/v1/inventory/reservations/{reservation['id']}/release")
    reserve(client, [(product, 5)])  # 7 left: low again
    settle(stock_events, bus, app)
    alerts = stock_events.matching(about("stock.low", product_id=product))
    assert [alert.body["available"] for alert in alerts] == [10, 7]


def test_an_interrupted_reservation_is_finished_by_a_repeat_of_the_request(
        app, client, open_stock):
    first, second = open_stock(5), open_stock(5)
    crashing = crashing_reservations(app, crash_after_lines=1)
    with pytest.raises(ConnectionError):
        crashing.reserve("ord_crash", [{"product_id": first, "quantity": 2},
                                       {"product_id": second, "quantity": 1}], key="key-crash")
    assert stock_of(client, first)["reserved"] == 2  # taken before the "crash"
    response = reserve(client, [(first, 2), (second, 1)], key="key-crash", order_id="ord_crash")
    assert response.status_code == 201
    assert stock_of(client, first)["reserved"] == 2  # not taken twice
    assert stock_of(client, second)["reserved"] == 1


def test_at_start_a_reservation_abandoned_half_way_is_released(
        app, settings, build_app, open_stock):
    product = open_stock(5)
    crashing = crashing_reservations(app, crash_after_lines=1)
    with pytest.raises(ConnectionError):
        crashing.reserve("ord_gone", [{"product_id": product, "quantity": 2},
                                      {"product_id": "prd_other", "quantity": 1}], key="key-gone")
    later = lambda: datetime.now(UTC) + timedelta(minutes=5)  # noqa: E731
    restarted = client_with_token(build_app(lambda s: create_app(s, now=later), settings),
                                  ["admin"])
    stock = stock_of(restarted, product)
    assert (stock["available"], stock["reserved"]) == (5, 0)
    retried = reserve(restarted, [(product, 2), ("prd_other", 1)], key="key-gone",
                      order_id="ord_gone")
    assert retried.status_code == 409 and stock_of(restarted, product)["reserved"] == 0


class PowerCut(StockStore):
    """A stock store whose process "dies" (the connection drops) after taking some lines."""

    def __init__(self, *args, crash_after_lines: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lines_left = crash_after_lines

    def hold(self, product_id: str, quantity: int, holder: str) -> bool:
        if self.lines_left == 0:
            raise ConnectionError("the process died here")
        self.lines_left -= 1
        return super().hold(product_id, quantity, holder)


def crashing_reservations(app, *, crash_after_lines: int) -> ReservationStore:
    database = app.extensions["kit"].db
    now = lambda: datetime.now(UTC)  # noqa: E731
    stock = PowerCut(Outbox(database["stock"]), now=now, crash_after_lines=crash_after_lines)
    return ReservationStore(Outbox(database["reservations"]), stock, now=now)


# -- choreography --------------------------------------------------------------------------------

def test_order_created_in_the_events_flow_reserves_once_and_announces_it(
        app, client, bus, open_stock, stock_events):
    product = open_stock(10)
    order = {"order_id": f"ord_{uuid.uuid4().hex[:12]}", "user_id": "usr_1",
             "items": [{"product_id": product, "quantity": 3, "price_cents": 500}],
             "total_cents": 1500}
    bus.publish("orders", "order.created", {**order, "order_id": "ord_orchestrated"})
    for _ in range(2):  # a redelivery, as the broker may do
        bus.publish("orders", "order.created", {**order, "flow": "events"})
    # Inventory handles its queue in order: once this one is reserved, the three above are done.
    marker = {**order, "order_id": f"ord_{uuid.uuid4().hex[:12]}", "flow": "events",
              "items": [{"product_id": open_stock(1), "quantity": 1, "price_cents": 500}]}
    bus.publish("orders", "order.created", marker)
    stock_events.wait_for(about("stock.reserved", order_id=marker["order_id"]))
    settle(stock_events, bus, app)
    [reserved] = stock_events.matching(about("stock.reserved", order_id=order["order_id"]))
    assert reserved.body["reservation_id"].startswith("res_")
    assert reserved.body["items"] == [{"product_id": product, "quantity": 3}]
    assert stock_of(client, product)["reserved"] == 3  # not the orchestrated order, not twice
    assert len(stock_events.matching(about("stock.reserved", order_id=order["order_id"]))) == 1
    assert not stock_events.matching(about("stock.reserved", order_id="ord_orchestrated"))


def test_order_created_that_cannot_be_served_announces_the_failure(
        client, bus, open_stock, stock_events):
    product = open_stock(1)
    order_id = f"ord_{uuid.uuid4().hex[:12]}"
    items = [{"product_id": product, "quantity": 2, "price_cents": 500}]
    bus.publish("orders", "order.created", {"order_id": order_id, "user_id": "usr_1",
                                            "items": items, "total_cents": 1000,
                                            "flow": "events"})
    [failed] = stock_events.wait_for(about("stock.reservation_failed", order_id=order_id))
    assert failed.body["reason"] == "insufficient_stock"
    assert failed.body["product_id"] == product
    assert failed.body["items"] == [{"product_id": product, "quantity": 2}]
    assert stock_of(client, product)["available"] == 1
