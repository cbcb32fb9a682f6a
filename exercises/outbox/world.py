"""The world the outbox relay lives in: a store whose rows carry pending events, a broker with
publisher confirms, and a relay process that can die at any moment.

Your `OutboxRelay` is given two things:

- `store.pending(limit)` — events written but not yet marked sent, oldest first (the order the
  service wrote them); `store.mark_sent(event_id)` — this event needs no publishing any more.
- `broker.publish(event)` — returns once the broker *confirmed* it has the event. Raises
  `PublishError` when there is no confirm: the broker refused the event (nack), is down, or
  took the event but the confirm got lost on the way back. You cannot tell which.

Everything else is the grader's side: `run()` plays a schedule of writes, relay passes and
faults, and watches the queue the broker fills.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from types import ModuleType

from exercises.faults import Crash, CrashAt, Process
from exercises.grading import Trace

__all__ = ["Broker", "Crash", "OutboxEvent", "PublishError", "Store", "run"]


class PublishError(Exception):
    """The broker did not confirm the event: it may or may not have it."""


@dataclass(frozen=True)
class OutboxEvent:
    id: str            # e.g. "e7": the message id consumers deduplicate on
    aggregate_id: str  # the order it is about, e.g. "order-2"
    type: str          # e.g. "order.paid"
    payload: dict[str, object]


# -- schedules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """The service changes an order and writes `count` events about it, in one transaction."""
    aggregate: int
    count: int


@dataclass(frozen=True)
class Relay:
    """One `relay_once()` pass (by a new relay process if the last one crashed)."""


@dataclass(frozen=True)
class BrokerDown:
    """Every publish fails, and nothing reaches the queue, until BrokerUp."""


@dataclass(frozen=True)
class BrokerUp:
    pass


@dataclass(frozen=True)
class Nack:
    """The broker refuses the next event published: not queued, PublishError."""


@dataclass(frozen=True)
class LoseConfirm:
    """The next event published reaches the queue, but its confirm is lost: PublishError."""


Action = Write | Relay | BrokerDown | BrokerUp | Nack | LoseConfirm | CrashAt


@dataclass(frozen=True)
class Schedule:
    batch: int
    actions: tuple[Action, ...]


TYPES = ("order.created", "order.paid", "order.shipped", "order.delivered", "order.archived")


# -- the grader's side --------------------------------------------------------------------------


class World:
    """The store, the broker and its queue, the faults armed, and what has been judged."""

    def __init__(self, trace: Trace, watch: str) -> None:
        self.trace = trace
        self.watch = watch
        self.events: list[OutboxEvent] = []
        self.sent: set[str] = set()
        self.queue: list[str] = []        # event ids in the order the broker queued them
        self.confirmed: set[str] = set()  # publish() returned for these
        self.broker_down = False
        self.nack_next = False
        self.lose_next = False
        self.crash: CrashAt | None = None  # for the next relay pass
        self.faults_since: dict[str, int] = {}  # event id -> faults since it was last queued
        self.per_aggregate: Counter[str] = Counter()

    def check(self, prop: str, ok: bool, expected: str, got: str) -> None:
        if prop == self.watch:
            self.trace.expect(ok, expected=expected, got=got)

    def write(self, aggregate: str, count: int) -> None:
        written = []
        for _ in range(count):
            number = self.per_aggregate[aggregate]
            self.per_aggregate[aggregate] += 1
            event = OutboxEvent(f"e{len(self.events) + 1}", aggregate, TYPES[number % len(TYPES)],
                                {"order_id": aggregate, "seq": number})
            self.events.append(event)
            written.append(f"{event.id} {event.type}")
        self.trace.step(f"service writes {aggregate} with its events: {', '.join(written)}")

    def deliver(self, event: OutboxEvent) -> None:
        """The broker queues the event; judge order and duplicates."""
        earlier = self.events[:self.events.index(event)]
        before = [e.id for e in earlier if e.aggregate_id == event.aggregate_id]
        if event.id in self.queue:
            explained = self.faults_since.get(event.id, 0) > 0
            self.check("duplicates_only_after_faults", explained,
                       f"{event.id} queued again only if a crash or a lost confirm came after "
                       "it was queued (nothing made the relay unsure it went out)",
                       f"{event.id} queued a second time with no fault since the first")
        else:
            missing = [eid for eid in before if eid not in self.queue]
            self.check("order_per_aggregate", not missing,
                       f"{event.aggregate_id}'s events queued in the order written",
                       f"{event.id} queued before {', '.join(missing)}")
            self.check("duplicates_only_after_faults", True, "", "")
        self.queue.append(event.id)
        self.faults_since[event.id] = 0

    def fault(self, event_id: str | None = None) -> None:
        """Something that may make the relay publish again: a crash (every event), a lost
        confirm (that event)."""
        for eid in ([event_id] if event_id else list(self.faults_since)):
            self.faults_since[eid] = self.faults_since.get(eid, 0) + 1


class Store:
    """The service's database as one relay process sees it."""

    def __init__(self, world: World, process: Process) -> None:
        self._world = world
        self._process = process

    def pending(self, limit: int) -> list[OutboxEvent]:
        """Up to `limit` events not yet marked sent, oldest first."""
        world = self._world
        world.trace.step(f"store.pending({limit})")
        self._process.before(f"pending({limit})")
        found = [event for event in world.events if event.id not in world.sent][:limit]
        world.trace.outcome(", ".join(e.id for e in found) or "nothing")
        self._process.after(f"pending({limit})")
        return found

    def mark_sent(self, event_id: str) -> None:
        """This event needs no publishing any more (the relay will not see it again)."""
        world = self._world
        world.trace.step(f"store.mark_sent({event_id!r})")
        self._process.before(f"mark_sent({event_id!r})")
        world.check("sent_only_after_confirm", event_id in world.confirmed,
                    f"mark_sent({event_id!r}) only after publish() of {event_id} returned "
                    "(the broker confirmed it)",
                    f"mark_sent({event_id!r}) with no confirm for {event_id} yet")
        world.sent.add(event_id)
        self._process.after(f"mark_sent({event_id!r})")


