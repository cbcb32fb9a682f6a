"""The world the saga orchestrator lives in: participants that fail, answers that get lost, a
saga log that survives the orchestrator, and an orchestrator process that can die mid-step.

Your `Orchestrator` is given the saga log and the steps:

- each `Step` has a `name`, an `action(key)` and a `compensation(key)`. Pass the idempotency key
  `"<saga id>:<step name>"` to an action and `"<saga id>:<step name>:undo"` to a compensation:
  a participant that sees a key again answers as before and does nothing twice.
- an action raises `StepFailed` when the participant said no (nothing happened), or
  `AnswerLost` when no answer came back (it may have happened, or not). A compensation can
  raise `AnswerLost` too.
- `log.save(saga_id, record)` stores a record that survives a crash, `log.load(saga_id)` reads
  it back (None if never saved), `log.unfinished()` lists the ids of sagas still running or
  compensating. A record is `{"status": ..., "steps": {step name: state}}`, with the states of
  `patterns/saga.py` (see STATUSES and STATES below).

Everything else is the grader's side: `run()` plays one saga with the faults of a schedule,
kills the orchestrator where the schedule says, starts a new one that calls `recover()`, and
watches what the participants did.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from exercises.faults import Crash, CrashAt, Process
from exercises.grading import Trace
from exercises.grading.trace import Runaway

__all__ = ["AnswerLost", "Crash", "SagaLog", "Step", "StepFailed", "run"]

STATUSES = ("running", "completed", "compensating", "compensated")
STATES = ("pending", "done", "failed", "uncertain", "compensated")
MAX_CALLS = 200
RECOVERIES = 2  # recover() calls after the last crash, beyond one per compensation fault


class StepFailed(Exception):
    """The participant said no (out of stock, card declined): nothing happened."""


class AnswerLost(Exception):
    """No answer (timeout, connection cut): the call may have taken effect, or not."""


@dataclass(frozen=True)
class Step:
    name: str
    action: Callable[[str], None]
    compensation: Callable[[str], None]


# -- schedules --------------------------------------------------------------------------------

Outcome = Literal["ok", "refused", "lost_after", "lost_before"]
UndoFault = Literal["lost_after", "lost_before"]

STEP_NAMES = (("reserve_stock", "release_stock"), ("charge_payment", "refund_payment"),
              ("book_courier", "cancel_courier"), ("confirm_order", "cancel_order"))


@dataclass(frozen=True)
class StepPlan:
    """How the participant answers the step's first call (later calls with the same key get
    the same answer: "refused" stays refused, anything else is done by then), and the faults of
    the first calls of its compensation."""
    outcome: Outcome = "ok"
    undo_faults: tuple[UndoFault, ...] = ()


@dataclass(frozen=True)
class Schedule:
    steps: tuple[StepPlan, ...]
    # The first orchestrator process dies at crashes[0] (its n-th call to a participant or to
    # log.save), the second at crashes[1], and so on.
    crashes: tuple[CrashAt, ...] = ()


# -- the grader's side --------------------------------------------------------------------------


@dataclass
class Participant:
    """The service behind one step: remembers keys, applies and undoes."""

    name: str
    undo_name: str
    plan: StepPlan
    applied: bool = False
    undone: bool = False
    attempted: bool = False   # an action was called at all
    refused: bool = False     # it only ever said no
    lost: bool = False        # its first answer was lost while it had taken effect
    answered: bool = False    # an action returned: the orchestrator knows it is done
    action_keys: set[str] = field(default_factory=set)
    undo_keys: set[str] = field(default_factory=set)
    undo_calls: int = 0
    undo_returned: bool = False


class World:
    SAGA_ID = "order-1"

    def __init__(self, schedule: Schedule, trace: Trace, watch: str) -> None:
        self.trace = trace
        self.watch = watch
        self.records: dict[str, dict[str, Any]] = {}
        self.participants = [Participant(action, undo, plan)
                             for (action, undo), plan in zip(STEP_NAMES, schedule.steps)]
        self.process = Process(trace, "orchestrator process 1")
        self.calls = 0
        self.recoveries = 0

    def check(self, prop: str, ok: bool, expected: str, got: str) -> None:
        if prop == self.watch:
            self.trace.expect(ok, expected=expected, got=got)

    def before(self, what: str) -> None:
        """Every call to a participant or to log.save: counted, and maybe the last one."""
        self.trace.step(what)
        self.calls += 1
        if self.calls > MAX_CALLS:
            raise Runaway(f"more than {MAX_CALLS} calls to participants and the log: "
                          "an endless retry loop?")
        self.process.before(what)

    def logged_state(self, step: str) -> str | None:
        record = self.records.get(self.SAGA_ID)
        return record["steps"].get(step) if record else None

    # -- the participants -----------------------------------------------------------------

    def action(self, p: Participant, key: str) -> None:
        what = f"{p.name}({key!r})"
        self.before(what)
        state = self.logged_state(p.name)
        self.check("no_step_rerun", state != "done",
                   f"no second call of {p.name}: the log already says it is done",
                   f"{what} called again (log: {p.name}=done)")
        first = not p.attempted
        p.attempted = True
        if p.applied and key not in p.action_keys:
            self.check("no_step_rerun", False, f"{p.name} applied once (same key on every try)",
                       f"{what}: a new key, so {p.name} was applied a second time")
        p.action_keys.add(key)
        outcome = p.plan.outcome if first else ("refused" if p.refused else "ok")
        if outcome == "refused":
            p.refused = True
            self.trace.outcome("✗ StepFailed (refused, nothing done)")
            raise StepFailed(f"{p.name} refused")
        if outcome != "lost_before":
            p.applied = True
        if outcome.startswith("lost"):
            p.lost = p.lost or p.applied
            done = "it was done" if p.applied else "it was not done"
            self.trace.outcome(f"✗ AnswerLost ({done})")
            raise AnswerLost(f"{p.name}: no answer")
        p.answered = True
        self.trace.outcome("ok")
        self.process.after(what)

    def compensation(self, p: Participant, key: str) -> None:
        what = f"{p.undo_name}({key!r})"
        self.before(what)
        if not p.undo_calls:
            later = [q for q in self.participants[self.participants.index(p) + 1:]
                     if q.answered and not q.undo_returned]
            self.check("compensate_in_reverse", not later,
                       f"{', '.join(q.undo_name for q in later)} before {p.undo_name}: undo in "
                       "reverse order of the steps", f"{p.undo_name} first")
        fault = p.plan.undo_faults[p.undo_calls] if p.undo_calls < len(p.plan.undo_faults) else None
        p.undo_calls += 1
        if fault == "lost_before":
            self.trace.outcome("✗ AnswerLost (not done)")
            raise AnswerLost(f"{p.undo_name}: no answer")
        if key not in p.undo_keys and p.applied:
            self.check("compensated_at_most_once", not p.undone,
                       f"{p.undo_name} takes effect once (same key on every try)",
                       f"{what}: a new key, so {p.name} was undone a second time")
            p.undone = True
        p.undo_keys.add(key)
        if fault == "lost_after":
            self.trace.outcome("✗ AnswerLost (it was done)")
            raise AnswerLost(f"{p.undo_name}: no answer")
        p.undo_returned = True
        self.trace.outcome("ok" + ("" if p.applied else " (nothing to undo)"))
        self.process.after(what)


class SagaLog:
    """The saga log: survives the orchestrator's crashes."""

    def __init__(self, world: World, step_names: list[str]) -> None:
        self._world = world
        self._step_names = step_names

    def save(self, saga_id: str, record: dict[str, Any]) -> None:
        """Store `record` for `saga_id`, replacing the previous one, in one write."""
        self._validate(record)
        world = self._world
        steps = ", ".join(f"{name}={state}" for name, state in record["steps"].items())
        what = f"log.save({record['status']}: {steps})"
        world.before(what)
        world.records[saga_id] = copy.deepcopy(record)
        world.process.after(what)

    def load(self, saga_id: str) -> dict[str, Any] | None:
        """The last record saved for `saga_id` (a copy), or None."""
        record = self._world.records.get(saga_id)
        return copy.deepcopy(record) if record else None

    def unfinished(self) -> list[str]:
        """The ids of sagas whose last record is running or compensating."""
        return [saga_id for saga_id, record in self._world.records.items()
                if record["status"] in ("running", "compensating")]

    def _validate(self, record: Any) -> None:
        if not isinstance(record, dict) or set(record) != {"status", "steps"}:
            raise ValueError('a saga record is {"status": ..., "steps": {...}}, '
                             f"not {record!r}")
        if record["status"] not in STATUSES:
            raise ValueError(f"status is one of {STATUSES}, not {record['status']!r}")
        steps = record["steps"]
        if not isinstance(steps, dict) or list(steps) != self._step_names:
            raise ValueError(f"steps maps every step name, in order, {self._step_names}, to a "
                             f"state; got {steps!r}")
        wrong = {name: state for name, state in steps.items() if state not in STATES}
        if wrong:
            raise ValueError(f"a step's state is one of {STATES}, not {wrong}")


