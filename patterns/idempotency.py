"""Idempotent consumer: a message that arrives twice changes things once.

Protects against duplicates, which at-least-once delivery promises you will get: the broker
redelivers whatever was not acked when a connection dropped, the outbox relay republishes an
event whose removal it did not get to record, a publisher retries a publish whose confirm was
lost. Each copy keeps its message id, so the consumer can recognise it.

Two tools, from coarse to exact:

- `ProcessedMessages(collection, consumer)` records handled message ids, one document per
  (consumer, message id) under a unique index; `idempotent(handler, processed)` wraps a bus
  handler so a recorded message is acked and skipped, and a new one is handled, then recorded.
  Residual window: the effect and the record are two writes (the embedded MongoDB has no
  multi-document transactions, and a remote effect could not join one anyway). A process that
  dies after the effect and before the record applies that message again on redelivery. Two
  copies handled at the same moment (possible only when a connection dropped mid-handler) can
  both pass the check; the unique index still keeps one record.
- `apply_once(collection, filter, update, message_id)` closes the window for an effect that is
  one document update: the message id is added to that document's `applied_messages` in the
  same atomic write, and the write is guarded by `$nin`, so the effect and its record cannot be
  separated. For a remote effect, pass `message.id` as the call's idempotency key instead.
  The array grows by one id per message applied to that document: fine at the lab's volumes;
  on a real MongoDB, cap it with `$push`/`$slice` beyond the redelivery horizon.

Knobs: the consumer name (records are per consumer, so two services each handle an event once)
and the collection. Records are kept; `processed_at` lets an operator (or a TTL index on a real
MongoDB) expire them after the longest redelivery delay that matters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from patterns.bus import Handler, Message

log = logging.getLogger(__name__)

APPLIED = "applied_messages"


class ProcessedMessages:
    """The message ids one consumer has handled, in MongoDB."""

    def __init__(self, collection: Collection, consumer: str,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.collection = collection
        self.consumer = consumer
        self.now = now
        collection.create_index([("consumer", 1), ("message_id", 1)], unique=True)

    def seen(self, message_id: str) -> bool:
        # find_one, not count_documents: the embedded server runs counts as slow aggregations.
        return self.collection.find_one(
            {"consumer": self.consumer, "message_id": message_id}, {"_id": 1}) is not None

    def remember(self, message_id: str) -> bool:
        """Record a handled message; False if it was recorded already."""
        try:
            self.collection.insert_one({"consumer": self.consumer, "message_id": message_id,
                                        "processed_at": self.now()})
            return True
        except DuplicateKeyError:
            return False


def idempotent(handler: Handler, processed: ProcessedMessages) -> Handler:
    """Wrap a bus handler so each message id is handled once per consumer."""

    @wraps(handler)
    def handle_once(message: Message) -> None:
        if processed.seen(message.id):
            log.info("duplicate message skipped", extra={
                "consumer": processed.consumer, "message_id": message.id})
            return
        handler(message)
        processed.remember(message.id)

    return handle_once


def apply_once(collection: Collection, filter: Mapping[str, Any], update: Mapping[str, Any],
               message_id: str) -> bool:
    """Apply `update` to the document matching `filter` unless it already carries message_id.

    One atomic write does both the change and the record. Returns True if this call applied
    it; False if the message was applied before or `filter` matched nothing."""
    push = dict(update.get("$push", {}))
    if APPLIED in push:
        raise ValueError(f"{APPLIED!r} belongs to apply_once")
    push[APPLIED] = message_id
    guarded = {**filter, APPLIED: {"$nin": [message_id]}}
    return collection.update_one(guarded, {**update, "$push": push}).modified_count == 1
