"""Grades an idempotent consumer: at-least-once delivery (redeliveries after crashes, retried
publishes, two consumers handed the same message at once) must change the store exactly once
per message, and ack only what is applied."""

from __future__ import annotations

from types import ModuleType

from hypothesis import strategies as st

from exercises.grading import Exercise, Trace
from exercises.idempotent_consumer.world import (Action, CrashAt, Deliver, Duplicate, Race,
                                                 Schedule, run)

EXERCISE = Exercise("idempotent_consumer", "Idempotent consumer", order=40,
                    requires=("IdempotentConsumer",))

messages = st.lists(st.tuples(st.sampled_from(["acct-a", "acct-b"]), st.integers(1, 9)),
                    min_size=1, max_size=5).map(tuple)
crash = st.builds(CrashAt, st.integers(1, 4), st.booleans())
actions = st.one_of(st.builds(Deliver, st.integers(1, 2)), st.builds(Duplicate, st.integers(0, 4)),
                    crash, st.builds(Race, st.integers(1, 3)))


def with_scene(scene: st.SearchStrategy[tuple[Action, ...]]) -> st.SearchStrategy[Schedule]:
    """One `scene` sure to matter (on the first message), then random deliveries and faults;
    what is left in the queue is drained at the end."""
    return st.builds(Schedule, messages,
                     st.tuples(scene, st.lists(actions, max_size=15)).map(
                         lambda parts: (*parts[0], *parts[1])))


ANY = with_scene(st.tuples(st.builds(Deliver, st.integers(1, 2))))
CRASHES = with_scene(st.tuples(crash, st.just(Deliver(1))))
RACES = with_scene(st.tuples(st.builds(Race, st.integers(1, 3))))
DUPLICATES = with_scene(st.tuples(st.builds(Duplicate, st.integers(0, 4))))


@EXERCISE.prop("applied_at_most_once",
               "no message is applied twice: not after a crash, a duplicate or a race",
               schedules=st.one_of(CRASHES, RACES), hint=2)
def applied_at_most_once(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "applied_at_most_once")


@EXERCISE.prop("none_lost", "every message is applied in the end, whatever crashed",
               schedules=CRASHES, hint=3)
def none_lost(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "none_lost")


@EXERCISE.prop("ack_after_apply", "a message is acked only once its change is in the store",
               schedules=ANY, hint=1)
def ack_after_apply(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "ack_after_apply")


@EXERCISE.prop("every_delivery_acked", "every delivery is acked, a duplicate too",
               schedules=DUPLICATES, hint=4)
def every_delivery_acked(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "every_delivery_acked")
