"""Grades a transactional outbox relay: every event written reaches the broker (at least once)
despite relay crashes, refused publishes, lost confirms and outages; in order per aggregate;
marked sent only once confirmed; published again only when a fault left the relay unsure.
Each schedule ends with fault-free passes until the outbox is empty."""

from __future__ import annotations

from types import ModuleType

from hypothesis import strategies as st

from exercises.grading import Exercise, Trace
from exercises.outbox.world import (Action, BrokerDown, BrokerUp, CrashAt, LoseConfirm, Nack,
                                    Relay, Schedule, Write, run)

EXERCISE = Exercise("outbox", "Transactional outbox relay", order=50,
                    requires=("OutboxRelay",))

writes = st.builds(Write, st.integers(0, 2), st.integers(1, 3))
faults = st.one_of(
    st.builds(CrashAt, st.integers(1, 6), st.booleans()),
    st.builds(Nack),
    st.builds(LoseConfirm),
    st.builds(BrokerDown),
    st.builds(BrokerUp),
)
actions = st.one_of(writes, st.builds(Relay), faults)


@st.composite
def schedules(draw: st.DrawFn, *, scene: tuple[Action, ...] = ()) -> Schedule:
    """Writes, relay passes and faults at random, then `scene` (faults sure to matter) and a
    few passes."""
    middle = draw(st.lists(actions, min_size=1, max_size=25))
    return Schedule(draw(st.integers(1, 5)),
                    (Write(0, 2), Write(1, 2), *middle, *scene, Relay(), Relay()))


ANY = schedules()
# A refused event with later events of its own order behind it.
REFUSED = schedules(scene=(Write(0, 3), Nack(), Relay()))
# A relay that dies right after a publish, or in the middle of its pass.
CRASHES = st.one_of(schedules(scene=(Write(2, 3), CrashAt(2, True), Relay())),
                    schedules(scene=(Write(2, 3), CrashAt(3, False), Relay())),
                    schedules(scene=(Write(2, 3), LoseConfirm(), Relay())))


@EXERCISE.prop("none_lost", "every event written reaches the broker, whatever fails meanwhile",
               schedules=st.one_of(CRASHES, REFUSED), hint=2)
def none_lost(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "none_lost")


@EXERCISE.prop("sent_only_after_confirm", "an event is marked sent only after its confirm",
               schedules=ANY, hint=1)
def sent_only_after_confirm(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "sent_only_after_confirm")


@EXERCISE.prop("order_per_aggregate", "one order's events reach the broker in the order written",
               schedules=REFUSED, hint=3)
def order_per_aggregate(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "order_per_aggregate")


@EXERCISE.prop("duplicates_only_after_faults",
               "an event is published again only after a crash or a lost confirm",
               schedules=st.one_of(ANY, CRASHES), hint=4)
def duplicates_only_after_faults(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "duplicates_only_after_faults")
