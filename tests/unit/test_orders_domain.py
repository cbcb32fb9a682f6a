"""Orders' rules without I/O: the state machine, pricing, visibility, and the choreography's
reactions to inventory's events (with fakes for the order book and the peers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from patterns.api import BadRequest, NotFound
from patterns.auth import Claims
from patterns.bus import Message, PermanentError
from patterns.settings import SettingsError
from services.orders import domain
from services.orders.domain import (CANCELLED, CONFIRMED, PENDING, InsufficientStock,
                                    InvalidTransition, OrderInProgress, PaymentDeclined,
                                    PeerUnavailable, Reaction, UnknownProduct)
from services.orders.events import OrderChoreography, transition_events

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def claims(subject: str, *roles: str) -> Claims:
    return Claims(subject=subject, roles=roles, issuer="i", audience="a", issued_at=0,
                  expires_at=1)


def order(status: str = PENDING, **fields: Any) -> dict[str, Any]:
    lines = [{"product_id": "prd_1", "name": "Mug", "quantity": 2, "price_cents": 500}]
    return {**domain.new_order("ord_1", "usr_1", lines, 1000, "sag_1", domain.EVENTS, NOW),
            "status": status, **fields}


@pytest.mark.parametrize("source, target", [(PENDING, CONFIRMED), (PENDING, CANCELLED),
                                            (CONFIRMED, CANCELLED)])
def test_allowed_transitions(source, target):
    domain.check_transition(source, target)


@pytest.mark.parametrize("source, target", [(CONFIRMED, PENDING), (CANCELLED, CONFIRMED),
                                            (CANCELLED, PENDING), (PENDING, PENDING)])
def test_refused_transitions(source, target):
    with pytest.raises(InvalidTransition) as refused:
        domain.check_transition(source, target)
    assert refused.value.status == 409


def test_prices_are_a_snapshot_of_the_catalogue_and_the_total_is_in_cents():
    products = {"a": {"name": "A", "price_cents": 1250}, "b": {"price_cents": 99, "active": True}}
    lines, total = domain.price_items([{"product_id": "a", "quantity": 2},
                                       {"product_id": "b", "quantity": 3}], products)
    assert total == 2 * 1250 + 3 * 99
    assert lines[0] == {"product_id": "a", "name": "A", "quantity": 2, "price_cents": 1250}


def test_unknown_and_retired_products_are_refused_by_name():
    for products in ({}, {"a": {"price_cents": 1, "active": False}}):
        with pytest.raises(UnknownProduct) as refused:
            domain.price_items([{"product_id": "a", "quantity": 1}], products)
        assert refused.value.status == 422 and refused.value.details["product_id"] == "a"


def test_each_product_is_listed_once():
    domain.check_distinct([{"product_id": "a"}, {"product_id": "b"}])
    with pytest.raises(BadRequest):
        domain.check_distinct([{"product_id": "a"}, {"product_id": "a"}])


def test_a_new_order_is_pending_with_no_payment_yet():
    new = order()
    assert new["_id"] == "ord_1" and new["status"] == PENDING and new["total_cents"] == 1000
    assert new["payment_id"] is None and new["reason"] is None and new["created_at"] == NOW


def test_saga_failures_carry_their_status_code_and_reason():
    assert (InsufficientStock("x").status, InsufficientStock("x").details["reason"]) == (
        409, "insufficient_stock")
    assert PaymentDeclined("x").status == 402
    down = PeerUnavailable("payments", "payments is unavailable")
    assert (down.status, down.details["reason"], down.details["peer"]) == (
        503, "payments_unavailable", "payments")


def test_owners_and_admins_see_an_order_others_get_404():
    mine = order()
    assert domain.visible_to(mine, claims("usr_1")) is mine
    assert domain.visible_to(mine, claims("ops", "admin")) is mine
    for found in (mine, None):
        with pytest.raises(NotFound):
            domain.visible_to(found, claims("usr_2"))


def test_listing_shows_ones_own_orders_admins_choose():
    assert domain.listing_owner(claims("usr_1"), None) == "usr_1"
    assert domain.listing_owner(claims("usr_1"), "usr_1") == "usr_1"
    assert domain.listing_owner(claims("ops", "admin"), "usr_9") == "usr_9"
    assert domain.listing_owner(claims("ops", "admin"), None) is None
    with pytest.raises(NotFound):
        domain.listing_owner(claims("usr_1"), "usr_2")


def test_only_a_confirmed_order_is_cancelled_on_request():
    domain.check_cancellable(order(CONFIRMED))
    with pytest.raises(OrderInProgress):
        domain.check_cancellable(order(PENDING))
    with pytest.raises(InvalidTransition):
        domain.check_cancellable(order(CANCELLED))


def test_transitions_announce_the_change_and_the_outcome():
    confirmed = transition_events(order(), CONFIRMED, None)
    assert [e.routing_key for e in confirmed] == ["order.status_changed", "order.confirmed"]
    assert confirmed[0].payload["from"] == PENDING and confirmed[0].payload["to"] == CONFIRMED
    cancelled = transition_events(order(), CANCELLED, "payment_declined")
    assert cancelled[1].payload["reason"] == "payment_declined"


# -- choreography ------------------------------------------------------------------------------

def test_inventory_outcomes_matter_only_to_a_pending_order():
    assert domain.after_stock_reserved(order()) is Reaction.CHARGE
    assert domain.after_reservation_failed(order()) is Reaction.CANCEL
    for moved_on in (order(CONFIRMED), order(CANCELLED), None):
        assert domain.after_stock_reserved(moved_on) is Reaction.IGNORE
        assert domain.after_reservation_failed(moved_on) is Reaction.IGNORE


class FakeOrders:
    def __init__(self, *orders: dict[str, Any]) -> None:
        self.orders = {o["_id"]: dict(o) for o in orders}

    def get(self, order_id: str) -> dict[str, Any] | None:
        return self.orders.get(order_id)

    def confirm(self, order_id: str, *, payment_id: str, reservation_id: str) -> bool:
        self.orders[order_id].update(status=CONFIRMED, payment_id=payment_id,
                                     reservation_id=reservation_id)
        return True

    def cancel(self, order_id: str, reason: str) -> bool:
        self.orders[order_id].update(status=CANCELLED, reason=reason)
        return True


class FakePeers:
    def __init__(self, outcome: str = "captured") -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, str, str]] = []

    def charge(self, order: dict[str, Any], key: str) -> str:
        self.calls.append(("charge", order["_id"], key))
        if self.outcome == "declined":
            raise PaymentDeclined("card declined")
        if self.outcome == "down":
            raise PeerUnavailable("payments", "payments is unavailable")
        return "pay_1"

    def commit_reservation(self, reservation_id: str, key: str) -> None:
        self.calls.append(("commit", reservation_id, key))

    def release_reservation(self, reservation_id: str, key: str) -> None:
        self.calls.append(("release", reservation_id, key))


def inventory_says(routing_key: str, **body: Any) -> Message:
    return Message(id=f"m-{routing_key}", exchange="inventory", routing_key=routing_key,
                   body={"order_id": "ord_1", **body})


def test_choreography_charges_then_commits_and_confirms_once():
    orders, peers = FakeOrders(order()), FakePeers()
    react = OrderChoreography(orders, peers)
    reserved = inventory_says("stock.reserved", reservation_id="res_1", items=[])

    react(reserved)
    react(reserved)  # redelivered: the order has moved on

    assert orders.get("ord_1")["status"] == CONFIRMED
    assert orders.get("ord_1")["payment_id"] == "pay_1"
    assert peers.calls == [("charge", "ord_1", "ord_1:charge"),
                           ("commit", "res_1", "ord_1:commit")]


def test_choreography_releases_the_stock_and_cancels_when_the_payment_is_declined():
    orders, peers = FakeOrders(order()), FakePeers("declined")
    OrderChoreography(orders, peers)(inventory_says("stock.reserved", reservation_id="res_1"))
    assert orders.get("ord_1")["status"] == CANCELLED
    assert orders.get("ord_1")["reason"] == "payment_declined"
    assert peers.calls[-1] == ("release", "res_1", "ord_1:release")


def test_choreography_leaves_the_order_pending_for_a_retry_when_payments_is_down():
    orders, peers = FakeOrders(order()), FakePeers("down")
    with pytest.raises(PeerUnavailable):  # the bus redelivers it later
        OrderChoreography(orders, peers)(inventory_says("stock.reserved", reservation_id="r"))
    assert orders.get("ord_1")["status"] == PENDING
    assert [call[0] for call in peers.calls] == ["charge"]


def test_choreography_cancels_when_inventory_could_not_reserve():
    orders, peers = FakeOrders(order()), FakePeers()
    OrderChoreography(orders, peers)(inventory_says("stock.reservation_failed",
                                                    reason="not enough prd_1"))
    assert orders.get("ord_1")["status"] == CANCELLED
    assert orders.get("ord_1")["reason"] == "insufficient_stock"
    assert peers.calls == []
    with pytest.raises(PermanentError):  # dead-lettered at once: retrying cannot help
        OrderChoreography(orders, peers)(inventory_says("stock.low"))


# -- knobs ----------------------------------------------------------------------------------


def test_config_defaults_and_every_knob_from_the_environment():
    assert domain.OrdersConfig.from_env({}) == domain.OrdersConfig(
        flow=domain.ORCHESTRATION, takeover_after=120.0, recovery_interval=10.0)
    assert domain.OrdersConfig.from_env({
        "ORDER_FLOW": "events", "ORDER_TAKEOVER_AFTER": "45",
        "SAGA_RECOVERY_INTERVAL": "2.5"}) == domain.OrdersConfig(
        flow=domain.EVENTS, takeover_after=45.0, recovery_interval=2.5)


@pytest.mark.parametrize("environ", [
    {"ORDER_FLOW": "choreography"}, {"ORDER_TAKEOVER_AFTER": "soon"},
    {"ORDER_TAKEOVER_AFTER": "0"}, {"SAGA_RECOVERY_INTERVAL": "-1"},
])
def test_a_bad_knob_is_a_settings_error_naming_it(environ):
    with pytest.raises(SettingsError, match=next(iter(environ))):
        domain.OrdersConfig.from_env(environ)
