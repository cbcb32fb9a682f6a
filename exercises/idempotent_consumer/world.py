"""The world the idempotent consumer lives in: a broker that delivers at least once, a store,
and consumer processes that can die between any two calls.

Your `IdempotentConsumer` is given a `Store` and a handler. The handler turns a `Message` into
the change it asks for, a `Credit` (add `amount` to `account`); the store offers:

- `store.seen(message_id)` / `store.remember(message_id)` — read / record a processed id;
- `store.apply(credit)` — make the change, alone;
- `store.apply_once(message_id, credit)` — make the change *and* record the id in one atomic
  write, unless the id is recorded already (then it changes nothing and returns False). This is
  `patterns/idempotency.py::apply_once`.

`on_message(message, ack)` is called once per delivery; `ack()` tells the broker the message is
handled. Everything else is the grader's side: `run()` plays a schedule of deliveries,
duplicates, crashes and two consumers handling the same message at the same moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from exercises.faults import Crash, CrashAt, Process
from exercises.grading import Trace

__all__ = ["Crash", "Credit", "Message", "Store", "credit", "run"]


@dataclass(frozen=True)
class Message:
    id: str       # e.g. "m3": the same on every copy of this message
    account: str
    amount: int


@dataclass(frozen=True)
class Credit:
    """The change a message asks for: add `amount` to `account` (because of `message_id`)."""
    account: str
    amount: int
    message_id: str


def credit(message: Message) -> Credit:
    """The handler the grader gives your consumer."""
    return Credit(message.account, message.amount, message.id)


# -- schedules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deliver:
    """The broker hands the next message in the queue to consumer 1 or 2."""
    consumer: int


@dataclass(frozen=True)
class Duplicate:
    """The publisher sends the message at this position again (a retried publish): same id."""
    message: int


# CrashAt(op, after): consumer 1 dies while handling its next delivery, at its op-th call to
# the store or to ack(), before the call or just after it took effect.


@dataclass(frozen=True)
class Race:
    """Consumer 1 takes the next delivery; at its `op`-th call (before it), consumer 2 is handed
    a copy of the same message and handles it completely (a redelivery after a dropped
    connection: two processes, one message, the same moment)."""
    op: int


Action = Deliver | Duplicate | CrashAt | Race


@dataclass(frozen=True)
class Schedule:
    messages: tuple[tuple[str, int], ...]  # (account, amount) of m1, m2, ...
    actions: tuple[Action, ...]


# -- the grader's side --------------------------------------------------------------------------


class World:
    def __init__(self, schedule: Schedule, trace: Trace, watch: str) -> None:
        self.trace = trace
        self.watch = watch
        self.messages = [Message(f"m{n}", account, amount)
                         for n, (account, amount) in enumerate(schedule.messages, 1)]
        self.queue: list[Message] = list(self.messages)
        self.recorded: set[str] = set()
        self.applied: Counter[str] = Counter()

    def check(self, prop: str, ok: bool, expected: str, got: str) -> None:
        if prop == self.watch:
            self.trace.expect(ok, expected=expected, got=got)

    def change(self, effect: Credit) -> None:
        if not isinstance(effect, Credit):
            raise TypeError(f"a change is the Credit the handler returned, not {effect!r}")
        self.check("applied_at_most_once", not self.applied[effect.message_id],
                   f"{effect.message_id} applied once",
                   f"{effect.message_id} applied a second time ({effect.account} credited "
                   f"{effect.amount} twice)")
        self.applied[effect.message_id] += 1


class Consumer(Process):
    """One consumer process: the learner's object, its crash point, and maybe a race."""

    def __init__(self, world: World, learner: ModuleType, name: str) -> None:
        super().__init__(world.trace, name)
        self.world = world
        self.armed: CrashAt | None = None  # for the next delivery
        self.race: tuple[int, Callable[[], None]] | None = None
        world.trace.step(f"{name} starts")
        self.consumer = learner.IdempotentConsumer(Store(self), credit)

    def before(self, what: str) -> None:
        if not self.dead:
            self.trace.step(f"{self.name}: {what}")
            if self.race and self.race[0] == self.calls + 1:
                _, other = self.race
                self.race = None
                self.trace.outcome("meanwhile the same message reaches the other consumer:")
                other()
                self.trace.step(f"{self.name}: {what} (continued)")
        super().before(what)

    def handle(self, message: Message) -> bool:
        """One delivery; True if the process survived it."""
        world = self.world
        acked = False

        def ack() -> None:
            nonlocal acked
            self.before(f"ack({message.id})")
            world.check("ack_after_apply", world.applied[message.id] > 0,
                        f"ack({message.id}) only once {message.id}'s credit is in the store",
                        f"ack({message.id}) while {message.account} was never credited for it")
            acked = True
            world.trace.outcome("acked")
            self.after(f"ack({message.id})")

        world.trace.step(f"broker delivers {message.id} ({message.account} +{message.amount}) "
                         f"to {self.name}")
        self.arm(self.armed)
        self.armed = None
        try:
            self.consumer.on_message(message, ack)
            if self.dead:  # it caught the Crash: the process is dead all the same
                raise Crash(self.name)
        except Crash:
            if not acked:
                world.queue.append(message)
                world.trace.outcome(f"{message.id} was not acked: the broker will deliver it again")
            return False
        world.check("every_delivery_acked", acked,
                    f"every delivery of {message.id} acked, a duplicate too (else the broker "
                    "delivers it again and again)",
                    f"on_message({message.id}) returned without ack()")
        if not acked:
            world.queue.append(message)
        return True


