"""Publishing over a fake pika connection: message properties, declarations, reconnect backoff."""

from __future__ import annotations

import json
import random

import pytest
from pika.exceptions import NackError, StreamLostError

from patterns.bus import Bus, PublishError
from patterns.clock import FakeClock


def make_bus(broker, clock=None, **knobs) -> Bus:
    return Bus("amqp://guest:guest@127.0.0.1:5672/", connect=broker.connect,
               clock=clock or FakeClock(), rng=random.Random(7), **knobs)


def test_a_message_is_persistent_json_with_an_id_and_the_merged_headers(broker):
    bus = make_bus(broker, headers_provider=lambda: {"traceparent": "00-abc-def-01", "team": "a"})

    message_id = bus.publish("orders", "order.created", {"order_id": "o-1"},
                             headers={"team": "b"})

    [(exchange, routing_key, body, properties)] = broker.published
    assert (exchange, routing_key) == ("orders", "order.created")
    assert json.loads(body) == {"order_id": "o-1"}
    assert properties.message_id == message_id and len(message_id) == 32
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.headers == {"traceparent": "00-abc-def-01", "team": "b"}


def test_the_channel_uses_confirms_and_declares_each_exchange_once(broker):
    bus = make_bus(broker)
    bus.publish("orders", "order.created", {}, message_id="m-1")
    bus.publish("orders", "order.paid", {}, message_id="m-2")

    assert broker.calls.count(("confirm_delivery",)) == 1
    declared = [call[1:3] for call in broker.calls if call[0] == "exchange_declare"]
    assert declared == [("orders.unrouted", "fanout"), ("orders", "topic")]
    [topic] = [call for call in broker.calls if call[:2] == ("exchange_declare", "orders")]
    assert topic[3]["arguments"] == {"alternate-exchange": "orders.unrouted"}


def test_an_unreachable_broker_is_retried_with_growing_jittered_waits(broker):
    broker.refusals = 3
    clock = FakeClock()
    bus = make_bus(broker, clock, publish_attempts=5, backoff=(0.1, 10.0))

    bus.publish("orders", "order.created", {})

    assert broker.connects == 4
    assert len(clock.slept) == 3
    for retry_number, waited in enumerate(clock.slept):
        assert 0 <= waited <= 0.1 * 2**retry_number


def test_giving_up_raises_publish_error_after_the_last_attempt(broker):
    broker.refusals = 100
    clock = FakeClock()
    bus = make_bus(broker, clock, publish_attempts=3)

    with pytest.raises(PublishError, match="not confirmed after 3 attempts"):
        bus.publish("orders", "order.created", {})
    assert broker.connects == 3
    assert len(clock.slept) == 2


def test_a_nack_is_an_answer_and_is_not_retried(broker):
    broker.publish_errors = [NackError([])]
    clock = FakeClock()
    bus = make_bus(broker, clock)

    with pytest.raises(PublishError, match="refused"):
        bus.publish("orders", "order.created", {}, message_id="m-1")
    assert broker.published == []
    assert clock.slept == []


def test_a_lost_stream_mid_publish_reconnects_and_publishes_again(broker):
    broker.publish_errors = [StreamLostError("reset by peer")]
    bus = make_bus(broker)

    bus.publish("orders", "order.created", {}, message_id="m-1")

    assert broker.connects == 2
    assert [properties.message_id for *_, properties in broker.published] == ["m-1"]


def test_a_connection_the_broker_closed_while_idle_is_replaced_without_waiting(broker):
    clock = FakeClock()
    bus = make_bus(broker, clock)
    bus.publish("orders", "order.created", {})
    broker.drop_idle_connections = True

    bus.publish("orders", "order.created", {})

    assert broker.connects == 2
    assert clock.slept == []
