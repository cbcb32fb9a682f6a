"""The restart policy's arithmetic: backoff that doubles, a cap, a reset after a stable run,
and giving up on a crash loop."""

from __future__ import annotations

from microlab.chaos import ChaosError
from microlab.restarts import CrashCounter, RestartPolicy
from microlab.supervisor import RunDir, Supervisor
from microlab.topology import load_topology, plan_ports


def test_the_delay_doubles_with_each_crash_in_a_row_up_to_the_cap():
    policy = RestartPolicy(first_delay_s=1, max_delay_s=5, max_crashes=10)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_the_policy_gives_up_after_max_crashes_in_a_row():
    counter = CrashCounter(RestartPolicy(max_crashes=4))
    decisions = [counter.crashed("mongo", uptime_s=0.5) for _ in range(4)]
    assert decisions == [(1, 1.0), (2, 2.0), (3, 4.0), (4, None)]  # the 4th crash: give up


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


class Stubborn:
    """A process that was killed (-9) and that never comes back when started."""

    popen, running, returncode, started_at, pid = object(), False, -9, None, None

    def stop(self, timeout: float = 10.0) -> None:
        pass


def test_a_restart_that_fails_is_the_next_crash_and_the_policy_gives_up_in_the_end(tmp_path):
    topology = load_topology()
    lines: list[str] = []
    supervisor = Supervisor(topology, plan_ports(topology, free=True), RunDir(tmp_path),
                            policy=RestartPolicy(first_delay_s=0, max_crashes=3),
                            out=lines.append)
    supervisor.processes["chaos"] = Stubborn()

    def fail(name: str) -> None:
        raise ChaosError(f"{name}: port 20001 is still held")

    supervisor._bring_up = fail  # type: ignore[method-assign]
    for _ in range(6):  # the crash, then each failed restart (no delay with this policy)
        supervisor._watch_exits()
    assert "chaos" not in supervisor._restart_at
    assert any("did not come back (chaos: port 20001 is still held)" in line for line in lines)
    assert "a crash loop, not restarting it again" in lines[-1]