def run(learner: ModuleType, schedule: Schedule, trace: Trace, watch: str) -> None:
    """Play one saga under `schedule`: run it, recover after each crash, then recover without
    faults until it is finished; judge the property `watch`."""
    world = World(schedule, trace, watch)
    plan = ", ".join(f"{p.name}: {p.plan.outcome}"
                     + (f" (undo: {', '.join(p.plan.undo_faults)})" if p.plan.undo_faults else "")
                     for p in world.participants)
    trace.step(f"participants will answer: {plan}")
    names = [p.name for p in world.participants]

    def bind(p: Participant) -> Step:
        return Step(p.name, lambda key: world.action(p, key),
                    lambda key: world.compensation(p, key))

    steps = [bind(p) for p in world.participants]
    log = SagaLog(world, names)
    recoveries = RECOVERIES + sum(len(p.plan.undo_faults) for p in world.participants)
    world.recoveries = recoveries
    crashes = list(schedule.crashes)
    for attempt in range(len(crashes) + 1 + recoveries):
        world.process = Process(trace, f"orchestrator process {attempt + 1}")
        world.process.arm(crashes.pop(0) if crashes else None)
        if world.process.crash:
            trace.step(f"{world.process.name} starts; it will die {world.process.crash} "
                       "to a participant or log.save")
        else:
            trace.step(f"{world.process.name} starts")
        try:
            orchestrator = learner.Orchestrator(log, steps)
            if attempt == 0:
                trace.step(f"run({World.SAGA_ID!r})")
                status = orchestrator.run(World.SAGA_ID)
                trace.step(f"run() returned {status!r}")
            else:
                trace.step("recover()")
                orchestrator.recover()
                trace.step("recover() returned")
        except Crash:
            continue
        if not crashes and not log.unfinished():
            break
    judge_the_end(world)


