"""Duplicates against the real broker and MongoDB: a message delivered twice is applied once."""

from __future__ import annotations

from patterns.bus import Message
from patterns.idempotency import APPLIED, ProcessedMessages, apply_once, idempotent


def test_the_same_message_published_twice_is_applied_once(broker, db, wait_until):
    orders, queue = broker.exchange("orders"), broker.queue("loyalty")
    db.points.insert_one({"_id": "u-1", "points": 0})
    processed = ProcessedMessages(db.processed, consumer="loyalty")
    deliveries: list[str] = []

    def award_points(message: Message) -> None:
        db.points.update_one({"_id": message.body["user_id"]}, {"$inc": {"points": 10}})

    def count_and_award(message: Message) -> None:
        deliveries.append(message.id)
        idempotent(award_points, processed)(message)

    with broker.bus().consumer(queue, count_and_award, (orders, "order.paid")):
        publisher = broker.bus()
        for _ in range(2):  # e.g. an outbox relay that died before recording the first send
            publisher.publish(orders, "order.paid", {"user_id": "u-1"}, message_id="m-1")
        publisher.publish(orders, "order.paid", {"user_id": "u-1"}, message_id="m-2")
        assert wait_until(lambda: len(deliveries) == 3)

    assert deliveries == ["m-1", "m-1", "m-2"]
    assert db.points.find_one({"_id": "u-1"})["points"] == 20
    assert db.processed.count_documents({"consumer": "loyalty"}) == 2
    assert broker.count(queue) == 0


def test_a_message_redelivered_after_its_effect_but_before_its_ack_is_not_applied_again(
        broker, db, wait_until):
    """The handler applies the effect and records it, then "crashes" before the ack: the
    bus delivers the message again, and the record makes the second delivery a no-op."""
    orders, queue = broker.exchange("orders"), broker.queue("emails")
    processed = ProcessedMessages(db.processed, consumer="email")
    attempts: list[int] = []

    def send_receipt(message: Message) -> None:
        db.outgoing.insert_one({"to": message.body["email"], "message_id": message.id})

    once = idempotent(send_receipt, processed)

    def crash_before_the_first_ack(message: Message) -> None:
        attempts.append(message.attempt)
        once(message)
        if message.attempt == 1:
            raise ConnectionResetError("process died before acking")

    with broker.bus().consumer(queue, crash_before_the_first_ack, (orders, "#"), retry_delay=0.1):
        broker.bus().publish(orders, "order.paid", {"email": "ada@example.com"}, message_id="m-7")
        assert wait_until(lambda: len(attempts) == 2)

    assert attempts == [1, 2]
    assert db.outgoing.count_documents({"message_id": "m-7"}) == 1


def test_processed_messages_are_unique_per_consumer(db):
    emails = ProcessedMessages(db.processed, consumer="email")
    loyalty = ProcessedMessages(db.processed, consumer="loyalty")

    assert emails.remember("m-1") is True
    assert emails.remember("m-1") is False  # the unique index said no
    assert loyalty.remember("m-1") is True  # another consumer handles it once too
    assert emails.seen("m-1") and not emails.seen("m-2")


def test_apply_once_puts_the_effect_and_its_record_in_one_write(db):
    db.stock.insert_one({"_id": "sku-1", "available": 10})

    def reserve(message_id: str, quantity: int) -> bool:
        return apply_once(db.stock, {"_id": "sku-1", "available": {"$gte": quantity}},
                          {"$inc": {"available": -quantity}}, message_id)

    assert reserve("m-1", 3) is True
    assert reserve("m-1", 3) is False  # the redelivery
    assert reserve("m-2", 3) is True
    assert reserve("m-3", 30) is False  # not enough stock: nothing applied, nothing recorded
    document = db.stock.find_one({"_id": "sku-1"})
    assert document["available"] == 4
    assert document[APPLIED] == ["m-1", "m-2"]
