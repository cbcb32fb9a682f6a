"""Fakes for the asynchronous patterns: a saga log in memory, a publisher that records, and a
pika connection that fails on cue. Injected through constructors, never monkeypatched."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from pika.exceptions import AMQPConnectionError

from patterns.saga import COMPENSATING, RUNNING, SagaRecord


class InMemorySagaLog:
    """A saga log in a dict; keeps every saved version so tests can replay the history."""

    def __init__(self) -> None:
        self.records: dict[str, SagaRecord] = {}
        self.history: list[SagaRecord] = []

    def create(self, record: SagaRecord) -> bool:
        if record.id in self.records:
            return False
        self.save(record)
        return True

    def load(self, saga_id: str) -> SagaRecord | None:
        record = self.records.get(saga_id)
        return copy.deepcopy(record) if record else None

    def save(self, record: SagaRecord) -> None:
        self.records[record.id] = copy.deepcopy(record)
        self.history.append(copy.deepcopy(record))

    def unfinished(self) -> list[SagaRecord]:
        return [copy.deepcopy(record) for record in self.records.values()
                if record.status in (RUNNING, COMPENSATING)]


class RecordingPublisher:
    """Publishes nowhere; remembers what it was asked to publish."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, exchange: str, routing_key: str, body: Any, *, message_id: str | None = None,
                headers: Mapping[str, Any] | None = None) -> str:
        self.published.append({"exchange": exchange, "routing_key": routing_key, "body": body,
                               "message_id": message_id, "headers": dict(headers or {})})
        return message_id or f"generated-{len(self.published)}"

    def close(self) -> None:
        pass


class FakeChannel:
    """A pika channel that records publishes; `fail_with` makes the next publishes raise."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.is_open = True

    def confirm_delivery(self) -> None:
        self.broker.calls.append(("confirm_delivery",))

    def exchange_declare(self, exchange: str, exchange_type: str, **kwargs: Any) -> None:
        self.broker.calls.append(("exchange_declare", exchange, exchange_type, kwargs))

    def queue_declare(self, queue: str, **kwargs: Any) -> None:
        self.broker.calls.append(("queue_declare", queue, kwargs))

    def queue_bind(self, queue: str, exchange: str, **kwargs: Any) -> None:
        self.broker.calls.append(("queue_bind", queue, exchange, kwargs))

    def basic_publish(self, exchange: str, routing_key: str, body: bytes, properties: Any) -> None:
        if self.broker.publish_errors:
            raise self.broker.publish_errors.pop(0)
        self.broker.published.append((exchange, routing_key, body, properties))


class FakeConnection:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.is_open = True

    def channel(self) -> FakeChannel:
        return FakeChannel(self.broker)

    def process_data_events(self, time_limit: float = 0) -> None:
        if self.broker.drop_idle_connections:
            self.is_open = False
            raise AMQPConnectionError("closed by the broker while idle")

    def close(self) -> None:
        self.is_open = False


class FakeBroker:
    """Hands out fake connections; refuses the first `refusals` connection attempts."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.connects = 0
        self.calls: list[tuple[Any, ...]] = []
        self.published: list[tuple[str, str, bytes, Any]] = []
        self.publish_errors: list[Exception] = []
        self.drop_idle_connections = False

    def connect(self, parameters: Any) -> FakeConnection:
        self.connects += 1
        if self.refusals:
            self.refusals -= 1
            raise AMQPConnectionError("connection refused")
        return FakeConnection(self)


@pytest.fixture(scope="session")
def make_saga_log() -> type[InMemorySagaLog]:
    """For tests that need several logs (Hypothesis examples each get a fresh one)."""
    return InMemorySagaLog


@pytest.fixture
def saga_log() -> InMemorySagaLog:
    return InMemorySagaLog()


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()
