"""Message bus over RabbitMQ (pika): events that are confirmed on publish and never dropped on failure.

Protects against the ways an event silently disappears between two services:

- the broker restarts: exchanges and queues are durable and messages persistent;
- the publisher thinks it sent a message the broker never took: `publish()` waits for the broker's
  confirm and raises `PublishError` otherwise, so the caller (or the outbox relay) tries again;
- nobody is listening yet: a message no queue is bound to goes to `<exchange>.unrouted` (the
  exchange's alternate exchange) instead of into the void;
- a handler fails: the message waits `retry_delay` in `<queue>.retry`, comes back, and after
  `max_attempts` failures goes to `<queue>.dead` through the dead-letter exchange, with the last
  error in its headers. A failure that retrying cannot fix goes there at once, its reason in the
  `dead-letter-reason` header (`permanent`, or `attempts exhausted (N)`): a body that is not JSON, a handler's `PermanentError` (e.g. an
  event missing a fact), or a peer that answered 400, 401, 403, 404, 409 or 422 (it refused the
  request; asking again gets the same answer). Timeouts, 5xx and lost connections are retried;
- the connection drops: publisher and consumer reconnect with exponential backoff and jitter; what
  the consumer had not acknowledged is redelivered, so handlers must tolerate duplicates (see
  `patterns.idempotency`);
- a slow handler: handlers run on a worker thread while the consumer's own thread keeps talking
  to the broker, so heartbeats are answered however long a handler takes (a pika connection only
  answers heartbeats while its thread calls into it).

Naming: one topic exchange per domain (`orders`, `payments`, ...), declared on first use; routing
keys name the event (`order.created`). A queue belongs to one consumer and may bind several
exchanges and patterns. A consumer calls its handler for one message at a time, in queue order (a
retried message rejoins at the back); run more consumers on a queue for more throughput.

    bus = Bus(settings.amqp_url)
    bus.publish("orders", "order.created", {"order_id": "o-1"})   # the message id, once confirmed
    with bus.consumer("email.orders", send_receipt, ("orders", "order.created")):
        ...                                                       # handled on a background thread

Limit: attempts are counted on the copies the bus republishes. A message whose handler kills
the whole process comes back from the broker uncounted (a quorum queue's `x-delivery-limit`
would count it; classic queues keep this lab simple).

Knobs: `heartbeat` (seconds), `publish_attempts` and `backoff` (first delay, cap) of publishes,
`headers_provider` (called on every publish, e.g. to add a `traceparent`), `namespace` (a
prefix on every exchange and queue name, so sandboxes sharing a broker stay apart), `clock` and
`rng` (the waits between reconnects use full jitter, `patterns.retry.full_jitter`), and per consumer
`prefetch`, `max_attempts`, `retry_delay`. Queue arguments are fixed when a queue is first
declared; to change them, delete the queue. pika connections are not thread-safe: the bus keeps
one publishing connection per thread, and each consumer owns one on its own thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import pika
from opentelemetry.trace import SpanKind
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import (AMQPChannelError, AMQPConnectionError, AMQPError, ChannelClosedByBroker,
                             NackError)

from patterns.clock import SYSTEM_CLOCK, Clock
from patterns.http import ServiceError
from patterns.logs import REQUEST_ID_HEADER, request_id_var
from patterns.retry import full_jitter
from patterns.tracing import span_from_message

log = logging.getLogger(__name__)

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
JSON = "application/json"
IDLE_WAIT = 2.0  # seconds a consumer waits for the broker before checking whether to stop
# Bookkeeping headers the bus adds to retried and dead-lettered copies.
ATTEMPT = "attempt"
LAST_ERROR = "last-error"
ORIGIN_EXCHANGE = "origin-exchange"
ORIGIN_ROUTING_KEY = "origin-routing-key"
DEAD_LETTER_REASON = "dead-letter-reason"  # "permanent: ..." or "attempts exhausted: ..."
# A peer's answers that mean "this request is wrong", not "try later".
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 409, 422})

Handler = Callable[["Message"], None]
Binding = tuple[str, str]  # (exchange, routing key pattern), e.g. ("orders", "order.*")


def unrouted_queue(exchange: str) -> str:
    return f"{exchange}.unrouted"


def retry_queue(queue: str) -> str:
    return f"{queue}.retry"


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead"


class Publisher(Protocol):
    """What the outbox relay and saga participants need from a bus (a fake in unit tests)."""

    def publish(self, exchange: str, routing_key: str, body: Any, *, message_id: str | None = None,
                headers: Mapping[str, Any] | None = None) -> str: ...

    def close(self) -> None:
        """Release the calling thread's connection."""


