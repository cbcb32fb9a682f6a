"""Dead letters, for instructors: see what was parked and why, send it back, or throw it away.

    microlab dlq list                      # every dead-letter queue of the sandbox, with counts
    microlab dlq show email.events         # its messages: id, event, attempts, reason, error
    microlab dlq replay email.events       # back to email.events, attempts counted from 1
    microlab dlq purge email.events

Queues are named as the code names them (`email.events`); the sandbox's namespace is added
here. A message lands in `<queue>.dead` after its retries ran out or at once when retrying
cannot help (patterns.bus); replay it once the cause is fixed (users back, a bug deployed).
`show` reads without taking: every message goes back where it was, in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pika
from pika.adapters.blocking_connection import BlockingChannel

from microlab.checker import CONSUMER_QUEUES
from patterns.bus import (ATTEMPT, DEAD_LETTER_REASON, LAST_ERROR, ORIGIN_ROUTING_KEY,
                          dead_letter_queue)


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    event: str
    attempts: int
    reason: str
    error: str
    body: bytes


class DeadLetters:
    def __init__(self, amqp_url: str, namespace: str = "") -> None:
        self.amqp_url = amqp_url
        self.namespace = namespace

    def physical(self, queue: str) -> str:
        return f"{self.namespace}.{queue}" if self.namespace else queue

    @contextmanager
    def _channel(self) -> Iterator[BlockingChannel]:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            yield connection.channel()
        finally:
            connection.close()

    def counts(self, queues: tuple[str, ...] = CONSUMER_QUEUES) -> dict[str, int]:
        """Messages in each consumer queue's dead-letter queue (queues not declared: left out)."""
        found = {}
        with self._channel() as channel:
            for queue in queues:
                try:
                    declared = channel.queue_declare(dead_letter_queue(self.physical(queue)),
                                                     passive=True)
                except pika.exceptions.ChannelClosedByBroker:
                    channel = channel.connection.channel()  # a 404 closes the channel
                    continue
                found[queue] = declared.method.message_count
        return found

    def show(self, queue: str) -> list[DeadLetter]:
        """Every dead letter of `queue`, oldest first, left in place."""
        letters = []
        with self._channel() as channel:
            dead = dead_letter_queue(self.physical(queue))
            while True:
                method, properties, body = channel.basic_get(dead)
                if method is None:
                    break
                headers = properties.headers or {}
                letters.append(DeadLetter(
                    properties.message_id, str(headers.get(ORIGIN_ROUTING_KEY, "?")),
                    int(headers.get(ATTEMPT, 1)), str(headers.get(DEAD_LETTER_REASON, "")),
                    str(headers.get(LAST_ERROR, "")), body))
            # Unacked messages go back to the queue, in their order, when the channel closes.
        return letters

    def replay(self, queue: str) -> int:
        """Move every dead letter back to `queue` with a fresh attempt count; returns how many."""
        moved = 0
        with self._channel() as channel:
            channel.confirm_delivery()
            target = self.physical(queue)
            while True:
                method, properties, body = channel.basic_get(dead_letter_queue(target))
                if method is None:
                    return moved
                headers = {key: value for key, value in (properties.headers or {}).items()
                           if key not in (ATTEMPT, LAST_ERROR, DEAD_LETTER_REASON)}
                properties.headers = headers
                channel.basic_publish("", target, body, properties)  # confirmed
                channel.basic_ack(method.delivery_tag)  # only once the copy is safe
                moved += 1

    def purge(self, queue: str) -> int:
        with self._channel() as channel:
            return channel.queue_purge(dead_letter_queue(self.physical(queue))).method.message_count