class Store:
    """The consumer's database, as one consumer process sees it."""

    def __init__(self, process: Consumer) -> None:
        self._process = process
        self._world = process.world

    def seen(self, message_id: str) -> bool:
        """Is this message id recorded as processed?"""
        self._process.before(f"store.seen({message_id!r})")
        found = message_id in self._world.recorded
        self._world.trace.outcome(str(found))
        self._process.after(f"store.seen({message_id!r})")
        return found

    def remember(self, message_id: str) -> None:
        """Record the message id as processed (only that)."""
        self._process.before(f"store.remember({message_id!r})")
        self._world.recorded.add(message_id)
        self._process.after(f"store.remember({message_id!r})")

    def apply(self, change: Credit) -> None:
        """Make the change (only that)."""
        self._process.before(f"store.apply({change.account} +{change.amount})")
        self._world.change(change)
        self._process.after(f"store.apply({change.account} +{change.amount})")

    def apply_once(self, message_id: str, change: Credit) -> bool:
        """In one atomic write: make the change and record message_id, unless message_id is
        recorded already. True if this call made the change."""
        what = f"store.apply_once({message_id!r}, {change.account} +{change.amount})"
        self._process.before(what)
        fresh = message_id not in self._world.recorded
        if fresh:
            self._world.change(change)
            self._world.recorded.add(message_id)
        self._world.trace.outcome("applied and recorded" if fresh
                                  else "recorded already: no change")
        self._process.after(what)
        return fresh


def run(learner: ModuleType, schedule: Schedule, trace: Trace, watch: str) -> None:
    """Play `schedule` with two consumers on one store, then let consumer 1 drain the queue with
    no faults; judge the property `watch`."""
    world = World(schedule, trace, watch)
    trace.step("queue: " + ", ".join(f"{m.id} ({m.account} +{m.amount})" for m in world.queue))
    serial = Counter[int]()

    def start(consumer: int) -> Consumer:
        serial[consumer] += 1
        return Consumer(world, learner, f"consumer {consumer} (process {serial[consumer]})")

    processes = {1: start(1), 2: start(2)}

    def deliver(consumer: int) -> None:
        if world.queue and not processes[consumer].handle(world.queue.pop(0)):
            processes[consumer] = start(consumer)

    for action in schedule.actions:
        if isinstance(action, Deliver):
            deliver(action.consumer)
        elif isinstance(action, Duplicate):
            message = world.messages[action.message % len(world.messages)]
            world.queue.append(message)
            trace.step(f"the publisher sends {message.id} again (a retried publish)")
        elif isinstance(action, CrashAt):
            processes[1].armed = action
            trace.step(f"{processes[1].name} will die {action} (store or ack) in its next "
                       "delivery")
        elif isinstance(action, Race) and world.queue:
            message = world.queue[0]
            processes[1].race = (action.op, lambda: processes[2].handle(message))
            deliver(1)
            processes[1].race = None
    trace.step("no more faults: consumer 1 handles what is left in the queue")
    for _ in range(3 * len(world.messages) + 10):
        if not world.queue:
            break
        deliver(1)
    for message in world.messages:
        world.check("none_lost", world.applied[message.id] > 0,
                    f"every message applied, {message.id} too",
                    f"{message.account} never credited for {message.id}, and the queue is empty"
                    if not world.queue else f"{message.id} never applied")
