"""Sagas: one business transaction across services, kept consistent by compensation, not locks.

Protects against half-done work. Placing an order reserves stock (inventory), charges the card
(payments) and confirms the order (orders): three services, three databases, no transaction
spanning them. If the charge fails the stock must be released, and if the coordinator crashes
halfway someone must finish the job after the restart.

Orchestration — `SagaOrchestrator` runs a `Saga`'s steps in order:

- a `Step` is an action and, optionally, the compensation that undoes it;
- the saga log (`MongoSagaLog`, one document per saga) is written before the first step and after
  every step: each step is pending, done, failed, uncertain or compensated, and the saga running,
  completed, compensating or compensated (the last step's write also marks it completed);
- when an action raises, its step is marked failed and the steps done so far are compensated in
  reverse order;
- every action gets a stable idempotency key, `<saga id>:<step>` (compensations
  `<saga id>:<step>:undo`). Pass it to the remote call: a step repeated after a crash is then
  applied once by the service it calls;
- `recover()`, called at start-up, finishes what a crash interrupted: a running saga goes on
  from its first step not done (that step may run a second time — its key makes it harmless), a
  compensating one goes on compensating;
- a compensation that raises leaves the saga `compensating` for the next `recover()`, so
  compensations must succeed eventually (retry them) and accept "nothing to undo".

An action that raises must have changed nothing, because failed steps are not compensated —
unless its step's `may_have_applied(error)` says otherwise: a remote call that timed out or lost
its answer may have taken effect all the same. That step is marked `uncertain` and compensated
with the rest; its compensation must find out for itself what, if anything, there is to undo
(ask the peer with the step's idempotency key; raise while it can't tell, so the next
`recover()` asks again).

Choreography — no coordinator: each service's `Participant` reacts to events and announces the
outcome with a new event; a failure event makes the earlier participants run their compensations
(e.g. `payment.failed` → inventory releases the stock). Reactions must be idempotent on the
message id; the outcome event's id is derived from the triggering message, so a redelivery
announces the same outcome under the same id and downstream drops the copy.

Knobs: the log (anything with `SagaLog`'s four methods: `MongoSagaLog`, or a fake in tests) and
`now` for the log's timestamps. Run one orchestrator process per saga log: recovery assumes no
one else is driving the same sagas.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from patterns.bus import Message, Publisher

log = logging.getLogger(__name__)

# Step states.
PENDING, DONE, FAILED, COMPENSATED = "pending", "done", "failed", "compensated"
UNCERTAIN = "uncertain"  # failed, but may have taken effect: compensated like a done step
# Saga statuses (COMPENSATED too).
RUNNING, COMPLETED, COMPENSATING = "running", "completed", "compensating"


@dataclass(frozen=True)
class StepContext:
    """What an action or a compensation is given."""

    saga_id: str
    step: str
    data: Mapping[str, Any]  # the saga's input plus what earlier actions returned
    idempotency_key: str


@dataclass(frozen=True)
class Step:
    """An action (may return a mapping merged into the saga's data) and how to undo it."""

    name: str
    action: Callable[[StepContext], Mapping[str, Any] | None]
    compensation: Callable[[StepContext], None] | None = None
    # Given the action's exception, could it have taken effect anyway (a lost answer)?
    may_have_applied: Callable[[Exception], bool] | None = None


@dataclass(frozen=True)
class Saga:
    name: str
    steps: Sequence[Step]

    def __post_init__(self) -> None:
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique in saga {self.name!r}: {names}")


@dataclass
class SagaRecord:
    """One saga's entry in the log: its status, its data and the state of each step."""

    id: str
    saga: str
    status: str
    data: dict[str, Any]
    steps: dict[str, str]  # step name -> state, in step order
    error: str | None = None


class SagaLog(Protocol):
    def create(self, record: SagaRecord) -> bool:
        """Store a new saga; False if one with this id exists."""

    def load(self, saga_id: str) -> SagaRecord | None: ...

    def save(self, record: SagaRecord) -> None:
        """Replace the saga's entry with `record` in one write."""

    def unfinished(self) -> list[SagaRecord]:
        """Sagas running or compensating."""


class MongoSagaLog:
    """The saga log in a MongoDB collection, one document per saga."""

    def __init__(self, collection: Collection,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.collection = collection
        self.now = now
        collection.create_index("status")

    def create(self, record: SagaRecord) -> bool:
        try:
            self.collection.insert_one(self._document(record))
            return True
        except DuplicateKeyError:
            return False

    def load(self, saga_id: str) -> SagaRecord | None:
        document = self.collection.find_one({"_id": saga_id})
        return self._record(document) if document else None

    def save(self, record: SagaRecord) -> None:
        self.collection.replace_one({"_id": record.id}, self._document(record))

    def unfinished(self) -> list[SagaRecord]:
        return [self._record(document) for document in
                self.collection.find({"status": {"$in": [RUNNING, COMPENSATING]}})]

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The `limit` sagas written last, newest first, as plain data for an admin view."""
        documents = self.collection.find().sort([("updated_at", -1), ("_id", -1)]).limit(limit)
        return [{"id": document["_id"], "saga": document["saga"], "status": document["status"],
                 "steps": document["steps"], "error": document.get("error"),
                 "updated_at": document["updated_at"].isoformat()} for document in documents]

    def _document(self, record: SagaRecord) -> dict[str, Any]:
        return {"_id": record.id, "saga": record.saga, "status": record.status,
                "data": record.data, "error": record.error, "updated_at": self.now(),
                "steps": [{"name": name, "state": state} for name, state in record.steps.items()]}

    @staticmethod
    def _record(document: Mapping[str, Any]) -> SagaRecord:
        return SagaRecord(id=document["_id"], saga=document["saga"], status=document["status"],
                          data=dict(document["data"]), error=document.get("error"),
                          steps={step["name"]: step["state"] for step in document["steps"]})


class SagaOrchestrator:
    """Runs sagas step by step, logging each step, compensating on failure, recovering on restart.

        place_order = Saga("place_order", [
            Step("reserve_stock", reserve_stock, compensation=release_stock),
            Step("charge", charge, compensation=refund),
            Step("confirm", confirm_order),
        ])
        orchestrator = SagaOrchestrator(MongoSagaLog(db.sagas), place_order)
        orchestrator.recover()                      # once, at start-up
        orchestrator.run("place_order", {"order_id": "o-1", "amount": 30}, saga_id="o-1").status
    """

    def __init__(self, saga_log: SagaLog, *sagas: Saga) -> None:
        self.saga_log = saga_log
        self.sagas = {saga.name: saga for saga in sagas}

    def run(self, saga: str, data: Mapping[str, Any], *, saga_id: str | None = None) -> SagaRecord:
        """Run a saga as far as it goes and return its log entry: completed, compensated, or
        compensating when a compensation failed (the next `recover()` goes on with it).

        Starting again with the id of a saga that exists continues that saga instead."""
        definition = self.sagas[saga]
        record = SagaRecord(id=saga_id or uuid.uuid4().hex, saga=saga, status=RUNNING,
                            data=dict(data), steps={step.name: PENDING for step in definition.steps})
        if not self.saga_log.create(record):
            record = self.saga_log.load(record.id) or record
        return self._drive(record)

    def recover(self) -> list[SagaRecord]:
        """Finish every saga a crash left running or compensating; returns their entries."""
        return [self._drive(record) for record in self.saga_log.unfinished()]

    def _drive(self, record: SagaRecord) -> SagaRecord:
        steps = self.sagas[record.saga].steps
        if record.status == RUNNING:
            self._forward(record, steps)
        if record.status == COMPENSATING:
            self._compensate(record, steps)
        return record

    def _forward(self, record: SagaRecord, steps: Sequence[Step]) -> None:
        for step in steps:
            if record.steps[step.name] == DONE:
                continue
            try:
                outputs = step.action(self._context(record, step.name, suffix=""))
            except Exception as error:  # any failure of a step turns the saga around
                log.warning("saga step failed, compensating", exc_info=True, extra={
                    "saga_id": record.id, "step": step.name})
                uncertain = step.may_have_applied is not None and step.may_have_applied(error)
                record.steps[step.name] = UNCERTAIN if uncertain else FAILED
                record.status = COMPENSATING
                record.error = f"{step.name}: {type(error).__name__}: {error}"
                self.saga_log.save(record)
                return
            record.data.update(outputs or {})
            record.steps[step.name] = DONE
            if all(record.steps[each.name] == DONE for each in steps):
                record.status = COMPLETED  # the last step's write closes the saga too
            self.saga_log.save(record)
        if record.status == RUNNING:  # every step was done already (a log from before)
            record.status = COMPLETED
            self.saga_log.save(record)

    def _compensate(self, record: SagaRecord, steps: Sequence[Step]) -> None:
        for step in reversed(steps):
            if record.steps[step.name] not in (DONE, UNCERTAIN):
                continue
            if step.compensation is not None:
                try:
                    step.compensation(self._context(record, step.name, suffix=":undo"))
                except Exception as error:  # left compensating: recover() tries again
                    log.error("saga compensation failed", exc_info=True, extra={
                        "saga_id": record.id, "step": step.name})
                    record.error = f"compensating {step.name}: {type(error).__name__}: {error}"
                    self.saga_log.save(record)
                    return
            record.steps[step.name] = COMPENSATED
            self.saga_log.save(record)
        record.status = COMPENSATED
        self.saga_log.save(record)

    @staticmethod
    def _context(record: SagaRecord, step: str, suffix: str) -> StepContext:
        return StepContext(saga_id=record.id, step=step, data=MappingProxyType(dict(record.data)),
                           idempotency_key=f"{record.id}:{step}{suffix}")


# Choreography ---------------------------------------------------------------------------------

class StepRejected(Exception):
    """A participant says no for a business reason (out of stock, card declined): announced as
    the failure event, not retried."""


Reaction = Callable[[Message], Mapping[str, Any] | None]


@dataclass(frozen=True)
class _Rule:
    reaction: Reaction
    succeeded: str
    failed: str | None


@dataclass
class Participant:
    """One service's part in a choreographed saga; pass it to `bus.consumer` as the handler.

        inventory = (Participant(bus, "inventory")
                     .on("order.created", reserve_stock,
                         succeeded="inventory.reserved", failed="inventory.reservation_failed")
                     .on("payment.failed", release_stock, succeeded="inventory.released"))
        bus.consumer("inventory.saga", inventory,
                     ("orders", "order.created"), ("payments", "payment.failed")).start()

    The outcome event carries the trigger's body plus what the reaction returned (or `reason`
    on a rejection), so the next participant has what it needs without asking anyone.
    """

    bus: Publisher
    exchange: str  # where this participant announces its outcomes
    rules: dict[str, _Rule] = field(default_factory=dict)

    def on(self, routing_key: str, reaction: Reaction, *, succeeded: str,
           failed: str | None = None) -> Participant:
        self.rules[routing_key] = _Rule(reaction, succeeded, failed)
        return self

    def __call__(self, message: Message) -> None:
        rule = self.rules.get(message.routing_key)
        if rule is None:  # a wiring mistake: let it end in the dead-letter queue, visible
            raise LookupError(f"no reaction to {message.routing_key!r} in {self.exchange!r}")
        try:
            outcome, body = rule.succeeded, {**message.body, **(rule.reaction(message) or {})}
        except StepRejected as rejection:
            if rule.failed is None:
                raise
            outcome, body = rule.failed, {**message.body, "reason": str(rejection)}
        self.bus.publish(self.exchange, outcome, body,
                         message_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{message.id}/{outcome}").hex,
                         headers={"causation-id": message.id,
                                  "correlation-id": message.headers.get("correlation-id", message.id)})