class Broker:
    """RabbitMQ with publisher confirms, as one relay process sees it."""

    def __init__(self, world: World, process: Process) -> None:
        self._world = world
        self._process = process

    def publish(self, event: OutboxEvent) -> None:
        """Returns once the broker confirmed `event`; raises PublishError otherwise."""
        world = self._world
        what = f"publish({event.id})"
        world.trace.step(f"broker.{what}")
        self._process.before(what)
        if world.broker_down:
            world.trace.outcome("✗ broker down: PublishError")
            raise PublishError("broker unreachable")
        if world.nack_next:
            world.nack_next = False
            world.trace.outcome("✗ nacked, not queued: PublishError")
            raise PublishError(f"broker refused {event.id}")
        world.deliver(event)
        if world.lose_next:
            world.lose_next = False
            world.fault(event.id)
            world.trace.outcome("queued, but the confirm is lost ✗ PublishError")
            raise PublishError(f"no confirm for {event.id} (timed out)")
        world.confirmed.add(event.id)
        world.trace.outcome("queued, confirmed")
        self._process.after(what)


def run(learner: ModuleType, schedule: Schedule, trace: Trace, watch: str) -> None:
    """Play `schedule` against the learner's OutboxRelay, then let it drain with no faults;
    judge the property `watch`."""
    world = World(trace, watch)
    trace.given(batch=schedule.batch)
    relay = None
    processes = 0
    process = Process(trace, "no relay yet")  # replaced as each relay process starts

    def one_pass() -> None:
        nonlocal relay, processes, process
        if relay is None:
            processes += 1
            process = Process(trace, f"relay process {processes}")
            relay = learner.OutboxRelay(Store(world, process), Broker(world, process),
                                        batch=schedule.batch)
        trace.step(f"relay process {processes}: relay_once()")
        process.arm(world.crash)
        try:
            trace.step(f"relay_once() returned {relay.relay_once()!r}")
            if process.dead:  # it caught the Crash: the process is dead all the same
                world.fault()
                relay = None
        except PublishError as error:
            trace.step(f"relay_once() raised PublishError({error}); the loop tries again later")
        except Crash:
            world.fault()
            relay = None
        finally:
            world.crash = None  # a crash not reached in this pass is called off

    for action in schedule.actions:
        if isinstance(action, Write):
            world.write(f"order-{action.aggregate + 1}", action.count)
        elif isinstance(action, Relay):
            one_pass()
        elif isinstance(action, BrokerDown):
            trace.step("broker goes down")
            world.broker_down = True
        elif isinstance(action, BrokerUp):
            trace.step("broker is back")
            world.broker_down = False
        elif isinstance(action, Nack):
            trace.step("the broker will refuse the next event published")
            world.nack_next = True
        elif isinstance(action, LoseConfirm):
            trace.step("the next confirm will be lost")
            world.lose_next = True
        elif isinstance(action, CrashAt):
            trace.step(f"the relay will die {action} to the store or broker in its next pass")
            world.crash = action
    trace.step("no more faults: broker up, relay passes until the outbox is empty")
    world.broker_down = world.nack_next = world.lose_next = False
    world.crash = None
    for _ in range(len(world.events) + 3):
        if all(event.id in world.sent for event in world.events):
            break
        one_pass()
    for event in world.events:
        world.check("none_lost", event.id in world.queue,
                    "every event written reaches the queue at least once",
                    f"{event.id} ({event.aggregate_id} {event.type}) never reached the queue"
                    + (" and is marked sent" if event.id in world.sent else ""))
