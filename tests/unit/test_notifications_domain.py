"""Notifications: what an event says and who receives it, without a database or a broker."""

from __future__ import annotations

import pytest

from services.notifications.domain import (ADMINS_ROOM, FALLBACK, TEMPLATES, MalformedEvent,
                                           format_cents, ids_of, notification_for, rooms_of,
                                           user_room)
from services.notifications.sockets import token_from

# One payload per event of the catalogue (docs/services.md), besides occurred_at.
CATALOGUE = {
    "user.registered": {"user_id": "usr_1", "email": "ada@example.com", "name": "Ada"},
    "user.password_changed": {"user_id": "usr_1", "email": "ada@example.com"},
    "product.created": {"product_id": "prd_1", "name": "Lamp", "price_cents": 1999,
                        "category": "home"},
    "product.updated": {"product_id": "prd_1", "name": "Lamp"},
    "stock.reserved": {"reservation_id": "res_1", "order_id": "ord_1", "items": []},
    "stock.released": {"reservation_id": "res_1", "order_id": "ord_1", "items": []},
    "stock.returned": {"reservation_id": "res_1", "order_id": "ord_1", "items": []},
    "stock.low": {"product_id": "prd_1", "available": 2, "threshold": 5},
    "stock.reservation_failed": {"order_id": "ord_1", "reason": "insufficient_stock",
                                 "items": []},
    "payment.captured": {"payment_id": "pay_1", "order_id": "ord_1", "user_id": "usr_1",
                         "amount_cents": 4250, "provider": "stripe"},
    "payment.failed": {"order_id": "ord_1", "user_id": "usr_1", "amount_cents": 4250,
                       "provider": "stripe", "reason": "card declined"},
    "payment.refunded": {"payment_id": "pay_1", "order_id": "ord_1", "user_id": "usr_1",
                         "amount_cents": 4250},
    "order.created": {"order_id": "ord_1", "user_id": "usr_1", "total_cents": 4250,
                      "items": [{"product_id": "prd_1", "quantity": 2, "price_cents": 2125}]},
    "order.confirmed": {"order_id": "ord_1", "user_id": "usr_1", "total_cents": 4250},
    "order.cancelled": {"order_id": "ord_1", "user_id": "usr_1", "reason": "payment declined"},
    "order.status_changed": {"order_id": "ord_1", "user_id": "usr_1", "from": "pending",
                             "to": "confirmed"},
}


def test_every_event_of_the_catalogue_has_its_own_words():
    assert set(CATALOGUE) == set(TEMPLATES)
    for routing_key, payload in CATALOGUE.items():
        draft = notification_for(routing_key, {**payload, "occurred_at": "2026-11-25T10:00:00Z"})
        assert draft.type == routing_key
        assert draft.title != FALLBACK[0]
        assert "?" not in draft.message, f"{routing_key}: {draft.message}"


def test_an_event_naming_a_user_goes_to_that_users_room_only():
    draft = notification_for("order.confirmed", CATALOGUE["order.confirmed"])
    assert draft.recipient == "user:usr_1" and draft.user_id == "usr_1"
    assert draft.title == "Order confirmed"
    assert draft.message == "Your order ord_1 of 42.50 is confirmed."


@pytest.mark.parametrize("routing_key", ["product.created", "stock.low", "stock.reserved"])
def test_an_event_naming_nobody_goes_to_the_admins(routing_key):
    draft = notification_for(routing_key, CATALOGUE[routing_key])
    assert draft.recipient == ADMINS_ROOM and draft.user_id is None


def test_messages_quote_the_facts_of_the_event():
    assert notification_for("stock.low", CATALOGUE["stock.low"]).message == (
        "Only 2 left of product prd_1 (alert threshold 5).")
    assert notification_for("order.status_changed", CATALOGUE["order.status_changed"]
                            ).message == "Your order ord_1 went from pending to confirmed."
    assert "Lamp is now available at 19.99" in notification_for(
        "product.created", CATALOGUE["product.created"]).message


def test_data_keeps_only_the_events_ids():
    draft = notification_for("payment.captured", CATALOGUE["payment.captured"])
    assert draft.data == {"payment_id": "pay_1", "order_id": "ord_1", "user_id": "usr_1"}
    assert ids_of({"order_id": "o", "flag_id": True, "nested_id": {"x": 1}, "count": 3}) == {
        "order_id": "o"}


def test_an_unknown_or_incomplete_event_still_makes_a_readable_notification():
    unknown = notification_for("shipment.sent", {"user_id": "usr_9", "shipment_id": "shp_1"})
    assert (unknown.recipient, unknown.title) == ("user:usr_9", "Notification")
    assert "shipment.sent" in unknown.message
    partial = notification_for("payment.failed", {"user_id": "usr_9"})
    assert partial.message == "Your payment of ? for order ? failed: ?."


@pytest.mark.parametrize("user_id", [None, "", 42, ["usr_1"]])
def test_a_missing_or_malformed_user_id_sends_the_event_to_the_admins(user_id):
    draft = notification_for("order.created", {"order_id": "ord_1", "user_id": user_id})
    assert draft.recipient == ADMINS_ROOM and draft.user_id is None


@pytest.mark.parametrize("body", [["order_id", "ord_1"], "order.created", 7, None])
def test_a_body_that_is_not_an_object_is_malformed(body):
    with pytest.raises(MalformedEvent, match="not a JSON object"):
        notification_for("order.created", body)


def test_huge_payload_values_are_cut_short():
    draft = notification_for("order.cancelled", {"order_id": "ord_1", "user_id": "usr_1",
                                                 "reason": "x" * 10_000})
    assert len(draft.message) < 200


@pytest.mark.parametrize("cents, text", [(0, "0.00"), (5, "0.05"), (1999, "19.99"),
                                         (-250, "-2.50"), ("12", "?"), (None, "?"),
                                         (True, "?"), (1.5, "?")])
def test_format_cents(cents, text):
    assert format_cents(cents) == text


def test_a_reader_sees_their_own_room_and_admins_also_the_admin_inbox():
    assert rooms_of("usr_1", is_admin=False) == [user_room("usr_1")]
    assert rooms_of("usr_1", is_admin=True) == ["user:usr_1", ADMINS_ROOM]


@pytest.mark.parametrize("auth, query, token", [
    ({"token": "abc"}, "", "abc"),
    ({"token": "abc"}, "token=xyz", "abc"),
    (None, "EIO=4&transport=polling&token=xyz", "xyz"),
    ({"token": ""}, "", None),
    ({"token": 5}, "", None),
    ("abc", "", None),
    (None, "token=", None),
])
def test_the_handshake_token_comes_from_auth_first_then_the_query(auth, query, token):
    assert token_from(auth, {"QUERY_STRING": query}) == token