def judge_the_end(world: World) -> None:
    record = world.records.get(World.SAGA_ID)
    status = record["status"] if record else None
    left = [p for p in world.participants if p.applied and not p.undone]
    missing = [p for p in world.participants if not p.applied or p.undone]
    if any(p.lost for p in world.participants):
        # Retrying the lost step (same key) until the saga completes is fine too.
        lost = [p for p in left if p.lost] if status == "compensated" else []
        world.check("lost_answer_compensated", not lost,
                    "every step whose answer was lost compensated too (it may have happened)",
                    f"{', '.join(p.name for p in lost)} still in effect after the saga was "
                    "compensated")
        left = [p for p in left if not p.lost] if status == "compensated" else left
    if status == "completed":
        ok = not missing
        got = f"completed, but {', '.join(p.name for p in missing)} not in effect"
    elif status == "compensated":
        ok = not left
        got = f"compensated, but {', '.join(p.name for p in left)} still in effect"
    elif status is None:
        ok = not left
        got = (f"no record in the saga log, and {', '.join(p.name for p in left)} in effect: "
               "nobody will ever undo it")
    else:
        ok = False
        got = (f"the saga is still {status} after {world.recoveries} more recover() calls, "
               "with no crash")
    world.check("all_or_nothing", ok,
                "in the end: completed with every step in effect, or compensated with none",
                got)
