"""A choreographed order saga over the real broker: orders announce, inventory and payments react,
and a declined payment makes inventory release the stock it reserved."""

from __future__ import annotations

from collections import defaultdict

from patterns.bus import Message
from patterns.idempotency import APPLIED, apply_once
from patterns.outbox import Event, Outbox, OutboxRelay
from patterns.saga import Participant, StepRejected


def test_a_declined_payment_releases_the_stock_and_every_order_ends_consistently(
        broker, db, wait_until):
    orders, inventory, payments = (broker.exchange(name) for name in ("orders", "inventory",
                                                                      "payments"))
    db.stock.insert_one({"_id": "sku-1", "available": 5})

    def reserve_stock(message: Message) -> None:
        order = message.body
        if apply_once(db.stock, {"_id": "sku-1", "available": {"$gte": order["quantity"]}},
                      {"$inc": {"available": -order["quantity"]}}, message.id):
            return
        if db.stock.count_documents({"_id": "sku-1", APPLIED: message.id}) == 0:
            raise StepRejected("not enough stock")  # not a repeat: really short

    def release_stock(message: Message) -> None:
        apply_once(db.stock, {"_id": "sku-1"}, {"$inc": {"available": message.body["quantity"]}},
                   message.id)

    def charge(message: Message) -> dict[str, str]:
        if message.body["amount"] > 100:
            raise StepRejected("card declined")
        db.charges.update_one({"_id": message.id}, {"$setOnInsert": {"amount": message.body["amount"]}},
                              upsert=True)
        return {"charge_id": message.id}

    # Each service has one bus: its participant publishes through the bus that feeds it.
    inventory_bus, payments_bus = broker.bus(), broker.bus()
    stock_keeper = (Participant(inventory_bus, inventory)
                    .on("order.created", reserve_stock,
                        succeeded="inventory.reserved", failed="inventory.reservation_failed")
                    .on("payment.failed", release_stock, succeeded="inventory.released"))
    cashier = Participant(payments_bus, payments).on(
        "inventory.reserved", charge, succeeded="payment.captured", failed="payment.failed")
    timeline: dict[str, list[str]] = defaultdict(list)

    def watch(message: Message) -> None:
        timeline[message.body["order_id"]].append(message.routing_key)

    consumers = [
        inventory_bus.consumer(broker.queue("inventory-saga"), stock_keeper,
                               (orders, "order.created"), (payments, "payment.failed")),
        payments_bus.consumer(broker.queue("payments-saga"), cashier,
                              (inventory, "inventory.reserved")),
        broker.bus().consumer(broker.queue("watcher"), watch,
                              (orders, "#"), (inventory, "#"), (payments, "#")),
    ]
    order_book = Outbox(db.orders)
    for order_id, quantity, amount in [("o-paid", 2, 50), ("o-declined", 1, 500),
                                       ("o-too-many", 10, 20)]:
        order = {"order_id": order_id, "quantity": quantity, "amount": amount}
        order_book.insert({"_id": order_id, "status": "pending"},
                          Event(orders, "order.created", order))
    try:
        for consumer in consumers:
            consumer.start()
        with OutboxRelay(broker.bus(), order_book, interval=0.05):
            assert wait_until(lambda: sum(map(len, timeline.values())) == 9)
    finally:
        for consumer in consumers:
            consumer.stop()

    assert dict(timeline) == {
        "o-paid": ["order.created", "inventory.reserved", "payment.captured"],
        "o-declined": ["order.created", "inventory.reserved", "payment.failed",
                       "inventory.released"],
        "o-too-many": ["order.created", "inventory.reservation_failed"],
    }
    assert db.stock.find_one({"_id": "sku-1"})["available"] == 3
    assert db.charges.count_documents({}) == 1
