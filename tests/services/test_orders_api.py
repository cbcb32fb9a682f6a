"""The orders service in-process with its saga: stand-ins for products and inventory that keep
their contracts, and the real payments service as the payments peer."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from patterns.bus import Bus
from patterns.saga import COMPENSATED, COMPENSATING, COMPLETED, RUNNING
from services.orders import app as orders_app
from services.orders import domain
from services.orders.app import create_app as create_orders
from services.payments.app import create_app as create_payments
from tests.helpers import EventRecorder, relayed, wait_for
from tests.services.orders_peers import Catalogue, Stockroom


class World:
    """Orders wired to its three peers, with handles on each for the assertions."""

    def __init__(self, make_settings, build_app, serve_app) -> None:
        self.make_settings, self.build_app = make_settings, build_app
        self.catalogue, self.stockroom = Catalogue(), Stockroom()
        self.payments_app = build_app(create_payments, make_settings("payments"))
        self.payments = self.payments_app.test_client()
        kit = self.payments_app.extensions["kit"]
        self.admin = {"Authorization": f"Bearer {kit.tokens.issue('ops', roles=['admin'])}"}
        self.peers = {"products": serve_app(self.catalogue.app()),
                      "inventory": serve_app(self.stockroom.app()),
                      "payments": serve_app(self.payments_app)}
        self.orders_settings = make_settings("orders", peers=self.peers)
        self.orders_app = self.start_orders()
        self.orders = self.orders_app.test_client()

    def start_orders(self):
        """An orders app on the orders database (a second one plays the restarted process)."""
        return self.build_app(create_orders, self.orders_settings)

    def user(self, subject: str = "usr_alice") -> dict[str, str]:
        kit = self.orders_app.extensions["kit"]
        return {"Authorization": f"Bearer {kit.tokens.issue(subject, roles=['customer'])}"}

    def place(self, *items: tuple[str, int], user: str = "usr_alice"):
        return self.orders.post("/api/v1/orders", headers=self.user(user), json={
            "items": [{"product_id": product, "quantity": quantity}
                      for product, quantity in items]})

    def payments_of(self, order_id: str) -> list[dict]:
        return self.payments.get(f"/api/v1/payments?order_id={order_id}",
                                 headers=self.admin).get_json()["items"]

    def provider(self, name: str = "stripe-sim", **changes) -> None:
        response = self.payments.put(f"/api/v1/payments/providers/{name}", json=changes,
                                     headers=self.admin)
        assert response.status_code == 200

    def order(self, order_id: str) -> dict:
        return self.orders.get(f"/api/v1/orders/{order_id}", headers=self.admin).get_json()


@pytest.fixture
def world(make_settings, build_app, serve_app, monkeypatch):
    monkeypatch.setenv("SAGA_RECOVERY_INTERVAL", "3600")  # tests run recovery passes by hand
    world = World(make_settings, build_app, serve_app)
    world.catalogue.add("prd_mug", 1250)
    world.catalogue.add("prd_tee", 2000)
    world.catalogue.add("prd_old", 999, active=False)
    world.stockroom.stock("prd_mug", 10)
    world.stockroom.stock("prd_tee", 3)
    yield world
    world.orders_app.extensions["orders.recovery"].stop()


def test_happy_path_confirms_the_order_commits_the_stock_and_captures_the_payment(
        world, amqp_url):
    recorder = EventRecorder()
    bus = Bus(amqp_url, namespace=world.orders_settings.bus_namespace)
    consumer = bus.consumer(f"test.orders.{uuid.uuid4().hex[:8]}", recorder,
                            ("orders", "order.*")).start()
    try:
        response = world.place(("prd_mug", 2), ("prd_tee", 1))
        assert response.status_code == 201, response.get_json()
        order = response.get_json()
        assert order["status"] == "confirmed" and order["total_cents"] == 2 * 1250 + 2000
        assert [(i["product_id"], i["price_cents"]) for i in order["items"]] == [
            ("prd_mug", 1250), ("prd_tee", 2000)]

        reservation = world.stockroom.reservations[order["reservation_id"]]
        assert reservation["status"] == "committed" and reservation["order_id"] == order["id"]
        assert world.stockroom.available == {"prd_mug": 8, "prd_tee": 2}
        assert world.stockroom.reserved == {"prd_mug": 0, "prd_tee": 0}
        [payment] = world.payments_of(order["id"])
        assert payment["id"] == order["payment_id"] and payment["status"] == "captured"
        assert payment["amount_cents"] == order["total_cents"]
        assert payment["user_id"] == "usr_alice"

        history = world.order(order["id"])["history"]
        assert [(h["from"], h["to"]) for h in history] == [(None, "pending"),
                                                          ("pending", "confirmed")]
        recorder.settle(bus, "orders", "order.marker",
                        relayed=relayed(world.orders_app.extensions["kit"].db, "orders"))
        assert [m.routing_key for m in recorder.matching(
            lambda m: m.body.get("order_id") == order["id"])] == [
            "order.created", "order.status_changed", "order.confirmed"]
        created = next(m for m in recorder.messages if m.routing_key == "order.created")
        assert created.body["flow"] == "orchestration" and created.body["total_cents"] == 4500
    finally:
        consumer.stop()
        bus.close()


def test_a_declined_payment_releases_the_stock_and_cancels_the_order(world):
    world.provider(failure_rate=1.0)
    response = world.place(("prd_mug", 3))

    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["code"] == "payment_declined" and error["reason"] == "payment_declined"
    assert error["message"].count("the payment was declined") == 1, error["message"]
    order = world.order(error["order_id"])
    assert order["status"] == "cancelled" and order["reason"] == "payment_declined"
    assert world.stockroom.available["prd_mug"] == 10 and world.stockroom.reserved["prd_mug"] == 0
    [reservation] = world.stockroom.reservations.values()
    assert reservation["status"] == "released"
    assert [p["status"] for p in world.payments_of(order["id"])] == ["failed"]


def test_not_enough_stock_is_409_and_nothing_is_charged(world):
    response = world.place(("prd_mug", 1), ("prd_tee", 4))

    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "insufficient_stock"
    assert world.order(error["order_id"])["status"] == "cancelled"
    assert world.payments_of(error["order_id"]) == []
    assert world.stockroom.available == {"prd_mug": 10, "prd_tee": 3}


def test_an_unknown_or_retired_product_is_422_before_anything_happens(world):
    for product in ("prd_nope", "prd_old"):
        response = world.place(("prd_mug", 1), (product, 1))
        assert response.status_code == 422
        assert response.get_json()["error"]["code"] == "unknown_product"
    assert world.stockroom.calls == []
    listed = world.orders.get("/api/v1/orders", headers=world.user()).get_json()
    assert listed["total"] == 0


def test_bad_orders_are_400(world):
    for body in ({"items": []}, {"items": [{"product_id": "prd_mug", "quantity": 0}]},
                 {"items": [{"product_id": "prd_mug", "quantity": 1}] * 2},
                 {"items": [{"product_id": "prd_mug", "quantity": 1, "price_cents": 1}]}):
        response = world.orders.post("/api/v1/orders", json=body, headers=world.user())
        assert response.status_code == 400, body
    assert world.orders.post("/api/v1/orders", json={"items": []}).status_code == 401


def test_payments_down_is_503_and_the_reservation_is_released(world):
    world.provider(down=True)
    response = world.place(("prd_mug", 2))

    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["reason"] == "payments_unavailable"
    assert world.order(error["order_id"])["status"] == "cancelled"
    # Reserved, then released (not merely never reserved: the stock would be 10 then too).
    [reservation] = world.stockroom.reservations.values()
    assert reservation["order_id"] == error["order_id"] and reservation["status"] == "released"
    assert world.stockroom.available["prd_mug"] == 10 and world.stockroom.reserved["prd_mug"] == 0
    assert world.payments_of(error["order_id"]) == []


def test_an_inventory_that_stays_down_opens_its_breaker_and_orders_fail_fast(world):
    world.stockroom.down = True
    answers = [world.place(("prd_mug", 1)) for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 503]
    calls_before = len(world.stockroom.calls)
    breaker = world.orders_app.extensions["kit"].breakers.get("inventory")
    rejected_before = breaker.snapshot()["rejected"]

    fast = world.place(("prd_mug", 1))
    assert fast.status_code == 503
    assert "circuit" in fast.get_json()["error"]["message"]
    # Fast because nothing was waited for: the breaker refused, inventory was not even tried.
    assert len(world.stockroom.calls) == calls_before
    assert breaker.snapshot()["rejected"] > rejected_before
    assert world.order(fast.get_json()["error"]["order_id"])["status"] == "cancelled"
    assert breaker.state == "open"


def test_a_lost_answer_is_retried_with_the_same_key_and_applied_once(world):
    world.stockroom.lose_answers = 1  # the reservation is made, but orders gets a 502

    response = world.place(("prd_mug", 4))

    assert response.status_code == 201, response.get_json()
    reserve_calls = world.stockroom.posts("/reservations")
    assert len(reserve_calls) == 2 and reserve_calls[0][2] == reserve_calls[1][2]  # one key
    assert len(world.stockroom.reservations) == 1
    assert world.stockroom.available["prd_mug"] == 6


def test_a_compensation_whose_peer_is_down_is_finished_by_a_later_recovery_pass(world):
    world.provider(failure_rate=1.0)
    sagas = world.orders_app.extensions["orders.sagas"]
    real_release = sagas.peers.release_reservation
    sagas.peers.release_reservation = lambda *args, **kwargs: (_ for _ in ()).throw(
        ConnectionError("inventory unreachable"))

    response = world.place(("prd_mug", 5))
    assert response.status_code == 402
    order_id = response.get_json()["error"]["order_id"]
    assert "retried" in response.get_json()["error"]["message"]
    assert world.order(order_id)["status"] == "pending"
    [saga] = list(world.orders_app.extensions["kit"].db.sagas.find())
    assert saga["status"] == COMPENSATING
    assert world.stockroom.reserved["prd_mug"] == 5

    sagas.peers.release_reservation = real_release
    [recovered] = world.orders_app.extensions["orders.recovery"].run_once()
    assert recovered.status == COMPENSATED
    order = world.order(order_id)
    assert order["status"] == "cancelled" and order["reason"] == "payment_declined"
    assert world.stockroom.available["prd_mug"] == 10 and world.stockroom.reserved["prd_mug"] == 0
    assert len(world.stockroom.posts("/release")) == 1
    assert world.orders_app.extensions["orders.recovery"].run_once() == []


def test_cancelling_a_confirmed_order_refunds_it_and_returns_its_stock_once(world):
    order = world.place(("prd_tee", 1)).get_json()
    url = f"/api/v1/orders/{order['id']}/cancel"
    assert world.stockroom.available["prd_tee"] == 2

    assert world.orders.post(url, headers=world.user("usr_bob")).status_code == 404
    cancelled = world.orders.post(url, headers=world.user())
    assert cancelled.status_code == 200, cancelled.get_json()
    assert cancelled.get_json()["status"] == "cancelled"
    assert cancelled.get_json()["reason"] == "cancelled_by_request"
    again = world.orders.post(url, headers=world.user())
    assert again.status_code == 409
    assert [p["status"] for p in world.payments_of(order["id"])] == ["refunded"]
    assert world.stockroom.reservations[order["reservation_id"]]["status"] == "returned"
    assert world.stockroom.available["prd_tee"] == 3
    [(_, path, key)] = world.stockroom.posts("/return")
    assert path.endswith(f"/{order['reservation_id']}/return") and key.endswith(":return_stock")
    history = world.order(order["id"])["history"]
    assert [h["to"] for h in history] == ["pending", "confirmed", "cancelled"]


def test_a_cancel_cut_short_after_the_refund_is_finished_by_cancelling_again(world):
    order = world.place(("prd_mug", 2)).get_json()
    url = f"/api/v1/orders/{order['id']}/cancel"
    sagas = world.orders_app.extensions["orders.sagas"]
    real_return = sagas.peers.return_stock
    sagas.peers.return_stock = lambda *args, **kwargs: (_ for _ in ()).throw(
        ConnectionError("inventory unreachable"))

    failed = world.orders.post(url, headers=world.user())
    assert failed.status_code == 503, failed.get_json()
    assert world.order(order["id"])["status"] == "confirmed"
    assert world.stockroom.available["prd_mug"] == 8

    sagas.peers.return_stock = real_return
    finished = world.orders.post(url, headers=world.user())
    assert finished.status_code == 200, finished.get_json()
    assert finished.get_json()["status"] == "cancelled"
    assert [p["status"] for p in world.payments_of(order["id"])] == ["refunded"]
    assert world.stockroom.available["prd_mug"] == 10
    assert len(world.stockroom.posts("/return")) == 1


def test_orders_are_private_and_listed_newest_first(world):
    first = world.place(("prd_mug", 1)).get_json()
    second = world.place(("prd_mug", 1)).get_json()
    bobs = world.place(("prd_mug", 1), user="usr_bob").get_json()

    mine = world.orders.get("/api/v1/orders?limit=1", headers=world.user()).get_json()
    assert mine["total"] == 2 and [o["id"] for o in mine["items"]] == [second["id"]]
    page_two = world.orders.get("/api/v1/orders?limit=1&page=2", headers=world.user()).get_json()
    assert [o["id"] for o in page_two["items"]] == [first["id"]]
    assert world.orders.get(f"/api/v1/orders/{bobs['id']}",
                            headers=world.user()).status_code == 404
    assert world.orders.get("/api/v1/orders?user_id=usr_bob",
                            headers=world.user()).status_code == 404
    by_admin = world.orders.get("/api/v1/orders?user_id=usr_bob", headers=world.admin).get_json()
    assert [o["id"] for o in by_admin["items"]] == [bobs["id"]]


def test_crash_inside_a_step_is_recovered_by_a_new_app_without_applying_anything_twice(world):
    sagas = world.orders_app.extensions["orders.sagas"]
    real_charge = sagas.peers.charge

    def charge_then_crash(order, key):
        real_charge(order, key)
        raise SystemExit("the orders process dies after the charge, before the log")

    sagas.peers.charge = charge_then_crash
    with pytest.raises(SystemExit):
        world.place(("prd_mug", 2))
    [saga] = list(world.orders_app.extensions["kit"].db.sagas.find())
    assert saga["status"] == RUNNING
    assert {s["name"]: s["state"] for s in saga["steps"]}["charge"] == "pending"
    order_id = saga["data"]["order_id"]
    assert world.order(order_id)["status"] == "pending"

    restarted = world.start_orders()  # same database: a new process after the crash
    recovery = restarted.extensions["orders.recovery"]
    try:
        wait_for(lambda: recovery.passes >= 1, what="a recovery pass")
        order = world.order(order_id)
        assert order["status"] == "confirmed"
        [payment] = world.payments_of(order_id)
        assert payment["status"] == "captured" and payment["id"] == order["payment_id"]
        assert len(world.stockroom.posts("/reservations")) == 1   # reserve_stock was done
        assert len(world.stockroom.posts("/commit")) == 1
        saga = restarted.extensions["kit"].db.sagas.find_one({"_id": saga["_id"]})
        assert saga["status"] == COMPLETED
    finally:
        recovery.stop()


def test_choreography_flow_finishes_the_order_from_inventorys_events(
        make_settings, build_app, serve_app, monkeypatch, amqp_url):
    monkeypatch.setenv("SAGA_RECOVERY_INTERVAL", "3600")
    monkeypatch.setenv("ORDER_FLOW", "events")
    world = World(make_settings, build_app, serve_app)
    world.catalogue.add("prd_mug", 1250)
    world.stockroom.stock("prd_mug", 10)
    try:
        accepted = world.place(("prd_mug", 2))
        assert accepted.status_code == 202
        order = accepted.get_json()
        assert order["status"] == "pending" and world.stockroom.calls == []
        marker = world.place(("prd_mug", 1)).get_json()  # cancelled below, after the rest

        # Inventory's part, played by hand: reserve, then announce it.
        stand_in = world.stockroom.app().test_client()
        reservation = stand_in.post("/api/v1/inventory/reservations", json={
            "order_id": order["id"], "items": [{"product_id": "prd_mug", "quantity": 2}]},
            headers={"Idempotency-Key": "inventory-did-it"}).get_json()
        inventory = Bus(amqp_url, namespace=world.orders_settings.bus_namespace)
        for _ in range(2):  # a duplicate delivery changes nothing
            inventory.publish("inventory", "stock.reserved", {
                "reservation_id": reservation["id"], "order_id": order["id"],
                "items": reservation["items"]}, message_id=f"reserved-{order['id']}")
        # Orders handles its queue in order: once this one is done, so are the two above.
        inventory.publish("inventory", "stock.reservation_failed", {
            "order_id": marker["id"], "reason": "insufficient_stock", "items": []})
        inventory.close()

        wait_for(lambda: world.order(marker["id"])["status"] == "cancelled",
                 what="the marker order to be cancelled")
        assert world.order(order["id"])["status"] == "confirmed"
        [payment] = world.payments_of(order["id"])
        assert payment["status"] == "captured" and payment["amount_cents"] == 2500
        assert world.stockroom.reservations[reservation["id"]]["status"] == "committed"
        assert len(world.stockroom.posts("/commit")) == 1
    finally:
        world.orders_app.extensions["orders.recovery"].stop()


def place_with_key(world, key: str, *items: tuple[str, int], user: str = "usr_alice"):
    return world.orders.post("/api/v1/orders", headers={**world.user(user), "Idempotency-Key": key},
                             json={"items": [{"product_id": product, "quantity": quantity}
                                             for product, quantity in items]})


def test_the_same_idempotency_key_places_one_order_and_gets_the_same_answer(world):
    first = place_with_key(world, "basket-1", ("prd_mug", 2))
    again = place_with_key(world, "basket-1", ("prd_mug", 2))
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert len(world.payments_of(first.get_json()["id"])) == 1
    assert world.stockroom.available["prd_mug"] == 8  # sold once
    # Another customer's same key is another order; a new key, a new order.
    assert place_with_key(world, "basket-1", ("prd_mug", 1), user="usr_bob").status_code == 201
    other = place_with_key(world, "basket-2", ("prd_mug", 2))
    assert other.get_json()["id"] != first.get_json()["id"]


def test_a_failed_placement_is_answered_the_same_and_not_run_again(world):
    world.provider(failure_rate=1.0)
    first = place_with_key(world, "basket-3", ("prd_mug", 1))
    world.provider(failure_rate=0.0)
    again = place_with_key(world, "basket-3", ("prd_mug", 1))
    assert first.status_code == again.status_code == 402
    assert again.get_json()["error"]["order_id"] == first.get_json()["error"]["order_id"]
    assert [p["status"] for p in world.payments_of(first.get_json()["error"]["order_id"])] == [
        "failed"]


def test_the_same_key_with_another_basket_is_409(world):
    assert place_with_key(world, "basket-4", ("prd_mug", 1)).status_code == 201
    reused = place_with_key(world, "basket-4", ("prd_tee", 1))
    assert reused.status_code == 409
    assert reused.get_json()["error"]["code"] == "idempotency_key_reused"
    assert world.stockroom.available["prd_tee"] == 3


def test_a_repeat_while_the_first_is_running_waits_for_its_answer(world):
    world.provider(latency_ms=1500)  # the first request is inside its charge for a while
    answers: list = []
    first = threading.Thread(target=lambda: answers.append(
        place_with_key(world, "basket-5", ("prd_mug", 1))))
    first.start()
    wait_for(lambda: world.stockroom.reservations, what="the first request to reserve")
    repeat = world.orders_app.test_client().post(
        "/api/v1/orders", headers={**world.user(), "Idempotency-Key": "basket-5"},
        json={"items": [{"product_id": "prd_mug", "quantity": 1}]})
    first.join()
    assert repeat.status_code == answers[0].status_code == 201
    assert repeat.get_json()["id"] == answers[0].get_json()["id"]
    assert len(world.payments_of(repeat.get_json()["id"])) == 1
    assert world.stockroom.available["prd_mug"] == 9


def test_a_key_whose_claimant_died_before_creating_the_order_is_taken_over(world, monkeypatch):
    # The first request claimed the key and its process died before the order existed: no
    # order, no saga to recover. Long after, a repeat places the order under the claimed id.
    body = {"items": [{"product_id": "prd_mug", "quantity": 1}]}
    placements = world.orders_app.extensions["kit"].collection("placements")
    user = "usr_alice"
    placements.insert_one({
        "_id": domain.placement_id(user, "basket-died"), "order_id": "ord_claimed_then_died",
        "fingerprint": domain.order_fingerprint(body["items"]), "status": None, "body": None,
        "claim": "clm_dead", "claimed_at": time.time() - domain.OrdersConfig().takeover_after - 1})
    repeat = place_with_key(world, "basket-died", ("prd_mug", 1))
    assert repeat.status_code == 201, repeat.get_json()
    assert repeat.get_json()["id"] == "ord_claimed_then_died"
    assert len(world.payments_of("ord_claimed_then_died")) == 1
    again = place_with_key(world, "basket-died", ("prd_mug", 1))
    assert again.get_json() == repeat.get_json()
    assert world.stockroom.available["prd_mug"] == 9


def test_a_recent_unanswered_claim_is_not_taken_over(world, monkeypatch):
    monkeypatch.setattr(orders_app, "ANSWER_WAIT", 0.3)
    body = {"items": [{"product_id": "prd_mug", "quantity": 1}]}
    placements = world.orders_app.extensions["kit"].collection("placements")
    placements.insert_one({
        "_id": domain.placement_id("usr_alice", "basket-busy"), "order_id": "ord_still_busy",
        "fingerprint": domain.order_fingerprint(body["items"]), "status": None, "body": None,
        "claim": "clm_busy", "claimed_at": time.time()})
    repeat = place_with_key(world, "basket-busy", ("prd_mug", 1))
    assert repeat.status_code == 409
    assert repeat.get_json()["error"]["order_id"] == "ord_still_busy"
    assert world.payments_of("ord_still_busy") == []
