"""Transactional outbox: a state change and the event announcing it are saved together or not at all.

Protects against the dual write. A service that saves to MongoDB and then publishes to RabbitMQ
loses the event when it crashes, or the broker is down, between the two; one that publishes first
announces changes that never happened. Here the service only writes to MongoDB, and a relay
publishes afterwards:

- `Outbox.insert(document, *events)` / `Outbox.update(filter, update, *events)` append the events
  to the document's own `outbox` array in the same single-document write as the change. MongoDB
  applies one document's update atomically, so the change and its events exist together or not
  at all.
- `OutboxRelay(bus, *outboxes)` publishes pending events with publisher confirms and removes them
  only after the broker confirmed them (one write per document). A write with events wakes the
  relay of the same process at once; it also looks every `interval` seconds, for what an earlier
  process left behind. Broker down: `relay_once()` raises `PublishError`, the
  background relay waits (backing off) and tries again; the events wait in MongoDB meanwhile.
  Relay dies between the confirm and the removal: the event goes out again with the same message
  id and consumers drop the duplicate (`patterns.idempotency`). At least once, never lost.
- Order: one document's events go out in the order they were written, and a failure stops that
  document's queue, so they never overtake each other (a consumer sees that order too, unless it
  retries one). Documents are independent of each other.

Why the document carries its own outbox rather than a separate `outbox` collection: writing two
collections atomically needs a multi-document transaction, which the embedded MongoDB of local
mode (nx-27017) does not have and a real MongoDB only offers on a replica set. The price: the
relay must be told which collections have outboxes, and a document must not be deleted while it
has pending events (mark it deleted instead).

Stored form: each pending event is one JSON string in `outbox` (exactly what will be published),
plus a counter `outbox_pending` the relay looks for. nx-27017 turns embedded documents appended
with `$push` into strings on its own, and cannot query `{"outbox.0": {"$exists": true}}`; strings
and a counter behave the same on both servers.

Knobs: `headers_provider` on `Outbox` (captured when the event is written, so a trace context
follows the request that caused the event, not the relay), relay `interval` (seconds between
passes when nothing wakes it), `linger` (how long a woken relay lets other writes join its pass), `batch` (documents per pass) and `backoff` (first and longest wait while the
broker is unreachable). Run one relay per collection: two relays would publish some events twice
(harmless to idempotent consumers, but noisy).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from opentelemetry.trace import SpanKind
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from patterns.bus import Publisher, PublishError
from patterns.retry import full_jitter
from patterns.tracing import span_from_message

log = logging.getLogger(__name__)

OUTBOX = "outbox"
PENDING = "outbox_pending"


@dataclass(frozen=True)
class Event:
    """An event to publish: where to (exchange, routing key), what, and its message id."""

    exchange: str
    routing_key: str
    payload: Mapping[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    headers: Mapping[str, Any] = field(default_factory=dict)


class Outbox:
    """A collection whose documents carry the events that announce their changes."""

    def __init__(self, collection: Collection,
                 headers_provider: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.collection = collection
        self.headers_provider = headers_provider
        self._listeners: list[Callable[[], None]] = []
        collection.create_index(PENDING)

    def on_write(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every write that added events (how the relay is woken)."""
        self._listeners.append(listener)

    def insert(self, document: Mapping[str, Any], *events: Event) -> Any:
        """Insert a new document together with its events; returns its _id."""
        if OUTBOX in document or PENDING in document:
            raise ValueError(f"{OUTBOX!r} and {PENDING!r} belong to the outbox")
        stored = self._serialize(events)
        inserted = self.collection.insert_one(
            {**document, OUTBOX: stored, PENDING: len(stored)}).inserted_id
        self._written(stored)
        return inserted

    def update(self, filter: Mapping[str, Any], update: Mapping[str, Any], *events: Event) -> bool:
        """Apply `update` to one document and append the events in the same write.

        Returns False, writing nothing, when no document matches `filter` — so a conditional
        update (e.g. `{"available": {"$gte": 2}}`) emits its event only if it happened."""
        stored = self._serialize(events)
        push = dict(update.get("$push", {}))
        increment = dict(update.get("$inc", {}))
        if OUTBOX in push or PENDING in increment:
            raise ValueError(f"{OUTBOX!r} and {PENDING!r} belong to the outbox")
        push[OUTBOX] = {"$each": stored}
        increment[PENDING] = len(stored)
        result = self.collection.update_one(filter, {**update, "$push": push, "$inc": increment})
        if result.matched_count != 1:
            return False
        self._written(stored)
        return True

    def pending(self) -> int:
        """How many events wait to be published."""
        return sum(len(doc.get(OUTBOX, [])) for doc in
                   self.collection.find({PENDING: {"$gt": 0}}, {OUTBOX: 1}))

    def _written(self, stored: list[str]) -> None:
        if stored:
            for listener in self._listeners:
                listener()

    def _serialize(self, events: tuple[Event, ...]) -> list[str]:
        context = dict(self.headers_provider()) if self.headers_provider else {}
        return [json.dumps({"id": event.id, "exchange": event.exchange,
                            "routing_key": event.routing_key, "payload": dict(event.payload),
                            "headers": {**context, **event.headers}}, sort_keys=True)
                for event in events]


