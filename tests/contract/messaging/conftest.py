"""Fixtures of the messaging contract: the real RabbitMQ at AMQP_URL and a MongoDB.

- MongoDB: MONGO_URL if set, else one embedded nx-27017 for the session in a temporary
  directory; each test gets a database of its own, dropped afterwards.
- RabbitMQ: every exchange and queue a test uses is named under a prefix unique to the run and
  the test (`names.exchange("orders")`), and deleted afterwards with the retry, dead-letter and
  unrouted queues the bus derives from it.
- `Forwarder`: a TCP forwarder to the broker on a loopback port of its own, to cut the path to
  the broker and restore it on cue (a port nobody listens on is a broker that is down).
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from pika.exceptions import AMQPError
from pymongo import MongoClient
from pymongo.database import Database

from patterns.bus import Bus, dead_letter_queue, retry_queue, unrouted_queue

RUN = uuid.uuid4().hex[:6]


def _wait_until(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.fixture(scope="session")
def wait_until() -> Callable[..., bool]:
    """Poll until condition() is true; generous timeouts, since other suites share the CPU."""
    return _wait_until


@pytest.fixture(scope="session")
def mongo_client(mongo_url: str) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


def _slug(request: pytest.FixtureRequest, length: int) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", request.node.name.removeprefix("test_"))[:length]


@pytest.fixture
def db(mongo_client: MongoClient, request: pytest.FixtureRequest) -> Iterator[Database]:
    name = f"msg_{_slug(request, 40)}_{uuid.uuid4().hex[:8]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


class Broker:
    """Names unique to one test, a plain pika channel to inspect queues, and the cleanup."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.dead_letter_exchange = f"{prefix}.dead-letters"
        self._exchanges: set[str] = set()
        self._queues: set[str] = set()
        self._buses: list[Bus] = []
        try:
            self._connection = pika.BlockingConnection(pika.URLParameters(url))
        except AMQPError as error:
            pytest.fail(f"the messaging contract needs the RabbitMQ at {url} ({error!r}); "
                        "start it or set AMQP_URL")
        self._channel = self._connection.channel()

    def exchange(self, name: str) -> str:
        full = f"{self.prefix}.{name}"
        self._exchanges.add(full)
        return full

    def queue(self, name: str) -> str:
        full = f"{self.prefix}.{name}"
        self._queues.add(full)
        return full

    def bus(self, url: str | None = None, **knobs: Any) -> Bus:
        knobs.setdefault("backoff", (0.05, 0.5))
        bus = Bus(url or self.url, dead_letter_exchange=self.dead_letter_exchange, **knobs)
        self._buses.append(bus)
        return bus

    def count(self, queue: str) -> int:
        """Messages ready in a queue (not those delivered and unacked)."""
        return self._channel.queue_declare(queue, passive=True).method.message_count

    def take_all(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        taken = []
        while True:
            method, properties, body = self._channel.basic_get(queue, auto_ack=True)
            if method is None:
                return taken
            taken.append((properties, body))

    def publish_raw(self, exchange: str, routing_key: str, body: bytes, **properties: Any) -> None:
        self._channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(**properties))

    def delete_everything(self) -> None:
        for bus in self._buses:
            bus.close()  # the test thread's publishing connections
        queues = set()
        for queue in self._queues:
            queues |= {queue, retry_queue(queue), dead_letter_queue(queue)}
        queues |= {unrouted_queue(exchange) for exchange in self._exchanges}
        exchanges = self._exchanges | {unrouted_queue(e) for e in self._exchanges}
        exchanges.add(self.dead_letter_exchange)
        for queue in sorted(queues):
            self._channel.queue_delete(queue)
        for exchange in sorted(exchanges):
            self._channel.exchange_delete(exchange)
        self._connection.close()


@pytest.fixture
def broker(amqp_url: str, request: pytest.FixtureRequest) -> Iterator[Broker]:
    broker = Broker(amqp_url, f"mlt-{RUN}-{_slug(request, 30)}")
    yield broker
    broker.delete_everything()


class Forwarder:
    """Forwards a loopback port to the broker while open; closed, the port refuses connections."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:  # a port nobody listens on until open()
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def url(self, amqp_url: str) -> str:
        parts = pika.URLParameters(amqp_url)
        return f"amqp://{parts.credentials.username}:{parts.credentials.password}@127.0.0.1:{self.port}/"

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """Stop listening and cut every forwarded connection."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def forwarder(amqp_url: str) -> Iterator[Forwarder]:
    parts = pika.URLParameters(amqp_url)
    forwarder = Forwarder((parts.host, parts.port))
    yield forwarder
    forwarder.close()


@pytest.fixture(scope="session")
def worker_script() -> Path:
    return Path(__file__).with_name("saga_crash_worker.py")
