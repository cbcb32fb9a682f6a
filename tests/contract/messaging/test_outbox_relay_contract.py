"""The transactional outbox with the broker going away and coming back: nothing lost, nothing
applied twice, each aggregate's events in order."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest

from patterns.bus import Message, PublishError
from patterns.idempotency import ProcessedMessages, idempotent
from patterns.outbox import Event, Outbox, OutboxRelay

ORDERS = ["o-1", "o-2", "o-3"]


def write_order_history(outbox: Outbox, exchange: str, rounds: range) -> list[str]:
    """Creates the orders (first round) and changes their status, one event per change."""
    ids = []
    for n in rounds:
        for order_id in ORDERS:
            event = Event(exchange, "order.updated", {"order_id": order_id, "seq": n})
            if n == 0:
                outbox.insert({"_id": order_id, "version": 0}, event)
            else:
                assert outbox.update({"_id": order_id}, {"$inc": {"version": 1}}, event)
            ids.append(event.id)
    return ids


class Recorder:
    """A consumer that keeps every delivery and applies each event once (idempotent)."""

    def __init__(self, db) -> None:
        self.deliveries: list[Message] = []
        self.applied: dict[str, list[int]] = defaultdict(list)
        self._apply_once = idempotent(self._apply, ProcessedMessages(db.processed, "recorder"))

    def __call__(self, message: Message) -> None:
        self.deliveries.append(message)
        self._apply_once(message)

    def _apply(self, message: Message) -> None:
        self.applied[message.body["order_id"]].append(message.body["seq"])


def test_events_written_while_the_broker_is_down_arrive_exactly_once_when_it_returns(
        broker, db, forwarder, amqp_url, wait_until):
    orders, queue = broker.exchange("orders"), broker.queue("order-history")
    outbox = Outbox(db.orders)
    recorder = Recorder(db)
    # The relay talks to the broker through the forwarder, which is not listening yet.
    relay = OutboxRelay(broker.bus(forwarder.url(amqp_url), publish_attempts=2), outbox,
                        interval=0.05, backoff=(0.05, 0.3))

    with broker.bus().consumer(queue, recorder, (orders, "order.*")), relay:
        written = write_order_history(outbox, orders, range(10))
        time.sleep(0.5)  # the relay keeps trying and failing meanwhile
        assert (relay.published, outbox.pending()) == (0, 30)
        forwarder.open()  # the broker is back
        assert wait_until(lambda: len(recorder.deliveries) == 30)
        assert wait_until(lambda: outbox.pending() == 0)

    assert Counter(message.id for message in recorder.deliveries) == Counter(written)
    assert dict(recorder.applied) == {order_id: list(range(10)) for order_id in ORDERS}
    assert [doc["version"] for doc in db.orders.find()] == [9, 9, 9]


def test_a_broker_that_drops_out_mid_stream_loses_nothing_and_applies_nothing_twice(
        broker, db, forwarder, amqp_url, wait_until):
    orders, queue = broker.exchange("orders"), broker.queue("order-audit")
    outbox = Outbox(db.orders)
    recorder = Recorder(db)
    forwarder.open()
    relay = OutboxRelay(broker.bus(forwarder.url(amqp_url), publish_attempts=2), outbox,
                        interval=0.05, backoff=(0.05, 0.3))

    with broker.bus().consumer(queue, recorder, (orders, "order.*")), relay:
        written = write_order_history(outbox, orders, range(5))
        forwarder.close()  # cut, maybe mid-publish
        written += write_order_history(outbox, orders, range(5, 10))
        forwarder.open()
        assert wait_until(lambda: outbox.pending() == 0)
        assert wait_until(lambda: set(message.id for message in recorder.deliveries) == set(written))

    # A publish cut before its confirm is sent again: a duplicate delivery, never a lost one,
    # and the idempotent consumer applies it once.
    assert dict(recorder.applied) == {order_id: list(range(10)) for order_id in ORDERS}


def test_relay_once_raises_and_keeps_the_events_while_the_broker_is_unreachable(
        broker, db, forwarder, amqp_url):
    orders, queue = broker.exchange("orders"), broker.queue("order-notes")
    outbox = Outbox(db.orders)
    outbox.insert({"_id": "o-1"}, Event(orders, "order.created", {"order_id": "o-1"}),
                  Event(orders, "order.noted", {"order_id": "o-1"}))
    unreachable = OutboxRelay(broker.bus(forwarder.url(amqp_url), publish_attempts=1), outbox)

    with pytest.raises(PublishError):
        unreachable.relay_once()
    assert outbox.pending() == 2

    with broker.bus().consumer(queue, lambda message: None, (orders, "#")):
        pass  # declares and binds the queue
    assert OutboxRelay(broker.bus(), outbox).relay_once() == 2
    assert outbox.pending() == 0
    assert [properties.type for properties, _ in broker.take_all(queue)] == [
        "order.created", "order.noted"]


def test_a_conditional_update_that_matches_nothing_writes_no_event(broker, db):
    outbox = Outbox(db.stock)
    outbox.insert({"_id": "sku-1", "available": 1})
    low = Event(broker.exchange("inventory"), "inventory.reserved", {"sku": "sku-1"})

    assert outbox.update({"_id": "sku-1", "available": {"$gte": 2}},
                         {"$inc": {"available": -2}}, low) is False
    assert outbox.pending() == 0
    assert outbox.update({"_id": "sku-1", "available": {"$gte": 1}},
                         {"$inc": {"available": -1}}, low) is True
    assert outbox.pending() == 1


def test_the_outbox_fields_cannot_be_written_by_hand(db):
    outbox = Outbox(db.orders)
    with pytest.raises(ValueError):
        outbox.insert({"_id": "o-1", "outbox": []})
    with pytest.raises(ValueError):
        outbox.update({"_id": "o-1"}, {"$inc": {"outbox_pending": 1}})


def test_a_write_wakes_a_pass_over_its_own_outbox_and_the_timed_pass_looks_everywhere(
        broker, db, wait_until):
    orders = broker.exchange("orders")
    with broker.bus().consumer(broker.queue("order-wakes"), lambda message: None, (orders, "#")):
        pass  # declares and binds the queue
    written, other = Outbox(db.orders), Outbox(db.stock)
    other.insert({"_id": "left-before"}, Event(orders, "order.noted", {"order_id": "o-0"}))

    with OutboxRelay(broker.bus(), written, other, interval=5.0):
        assert wait_until(lambda: other.pending() == 0, timeout=4)  # the first pass: everywhere
        began = time.monotonic()
        # Another process's write to a collection the relay watches wakes nothing here...
        Outbox(db.stock).insert({"_id": "from-elsewhere"},
                                Event(orders, "order.noted", {"order_id": "o-1"}))
        # ...while a write through one of the relay's outboxes wakes a pass over that one.
        written.insert({"_id": "o-2"}, Event(orders, "order.created", {"order_id": "o-2"}))
        assert wait_until(lambda: written.pending() == 0, timeout=4)
        assert other.pending() == 1 and time.monotonic() - began < 5
        assert wait_until(lambda: other.pending() == 0, timeout=15)  # the timed pass