class OutboxRelay:
    """Publishes what the outboxes hold: `relay_once()` by hand, or `start()` a background thread."""

    def __init__(self, bus: Publisher, *outboxes: Outbox, interval: float = 5.0,
                 linger: float = 0.05, batch: int = 100,
                 backoff: tuple[float, float] = (0.5, 10.0), rng: random.Random | None = None) -> None:
        self.bus = bus
        self.outboxes = outboxes
        self.interval = interval
        self.linger = linger
        self.batch = batch
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.published = 0  # since start, across passes: a number to watch in a chaos run
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self._wake_lock = threading.Lock()
        self._written: set[int] = set()  # indexes of the outboxes written since the last pass
        for index, outbox in enumerate(outboxes):
            outbox.on_write(partial(self._wake, index))
        self._thread: threading.Thread | None = None

    def relay_once(self, outboxes: Sequence[Outbox] | None = None) -> int:
        """Publish pending events, oldest first per document; returns how many went out.
        Looks in `outboxes`, by default every one.

        Raises PublishError when the broker does not confirm; the unconfirmed event and those
        after it in its document stay pending."""
        sent = 0
        for outbox in self.outboxes if outboxes is None else outboxes:
            documents = outbox.collection.find({PENDING: {"$gt": 0}}, {OUTBOX: 1}).limit(self.batch)
            for document in documents:
                if self._stopping.is_set():
                    return sent
                confirmed: list[str] = []
                try:
                    for stored in document.get(OUTBOX, []):
                        event = json.loads(stored)
                        # Published in the trace of the request that wrote the event.
                        with span_from_message(event["headers"], f"relay {event['routing_key']}",
                                               kind=SpanKind.PRODUCER):
                            self.bus.publish(event["exchange"], event["routing_key"],
                                             event["payload"], message_id=event["id"],
                                             headers=event["headers"])
                        confirmed.append(stored)
                finally:  # what the broker confirmed leaves the outbox, even if a later one failed
                    if confirmed:
                        outbox.collection.update_one(
                            {"_id": document["_id"], OUTBOX: {"$all": confirmed}},
                            {"$pull": {OUTBOX: {"$in": confirmed}},
                             "$inc": {PENDING: -len(confirmed)}})
                        sent += len(confirmed)
                        self.published += len(confirmed)
        return sent

    def start(self) -> OutboxRelay:
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the document being relayed, then stop."""
        self._stopping.set()
        self._woken.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> OutboxRelay:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wake(self, index: int) -> None:
        with self._wake_lock:
            self._written.add(index)
            self._woken.set()

    def _run(self) -> None:
        failures = 0
        everywhere = True  # the first pass looks for what an earlier process left
        try:
            while not self._stopping.is_set():
                with self._wake_lock:  # before the pass: a write during it wakes the next one
                    written, self._written = self._written, set()
                    self._woken.clear()
                try:
                    sent = self.relay_once(None if everywhere else
                                           [self.outboxes[index] for index in sorted(written)])
                except (PublishError, PyMongoError) as error:
                    delay = full_jitter(failures, *self.backoff, self.rng)
                    failures += 1
                    log.warning("outbox relay failed, will retry", extra={
                        "error": str(error), "retry_in": round(delay, 3)})
                    self._stopping.wait(delay)
                    everywhere = True
                    continue
                failures = 0
                # A full batch: more may be waiting. Otherwise a write wakes a pass over the
                # outboxes written, and with none for `interval` seconds all are looked at.
                everywhere = sent >= self.batch or not self._woken.wait(self.interval)
                if not everywhere:
                    # The rest of a burst of writes joins this pass instead of each write
                    # paying for a pass of its own.
                    self._stopping.wait(self.linger)
        finally:
            self.bus.close()  # the connection the bus opened for this thread