class PermanentError(Exception):
    """A handler's failure that retrying cannot fix: the message is dead-lettered at once."""


def is_permanent(error: BaseException) -> bool:
    """Will handling the same message again fail the same way?"""
    if isinstance(error, PermanentError):
        return True
    return isinstance(error, ServiceError) and error.status in PERMANENT_STATUSES


class PublishError(Exception):
    """The broker did not confirm a message. It may or may not have it: publish it again with
    the same message id and let consumers drop the duplicate."""


@dataclass(frozen=True)
class Message:
    """One delivered event, as a handler sees it."""

    id: str
    exchange: str
    routing_key: str
    body: Any
    headers: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1
    redelivered: bool = False


class Bus:
    """Publishes JSON events to topic exchanges and builds consumers for queues."""

    def __init__(self, url: str = DEFAULT_URL, *, heartbeat: int = 30, publish_attempts: int = 5,
                 backoff: tuple[float, float] = (0.2, 5.0), dead_letter_exchange: str = "dead-letters",
                 headers_provider: Callable[[], Mapping[str, Any]] | None = None,
                 namespace: str = "", clock: Clock = SYSTEM_CLOCK, rng: random.Random | None = None,
                 connect: Callable[[pika.ConnectionParameters], Any] = pika.BlockingConnection) -> None:
        self.parameters = pika.URLParameters(url)
        self.parameters.heartbeat = heartbeat
        self.parameters.blocked_connection_timeout = max(heartbeat, 10)
        self.publish_attempts = publish_attempts
        self.backoff = backoff
        self.dead_letter_exchange = dead_letter_exchange
        self.headers_provider = headers_provider
        self.namespace = namespace
        self.clock = clock
        self.rng = rng or random.Random()
        self._connect = connect
        self._local = threading.local()  # this thread's connection, channel, declared exchanges

    def publish(self, exchange: str, routing_key: str, body: Any, *, message_id: str | None = None,
                headers: Mapping[str, Any] | None = None) -> str:
        """Publish `body` as JSON and wait for the broker's confirm; returns the message id.

        Raises PublishError when the broker refuses the message or stays unreachable."""
        message_id = message_id or uuid.uuid4().hex
        exchange = self.physical(exchange)
        all_headers = {**(self.headers_provider() if self.headers_provider else {}), **(headers or {})}
        properties = pika.BasicProperties(
            message_id=message_id, content_type=JSON, delivery_mode=pika.DeliveryMode.Persistent,
            headers=all_headers, type=routing_key, timestamp=int(time.time()))
        payload = json.dumps(body).encode()
        for attempt in range(1, self.publish_attempts + 1):
            try:
                channel = self._channel()
                self._declare_exchange_once(channel, exchange)
                channel.basic_publish(exchange, routing_key, payload, properties)
                return message_id
            except (NackError, ChannelClosedByBroker) as error:  # an answer, not an outage
                self.close()
                raise PublishError(f"broker refused {message_id}: {error!r}") from error
            except (AMQPConnectionError, AMQPChannelError) as error:
                self.close()
                if attempt == self.publish_attempts:
                    raise PublishError(f"{message_id} not confirmed after {attempt} attempts: "
                                       f"{error!r}") from error
                delay = full_jitter(attempt - 1, *self.backoff, self.rng)
                log.warning("publish failed, reconnecting", extra={
                    "message_id": message_id, "error": repr(error), "retry_in": round(delay, 3)})
                self.clock.sleep(delay)
        raise AssertionError("unreachable")

    def consumer(self, queue: str, handler: Handler, *bindings: Binding, prefetch: int = 10,
                 max_attempts: int = 5, retry_delay: float = 1.0) -> Consumer:
        """A consumer of `queue` (bound to each (exchange, pattern) given); call `.start()`."""
        return Consumer(self, queue, handler, bindings, prefetch=prefetch,
                        max_attempts=max_attempts, retry_delay=retry_delay)

    def close(self) -> None:
        """Close the calling thread's publishing connection (others keep theirs)."""
        connection = getattr(self._local, "connection", None)
        self._local.__dict__.clear()
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except AMQPError:
                pass  # already gone: nothing left to release

    # Topology -------------------------------------------------------------------------------

    def physical(self, name: str) -> str:
        """The broker's name for an exchange or queue: prefixed by the namespace, if any, so
        several sandboxes (or test runs) can share one broker without seeing each other."""
        return f"{self.namespace}.{name}" if self.namespace and name else name

    def logical(self, name: str) -> str:
        """The name the code uses for a broker name (the inverse of `physical`)."""
        prefix = f"{self.namespace}."
        return name[len(prefix):] if self.namespace and name.startswith(prefix) else name

    def connect(self) -> Any:
        """One attempt at a new connection (callers retry with backoff)."""
        return self._connect(self.parameters)

    def declare_exchange(self, channel: BlockingChannel, exchange: str) -> None:
        """A durable topic exchange whose unroutable messages are kept in `<exchange>.unrouted`."""
        parking = unrouted_queue(exchange)
        channel.exchange_declare(parking, "fanout", durable=True)
        channel.queue_declare(parking, durable=True)
        channel.queue_bind(parking, parking)
        channel.exchange_declare(exchange, "topic", durable=True,
                                 arguments={"alternate-exchange": parking})

    def declare_queue(self, channel: BlockingChannel, queue: str, bindings: tuple[Binding, ...]) -> None:
        """A durable queue with its retry queue, its dead-letter queue and its bindings (all
        names logical: the namespace is added here)."""
        queue, dead_letters = self.physical(queue), self.physical(self.dead_letter_exchange)
        channel.exchange_declare(dead_letters, "direct", durable=True)
        channel.queue_declare(dead_letter_queue(queue), durable=True)
        channel.queue_bind(dead_letter_queue(queue), dead_letters, routing_key=queue)
        channel.queue_declare(queue, durable=True, arguments={
            "x-dead-letter-exchange": dead_letters, "x-dead-letter-routing-key": queue})
        # Messages wait in the retry queue until their expiration, then return to the queue.
        channel.queue_declare(retry_queue(queue), durable=True, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue})
        for exchange, pattern in bindings:
            self.declare_exchange(channel, self.physical(exchange))
            channel.queue_bind(queue, self.physical(exchange), routing_key=pattern)

    def _channel(self) -> BlockingChannel:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            try:
                connection.process_data_events(time_limit=0)  # notices a connection the broker closed
            except AMQPError:
                self.close()
        if getattr(self._local, "channel", None) is None or not self._local.channel.is_open:
            self.close()
            connection = self.connect()
            channel = connection.channel()
            channel.confirm_delivery()
            self._local.connection, self._local.channel = connection, channel
            self._local.exchanges = set()
        return self._local.channel

    def _declare_exchange_once(self, channel: BlockingChannel, exchange: str) -> None:
        if exchange and exchange not in self._local.exchanges:
            self.declare_exchange(channel, exchange)
            self._local.exchanges.add(exchange)


