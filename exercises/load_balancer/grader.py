"""Grades a client-side load balancer: round robin, ejection after failures in a row, cool-off,
refresh from the registry. Each property plays random schedules (instances going down, flapping,
joining and leaving; time passing) and compares every pick with a model of a correct balancer
(`world.Model`)."""

from __future__ import annotations

from types import ModuleType

from hypothesis import strategies as st

from exercises.grading import Exercise, Trace
from exercises.load_balancer.world import (Action, Calls, Join, Leave, Schedule, SetHealth,
                                           Settings, Wait, run)

EXERCISE = Exercise("load_balancer", "Client-side load balancer with ejection", order=70,
                    requires=("Balancer",))

settings = st.builds(Settings, max_failures=st.integers(2, 4),
                     eject_for=st.sampled_from([5.0, 10.0, 15.0, 30.0]),
                     refresh_every=st.sampled_from([1.0, 2.0, 5.0]))
actions = st.one_of(
    st.builds(Calls, st.integers(1, 8)),
    st.builds(Wait, st.integers(1, 80).map(lambda tenths: tenths / 2)),
    st.builds(SetHealth, st.integers(0, 5), st.sampled_from(["down", "up", "flaky"])),
    st.builds(Join),
    st.builds(Leave, st.integers(0, 5)),
)
SCHEDULES = st.builds(Schedule, settings, st.integers(1, 4),
                      st.lists(actions, min_size=1, max_size=30).map(tuple))


@st.composite
def around(draw: st.DrawFn, before: tuple[Action, ...], after: tuple[Action, ...]) -> Schedule:
    """Random actions with a sure scene before and after them (on two instances or more), so
    that every run reaches the situation the property is about."""
    schedule = draw(SCHEDULES)
    return Schedule(schedule.settings, max(schedule.instances, 2),
                    before + schedule.actions + after)


# An instance down long enough to be ejected, then up again, the longest cool-off waited out.
OUTAGE = around((SetHealth(0, "down"), Calls(8), Calls(8)),
                (SetHealth(0, "up"), Wait(30.0), Calls(8)))
# An instance failing one call in two: never twice in a row, so never to be ejected.
FLAKY = around((), (SetHealth(1, "flaky"), *[Calls(8)] * 5))
# Instances leaving and joining, then calls.
CHURN = around((), (Leave(0), Join(), Calls(8)))


@EXERCISE.prop("round_robin_fair",
               "calls take turns over the eligible instances: none gets two more than another",
               schedules=FLAKY, hint=1)
def round_robin_fair(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "round_robin_fair")


@EXERCISE.prop("ejected_gets_no_traffic",
               "after max_failures failures in a row an instance gets no call for eject_for "
               "seconds",
               schedules=OUTAGE, hint=2)
def ejected_gets_no_traffic(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "ejected_gets_no_traffic")


@EXERCISE.prop("back_after_cool_off",
               "an ejected instance is back in the rotation once eject_for seconds have passed",
               schedules=OUTAGE, hint=3)
def back_after_cool_off(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "back_after_cool_off")


@EXERCISE.prop("deregistered_gets_no_traffic",
               "an instance that left the registry gets no call once refresh_every has passed",
               schedules=CHURN, hint=4)
def deregistered_gets_no_traffic(learner: ModuleType, schedule: Schedule, trace: Trace) -> None:
    run(learner, schedule, trace, "deregistered_gets_no_traffic")
