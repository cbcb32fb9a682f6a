"""The bus against the real RabbitMQ: confirmed publishes, retries, dead letters, clean stops."""

from __future__ import annotations

import json
import threading
import time

import pytest

from patterns.bus import (ATTEMPT, DEAD_LETTER_REASON, LAST_ERROR, Bus, Message, PermanentError,
                          dead_letter_queue, retry_queue, unrouted_queue)
from patterns.http import ServiceError
from patterns.logs import REQUEST_ID_HEADER, request_id_var


def test_published_events_reach_the_bound_consumer_in_order_with_id_headers_and_body(
        broker, wait_until):
    orders, queue = broker.exchange("orders"), broker.queue("billing")
    publisher = broker.bus(headers_provider=lambda: {"traceparent": "00-4bf92f-00f067-01"})
    received: list[Message] = []

    with broker.bus().consumer(queue, received.append, (orders, "order.*")):
        ids = [publisher.publish(orders, "order.created", {"n": n}, headers={"n": n})
               for n in range(20)]
        publisher.publish(orders, "invoice.sent", {"ignored": True})  # matches no binding
        assert wait_until(lambda: len(received) == 20)

    assert [message.id for message in received] == ids
    assert [message.body for message in received] == [{"n": n} for n in range(20)]
    first = received[0]
    assert (first.exchange, first.routing_key, first.attempt) == (orders, "order.created", 1)
    assert first.headers["traceparent"] == "00-4bf92f-00f067-01"
    assert first.headers["n"] == 0
    assert broker.count(queue) == 0


def test_a_handler_runs_under_the_request_id_its_message_carries(broker, wait_until):
    # So its log lines, and the calls and events it makes, follow the request that caused it.
    orders, queue = broker.exchange("orders"), broker.queue("audit")
    seen: list[tuple[int, str | None]] = []

    def audit(message: Message) -> None:
        seen.append((message.body["n"], request_id_var.get()))

    with broker.bus().consumer(queue, audit, (orders, "order.*")):
        publisher = broker.bus()
        publisher.publish(orders, "order.created", {"n": 1}, headers={REQUEST_ID_HEADER: "req-42"})
        publisher.publish(orders, "order.created", {"n": 2})  # sent outside any request
        assert wait_until(lambda: len(seen) == 2)

    assert sorted(seen) == [(1, "req-42"), (2, None)]


def test_a_handler_that_keeps_failing_is_retried_then_its_message_kept_in_the_dead_letter_queue(
        broker, wait_until):
    orders, queue = broker.exchange("orders"), broker.queue("shipping")
    attempts: dict[str, list[int]] = {}

    def ship(message: Message) -> None:
        attempts.setdefault(message.body["order_id"], []).append(message.attempt)
        if message.body["order_id"] == "poison":
            raise ValueError("address missing")

    with broker.bus().consumer(queue, ship, (orders, "order.paid"), max_attempts=3, retry_delay=0.1):
        publisher = broker.bus()
        publisher.publish(orders, "order.paid", {"order_id": "poison"}, message_id="m-poison")
        publisher.publish(orders, "order.paid", {"order_id": "fine"})
        assert wait_until(lambda: broker.count(dead_letter_queue(queue)) == 1)
    
    assert attempts == {"poison": [1, 2, 3], "fine": [1]}
    [(properties, body)] = broker.take_all(dead_letter_queue(queue))
    assert properties.message_id == "m-poison"
    assert properties.delivery_mode == 2
    assert properties.headers[ATTEMPT] == 3
    assert properties.headers[LAST_ERROR] == "ValueError: address missing"
    assert json.loads(body) == {"order_id": "poison"}
    assert broker.count(queue) == broker.count(retry_queue(queue)) == 0


@pytest.mark.parametrize("failure, permanent", [
    (ServiceError(404, {"error": "no such user"}, "users", "GET", "/users/u-1"), True),
    (ServiceError(409, {"error": "taken"}, "users", "POST", "/users"), True),
    (PermanentError("the event has no order_id"), True),
    (ServiceError(503, {"error": "busy"}, "users", "GET", "/users/u-1"), False),
    (TimeoutError("users did not answer"), False),
], ids=["404", "409", "permanent-error", "503", "timeout"])
def test_a_permanent_failure_is_dead_lettered_at_once_a_transient_one_retried(
        broker, wait_until, failure, permanent):
    orders, queue = broker.exchange("orders"), broker.queue("receipts")
    attempts: list[int] = []

    def send_receipt(message: Message) -> None:
        attempts.append(message.attempt)
        raise failure

    with broker.bus().consumer(queue, send_receipt, (orders, "order.confirmed"), max_attempts=3,
                               retry_delay=0.1):
        broker.bus().publish(orders, "order.confirmed", {"order_id": "o-1"})
        assert wait_until(lambda: broker.count(dead_letter_queue(queue)) == 1)

    [(properties, _)] = broker.take_all(dead_letter_queue(queue))
    assert properties.headers[LAST_ERROR] == f"{type(failure).__name__}: {failure}"[:1000]
    if permanent:
        assert attempts == [1]
        assert properties.headers[DEAD_LETTER_REASON] == "permanent"
    else:
        assert attempts == [1, 2, 3]
        assert properties.headers[DEAD_LETTER_REASON] == "attempts exhausted (3)"