@dataclass
class _Delivery:
    channel: BlockingChannel
    tag: int
    properties: pika.BasicProperties
    body: bytes
    exchange: str
    routing_key: str
    redelivered: bool


class Consumer:
    """Consumes one queue on a background thread; `stop()` waits for the current message.

    Use as `with bus.consumer(...):` or call `start()` and `stop()`.
    """

    def __init__(self, bus: Bus, queue: str, handler: Handler, bindings: tuple[Binding, ...], *,
                 prefetch: int, max_attempts: int, retry_delay: float) -> None:
        self.bus, self.queue, self.handler, self.bindings = bus, queue, handler, bindings
        self.prefetch, self.max_attempts, self.retry_delay = prefetch, max_attempts, retry_delay
        self.connections = 0  # how many times it (re)connected: a number to watch in a chaos run
        self._stopping = threading.Event()
        self._stopped = False
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"handler-{queue}")
        self._unsettled = 0  # delivered to the worker, not yet acked; touched on our thread only
        self._last_error: Exception | None = None
        self._failures = 0  # consecutive failed connections, for the backoff
        self._connection: Any = None  # the consumer thread's connection, for stop() to wake it

    def start(self, timeout: float = 30.0) -> Consumer:
        """Start consuming; returns once the queue is declared and bound."""
        self._thread = threading.Thread(target=self._run, name=f"consumer-{self.queue}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"consumer of {self.queue} not ready within {timeout}s: "
                               f"{self._last_error!r}")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop taking messages, let the current one finish and be acked, close the connection.

        Messages prefetched but not started go back to the queue. A handler that published
        through this same bus did so on the handler thread's own connection: closed too."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self._worker.submit(self.bus.close).result(timeout)
        except RuntimeError:
            pass  # at interpreter exit the pool takes no more work; the process closes sockets
        self._worker.shutdown(wait=True)

    @property
    def running(self) -> bool:
        """True while the consumer's thread lives (consuming, or waiting to reconnect)."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Consumer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wake(self) -> None:
        """Make the consumer thread's wait for the broker return now (it checks for a stop)."""
        connection = self._connection
        if connection is not None:
            try:
                connection.add_callback_threadsafe(lambda: None)
            except Exception:  # closed meanwhile: the thread is leaving anyway
                pass

    # The consumer thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._consume_until_stopped()
            except AMQPError as error:
                self._last_error = error
                delay = full_jitter(self._failures, *self.bus.backoff, self.bus.rng)
                self._failures += 1
                log.warning("consumer lost its connection, reconnecting", extra={
                    "queue": self.queue, "error": repr(error), "retry_in": round(delay, 3)})
                self._stopping.wait(delay)

    def _consume_until_stopped(self) -> None:
        connection = self.bus.connect()
        self._connection = connection
        self.connections += 1
        self._unsettled = 0
        try:
            channel = connection.channel()
            channel.confirm_delivery()  # retried and dead-lettered copies are confirmed too
            self.bus.declare_queue(channel, self.queue, self.bindings)
            channel.basic_qos(prefetch_count=self.prefetch)
            tag = channel.basic_consume(self.bus.physical(self.queue),
                                        partial(self._on_message, connection))
            self._ready.set()
            self._failures = 0
            while not self._stopping.is_set():
                # A long wait costs nothing: deliveries, acks and stop() all end it at once.
                connection.process_data_events(time_limit=IDLE_WAIT)
            channel.basic_cancel(tag)
            while self._unsettled:
                connection.process_data_events(time_limit=0.2)
        finally:
            if connection.is_open:
                connection.close()

    def _on_message(self, connection: Any, channel: BlockingChannel, method: Any,
                    properties: pika.BasicProperties, body: bytes) -> None:
        delivery = _Delivery(channel, method.delivery_tag, properties, body, method.exchange,
                             method.routing_key, method.redelivered)
        self._unsettled += 1
        self._worker.submit(self._handle, connection, delivery)

    # The worker thread ----------------------------------------------------------------------

    def _handle(self, connection: Any, delivery: _Delivery) -> None:
        if self._stopping.is_set() or not connection.is_open:
            # Not started: back to the queue (a lost connection's messages come back anyway).
            outcome: tuple[str, str | None, str | None] = ("release", None, None)
        else:
            outcome = self._apply(delivery)
        try:
            connection.add_callback_threadsafe(partial(self._settle, delivery, *outcome))
        except AMQPError:
            log.warning("connection gone before the ack; the broker will redeliver", extra={
                "queue": self.queue, "message_id": delivery.properties.message_id})

    def _apply(self, delivery: _Delivery) -> tuple[str, str | None, str | None]:
        """(verdict, the error, why it is dead-lettered) for one delivery."""
        headers = dict(delivery.properties.headers or {})
        try:
            body = json.loads(delivery.body)
        except ValueError as error:
            return "dead-letter", f"body is not JSON: {error}", "permanent"
        message = Message(
            # A message from a publisher that set no id is identified by its content.
            id=delivery.properties.message_id or hashlib.sha256(delivery.body).hexdigest(),
            exchange=self.bus.logical(headers.get(ORIGIN_EXCHANGE, delivery.exchange)),
            routing_key=headers.get(ORIGIN_ROUTING_KEY, delivery.routing_key),
            body=body, headers=headers, attempt=int(headers.get(ATTEMPT, 1)),
            redelivered=delivery.redelivered)
        # The handler runs on this worker thread: give it the publisher's trace and request id,
        # so its log lines, calls and events follow the request that caused the message.
        request_id = request_id_var.set(headers.get(REQUEST_ID_HEADER))
        try:
            with span_from_message(headers, f"{message.routing_key} process",
                                   attributes={"messaging.message.id": message.id}):
                self.handler(message)
            return "ack", None, None
        except Exception as error:  # retried, then kept in the dead-letter queue
            permanent = is_permanent(error)
            log.warning("handler failed", exc_info=True, extra={
                "queue": self.queue, "message_id": message.id, "attempt": message.attempt,
                "permanent": permanent})
            described = f"{type(error).__name__}: {error}"
            if permanent:
                return "dead-letter", described, "permanent"
            if message.attempt < self.max_attempts:
                return "retry", described, None
            return "dead-letter", described, f"attempts exhausted ({message.attempt})"
        finally:
            request_id_var.reset(request_id)

    # Back on the consumer thread ------------------------------------------------------------

    def _settle(self, delivery: _Delivery, verdict: str, error: str | None,
                reason: str | None) -> None:
        self._unsettled -= 1
        channel = delivery.channel
        if not channel.is_open:
            return  # the broker redelivers it on the next connection
        attempt = int((delivery.properties.headers or {}).get(ATTEMPT, 1))
        if verdict == "retry":
            self._copy(delivery, "", retry_queue(self.bus.physical(self.queue)), attempt + 1, error,
                       expiration=str(int(self.retry_delay * 1000)))
        elif verdict == "dead-letter":
            log.error("message dead-lettered", extra={
                "queue": self.queue, "message_id": delivery.properties.message_id, "error": error,
                "reason": reason})
            self._copy(delivery, self.bus.physical(self.bus.dead_letter_exchange),
                       self.bus.physical(self.queue), attempt, error, reason=reason)
        if verdict == "release":
            channel.basic_nack(delivery.tag, requeue=True)
        else:
            channel.basic_ack(delivery.tag)

    def _copy(self, delivery: _Delivery, exchange: str, routing_key: str, attempt: int,
              error: str | None, expiration: str | None = None,
              reason: str | None = None) -> None:
        """Publish a confirmed copy carrying the attempt count and the error (the original is
        acked only afterwards, so a crash in between leaves a duplicate, never a loss)."""
        old = delivery.properties
        headers = dict(old.headers or {})
        headers.setdefault(ORIGIN_EXCHANGE, delivery.exchange)
        headers.setdefault(ORIGIN_ROUTING_KEY, delivery.routing_key)
        headers[ATTEMPT] = attempt
        headers[LAST_ERROR] = (error or "")[:1000]
        if reason:
            headers[DEAD_LETTER_REASON] = reason
        properties = pika.BasicProperties(
            message_id=old.message_id, content_type=old.content_type, type=old.type,
            timestamp=old.timestamp, delivery_mode=pika.DeliveryMode.Persistent,
            headers=headers, expiration=expiration)
        # Publishing inside the original trace keeps the copy in it (pika's instrumentation
        # would otherwise stamp the copy with a new trace).
        with span_from_message(old.headers, f"{routing_key} retry", kind=SpanKind.PRODUCER):
            delivery.channel.basic_publish(exchange, routing_key, delivery.body, properties)
