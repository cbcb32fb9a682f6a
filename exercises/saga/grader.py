"""Grades a saga orchestrator: one order's saga over participants that refuse, lose answers
and fail to compensate, with the orchestrator killed mid-saga and recovered from its log.
The end state must be all or nothing; on the way, compensations run in reverse, take effect
once, cover the steps whose answer was lost, and recovery never reruns a step logged done."""

from __future__ import annotations

from types import ModuleType

from hypothesis import strategies as st

from exercises.grading import Exercise, Trace
from exercises.saga.world import CrashAt, Schedule, StepPlan, run

EXERCISE = Exercise("saga", "Saga with compensation and recovery", order=60,
                    requires=("Orchestrator",))

undo_faults = st.lists(st.sampled_from(["lost_before", "lost_after"]), max_size=2).map(tuple)
plans = st.builds(StepPlan, st.sampled_from(["ok", "refused", "lost_after", "lost_before"]),
                  undo_faults)
crashes = st.lists(st.builds(CrashAt, st.integers(1, 10), st.booleans()), max_size=2).map(tuple)
ANY = st.builds(Schedule, st.lists(plans, min_size=2, max_size=4).map(tuple), crashes)


@st.composite
def failing_at_the_end(draw: st.DrawFn, outcome: str) -> Schedule:
    """At least two steps go through (so there are two to undo), then the last one fails."""
    ok = st.builds(StepPlan, st.just("ok"), undo_faults)
    steps = draw(st.lists(ok, min_size=2, max_size=3))
    return Schedule((*steps, StepPlan(outcome)), draw(crashes))


LATE_FAILURE = failing_at_the_end("refused")
LATE_LOSS = failing_at_the_end("lost_after")
CRASHED = st.builds(Schedule, st.lists(plans, min_size=2, max_size=4).map(tuple),
                    st.lists(st.builds(CrashAt, st.integers(1, 10), st.booleans()),
                             min_size=1, max_size=2).map(tuple))


def going_well(then: st.SearchStrategy[CrashAt]) -> st.SearchStrategy[Schedule]:
    """The first two steps go through, the rest at random, and the orchestrator dies `then`."""
    ok = st.builds(StepPlan, st.just("ok"), undo_faults)
    return st.builds(Schedule, st.tuples(ok, ok, *[plans] * 2), st.tuples(then))


# Dies right after its first or second call (the first action, or the first log write).
EARLY_CRASH = going_well(st.builds(CrashAt, st.integers(1, 2), st.just(True)))
# Dies once a step or two are done and logged.
MIDWAY_CRASH = going_well(st.builds(CrashAt, st.integers(3, 6), st.booleans()))


@EXERCISE.prop("all_or_nothing",
               "in the end the saga is completed with every step in effect, or compensated "
               "with none", schedules=st.one_of(EARLY_CRASH, CRASHED, ANY), hint=1)
def all_or_nothing(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "all_or_nothing")


@EXERCISE.prop("compensate_in_reverse", "compensations run in reverse order of the steps",
               schedules=LATE_FAILURE, hint=2)
def compensate_in_reverse(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "compensate_in_reverse")


@EXERCISE.prop("lost_answer_compensated",
               "a step whose answer was lost is compensated too (it may have happened)",
               schedules=LATE_LOSS, hint=3)
def lost_answer_compensated(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "lost_answer_compensated")


@EXERCISE.prop("compensated_at_most_once",
               "a compensation tried again takes effect once (same idempotency key)",
               schedules=LATE_FAILURE, hint=3)
def compensated_at_most_once(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "compensated_at_most_once")


@EXERCISE.prop("no_step_rerun", "after a crash, recover() never reruns a step the log says is done",
               schedules=st.one_of(MIDWAY_CRASH, CRASHED), hint=4)
def no_step_rerun(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "no_step_rerun")