def test_a_handler_that_recovers_on_a_retry_is_acked_and_nothing_is_dead_lettered(
        broker, wait_until):
    orders, queue = broker.exchange("orders"), broker.queue("flaky")
    attempts: list[int] = []

    def flaky(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt < 3:
            raise ConnectionError("warehouse API blipped")

    with broker.bus().consumer(queue, flaky, (orders, "#"), max_attempts=5, retry_delay=0.1):
        broker.bus().publish(orders, "order.paid", {"order_id": "o-1"})
        assert wait_until(lambda: len(attempts) == 3)
        time.sleep(0.3)  # room for a wrong fourth delivery to show up

    assert attempts == [1, 2, 3]
    assert broker.count(dead_letter_queue(queue)) == 0


def test_a_body_that_is_not_json_goes_to_the_dead_letter_queue_at_once(broker, wait_until):
    orders, queue = broker.exchange("orders"), broker.queue("strict")
    handled: list[Message] = []

    with broker.bus().consumer(queue, handled.append, (orders, "#"), max_attempts=5):
        broker.publish_raw(orders, "order.created", b"{not json", message_id="m-garbled")
        assert wait_until(lambda: broker.count(dead_letter_queue(queue)) == 1)

    assert handled == []
    [(properties, body)] = broker.take_all(dead_letter_queue(queue))
    assert body == b"{not json"
    assert properties.headers[ATTEMPT] == 1
    assert properties.headers[LAST_ERROR].startswith("body is not JSON")


def test_an_event_no_queue_is_bound_to_is_parked_not_dropped(broker):
    products = broker.exchange("products")
    bus = broker.bus()

    bus.publish(products, "product.created", {"sku": "sku-1"}, message_id="m-lonely")

    [(properties, body)] = broker.take_all(unrouted_queue(products))
    assert properties.message_id == "m-lonely"
    assert json.loads(body) == {"sku": "sku-1"}
    bus.close()


def test_a_slow_handler_keeps_the_connection_alive_and_stop_waits_for_its_ack(
        broker, wait_until):
    """Heartbeat 1 s, handler 3.5 s: a handler on the connection's own thread would lose the
    connection (and get its message redelivered); ours runs on a worker thread."""
    orders, queue = broker.exchange("orders"), broker.queue("slow")
    started = threading.Event()
    handled: list[str] = []

    def slow_report(message: Message) -> None:
        started.set()
        time.sleep(3.5)
        handled.append(message.id)

    consumer = broker.bus(heartbeat=1).consumer(queue, slow_report, (orders, "#"), prefetch=5)
    consumer.start()
    publisher = broker.bus()
    ids = [publisher.publish(orders, "report.requested", {"n": n}) for n in range(3)]
    assert started.wait(20)

    stopping = time.monotonic()
    consumer.stop()
    stopped_after = time.monotonic() - stopping

    assert handled == ids[:1]  # the one in progress finished; the prefetched two were not started
    assert stopped_after > 1.5  # stop() waited for it
    assert not consumer.running
    assert consumer.connections == 1  # the heartbeat never lapsed
    assert wait_until(lambda: broker.count(queue) == 2)  # released, not lost, not acked twice

    with broker.bus().consumer(queue, lambda message: handled.append(message.id), (orders, "#")):
        assert wait_until(lambda: len(handled) == 3)
    assert handled == ids


def test_a_consumer_whose_connection_is_cut_reconnects_and_misses_nothing(
        broker, forwarder, amqp_url, wait_until):
    orders, queue = broker.exchange("orders"), broker.queue("resilient")
    received: set[str] = set()
    forwarder.open()
    consumer = broker.bus(forwarder.url(amqp_url)).consumer(
        queue, lambda message: received.add(message.id), (orders, "#"))
    publisher = broker.bus()

    with consumer:
        before = {publisher.publish(orders, "order.created", {"n": n}) for n in range(5)}
        assert wait_until(lambda: received >= before)
        forwarder.close()
        during = {publisher.publish(orders, "order.created", {"n": n}) for n in range(5, 10)}
        forwarder.open()
        assert wait_until(lambda: received >= before | during)

    assert received == before | during
    assert consumer.connections >= 2


def test_buses_in_different_namespaces_share_a_broker_without_seeing_each_other(
        broker, wait_until):
    buses = {}
    for colour in ("blue", "green"):
        # Named through the fixture, so its cleanup deletes them.
        broker.exchange(f"{colour}.orders")
        broker.exchange(f"{colour}.dead-letters")
        broker.queue(f"{colour}.billing")
        buses[colour] = Bus(broker.url, namespace=f"{broker.prefix}.{colour}", backoff=(0.05, 0.5))
    seen: dict[str, list[Message]] = {"blue": [], "green": []}
    try:
        with buses["blue"].consumer("billing", seen["blue"].append, ("orders", "order.*")), \
                buses["green"].consumer("billing", seen["green"].append, ("orders", "order.*")):
            buses["blue"].publish("orders", "order.created", {"colour": "blue"})
            assert wait_until(lambda: len(seen["blue"]) == 1)
            time.sleep(0.3)
    finally:
        for bus in buses.values():
            bus.close()
    assert seen["green"] == []
    assert seen["blue"][0].exchange == "orders"  # handlers see the logical name
    assert broker.count(f"{broker.prefix}.blue.billing") == 0
