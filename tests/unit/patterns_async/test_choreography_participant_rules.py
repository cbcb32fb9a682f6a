"""A choreographed saga participant: react to an event, announce the outcome (or the refusal)."""

from __future__ import annotations

import pytest

from patterns.bus import Message
from patterns.saga import Participant, StepRejected


def order_created(message_id: str = "m-1", **body) -> Message:
    return Message(id=message_id, exchange="orders", routing_key="order.created",
                   body={"order_id": "o-1", "quantity": 2, **body})


def reserve_stock(message: Message) -> dict:
    if message.body["quantity"] > 5:
        raise StepRejected("only 5 in stock")
    return {"reservation_id": f"r-{message.body['order_id']}"}


@pytest.fixture
def inventory(publisher) -> Participant:
    return Participant(publisher, "inventory").on(
        "order.created", reserve_stock,
        succeeded="inventory.reserved", failed="inventory.reservation_failed")


def test_success_is_announced_with_the_trigger_body_plus_the_result(inventory, publisher):
    inventory(order_created())

    [event] = publisher.published
    assert (event["exchange"], event["routing_key"]) == ("inventory", "inventory.reserved")
    assert event["body"] == {"order_id": "o-1", "quantity": 2, "reservation_id": "r-o-1"}
    assert event["headers"] == {"causation-id": "m-1", "correlation-id": "m-1"}


def test_a_business_refusal_is_announced_as_the_failure_event(inventory, publisher):
    inventory(order_created(quantity=9))

    [event] = publisher.published
    assert event["routing_key"] == "inventory.reservation_failed"
    assert event["body"]["reason"] == "only 5 in stock"


def test_a_redelivered_trigger_announces_the_same_outcome_under_the_same_id(inventory, publisher):
    inventory(order_created("m-1"))
    inventory(order_created("m-1"))
    inventory(order_created("m-2"))

    ids = [event["message_id"] for event in publisher.published]
    assert ids[0] == ids[1] != ids[2]


def test_the_correlation_id_of_the_first_event_travels_down_the_chain(inventory, publisher):
    trigger = Message(id="m-9", exchange="orders", routing_key="order.created",
                      body={"order_id": "o-9", "quantity": 1}, headers={"correlation-id": "saga-9"})
    inventory(trigger)

    assert publisher.published[0]["headers"]["correlation-id"] == "saga-9"


def test_an_unexpected_error_propagates_so_the_bus_retries_it(publisher):
    def broken(message: Message) -> None:
        raise ConnectionError("stock database unreachable")

    participant = Participant(publisher, "inventory").on("order.created", broken,
                                                          succeeded="inventory.reserved")
    with pytest.raises(ConnectionError):
        participant(order_created())
    assert publisher.published == []


def test_a_refusal_without_a_failure_event_propagates(publisher):
    participant = Participant(publisher, "inventory").on("order.created", reserve_stock,
                                                          succeeded="inventory.reserved")
    with pytest.raises(StepRejected):
        participant(order_created(quantity=9))


def test_an_event_the_participant_has_no_reaction_to_is_an_error_not_a_silent_ack(inventory):
    with pytest.raises(LookupError):
        inventory(Message(id="m-3", exchange="orders", routing_key="order.cancelled", body={}))
