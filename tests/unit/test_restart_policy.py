"""The restart policy's arithmetic: backoff that doubles, a cap, a reset after a stable run,
and giving up on a crash loop."""

from __future__ import annotations

from microlab.restarts import CrashCounter, RestartPolicy


def test_the_delay_doubles_with_each_crash_in_a_row_up_to_the_cap():
    policy = RestartPolicy(first_delay_s=1, max_delay_s=5, max_crashes=10)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_the_policy_gives_up_after_max_crashes_in_a_row():
    counter = CrashCounter(RestartPolicy(max_crashes=3))
    decisions = [counter.crashed("mongo", uptime_s=0.5) for _ in range(4)]
    assert decisions == [(1, 1.0), (2, 2.0), (3, 4.0), (4, None)]


def test_a_stable_run_starts_the_count_again():
    counter = CrashCounter(RestartPolicy(stable_after_s=30))
    counter.crashed("chaos", uptime_s=1)
    counter.crashed("chaos", uptime_s=1)
    assert counter.crashed("chaos", uptime_s=45) == (1, 1.0)


def test_counts_are_per_process_and_forgotten_on_a_manual_start():
    counter = CrashCounter()
    counter.crashed("mongo", uptime_s=1)
    counter.crashed("mongo", uptime_s=1)
    assert counter.crashed("payments", uptime_s=1) == (1, 1.0)
    counter.forget("mongo")
    assert counter.crashed("mongo", uptime_s=1) == (1, 1.0)
