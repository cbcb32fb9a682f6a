"""The soak's pure parts: its fault schedule (a function of the seed) and its verdicts."""

from collections import Counter

from bench.soak import (CONFIRMED, DECLINED, LOST, MEMORY_LIMIT, UNAVAILABLE, Sample,
                        memory_verdicts, outcome, plan_faults, verdicts)
from microlab.topology import load_topology

TOPOLOGY = load_topology()
EDGES = [edge.name for edge in TOPOLOGY.edges()]
SERVICES = list(TOPOLOGY.services)
MIB = 2**20


def schedule(seed: int = 42, seconds: float = 600, every: float = 20) -> list:
    return plan_faults(seed, seconds=seconds, every=every, edges=EDGES, services=SERVICES)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another():
    assert schedule(42) == schedule(42)
    assert schedule(42) != schedule(43)


def test_one_fault_per_period_each_half_a_period_long_with_a_calm_tail():
    faults = schedule(seconds=600, every=20)
    assert [fault.at for fault in faults] == [20.0 * n for n in range(1, 30)]
    assert all(f.until == f.at + 10 for f in faults if f.kind != "restart")
    assert faults[-1].at <= 600 - 20
    assert len(schedule(seconds=180, every=20)) == 8


def test_faults_hit_real_edges_and_services_each_kind_once_in_every_three():
    faults = schedule()
    for n in range(0, len(faults) - 2, 3):
        assert sorted(f.kind for f in faults[n:n + 3]) == ["cut", "latency", "restart"]
    for fault in faults:
        assert fault.target in (SERVICES if fault.kind == "restart" else EDGES)
        assert (200 <= fault.latency_ms < 1600) == (fault.kind == "latency")


def samples(process: str, sizes: list[int], *, pid: int = 1, every: float = 10,
            start: float = 0) -> list[Sample]:
    return [Sample(start + n * every, process, pid, size * MIB) for n, size in enumerate(sizes)]


def test_memory_growth_is_judged_between_medians_from_the_judged_minute():
    flat_then_noise = samples("orders", [50] * 12 + [60, 100, 100, 100, 100, 101, 100, 99])
    growth = {g.process: g for g in memory_verdicts(flat_then_noise, judge_from=120,
                                                    end=190)}["orders"]
    # Samples before 120 s (the 50s) do not count; one 60 reading inside is smoothed away.
    assert growth.judged and growth.start_bytes == 100 * MIB and growth.ok()


def test_memory_that_creeps_up_fails_and_so_does_a_single_jump():
    creeping = samples("gateway", [100 + n for n in range(60)])
    jump = samples("mongo", [100] * 30 + [130] * 30)
    found = {g.process: g for g in memory_verdicts(creeping + jump, judge_from=120,
                                                   end=590)}
    assert found["gateway"].growth > MEMORY_LIMIT and not found["gateway"].ok()
    assert abs(found["mongo"].growth - 0.30) < 1e-9 and not found["mongo"].ok()


def test_a_restarted_process_is_judged_on_each_long_enough_life():
    early = samples("users", [200] * 10, pid=1) + samples("users", [60 + n * 0.1 for n in
                                                                     range(50)],
                                                            pid=2, start=100)
    # A leak in a life that a late restart ended is still a leak.
    leaking = (samples("email", [100 + n for n in range(50)], pid=1)
               + samples("email", [60] * 10, pid=2, start=500))
    twice = (samples("gateway", [50] * 20, pid=1) + samples("gateway", [50] * 20, pid=2,
                                                            start=200)
             + samples("gateway", [50] * 20, pid=3, start=400))
    found = {g.process: g for g in memory_verdicts(early + leaking + twice, judge_from=120,
                                                   end=590)}
    # Compared with its old 200 MiB self, users would look as if it had shrunk.
    assert found["users"].judged and found["users"].start_t >= 220
    assert found["users"].start_bytes < 80 * MIB and found["users"].ok()
    assert found["email"].judged and not found["email"].ok() and "life 1 of 2" in found[
        "email"].why
    assert not found["gateway"].judged and "restarted 2 time(s)" in found["gateway"].why


def test_outcomes_name_what_the_careful_client_got():
    assert outcome(201, None) == CONFIRMED
    assert outcome(402, "payment_declined") == DECLINED
    assert outcome(503, "breaker_open") == UNAVAILABLE
    assert outcome(None, None) == outcome(504, None) == LOST
    assert outcome(409, "order_in_progress") == LOST
    assert outcome(500, "internal_error") == "500"


def results(**changes) -> dict:
    base = {"args": {"judge_from": 2.0}, "fault_errors": [],
            "totals": Counter({CONFIRMED: 900, DECLINED: 20, UNAVAILABLE: 30}),
            "end": {"healthy": True, "pending": 0, "settle_s": 4.0, "check_status": 0,
                    "check": {"ok": True, "invariants": []}, "parked": {}},
            "growth": [{"process": "orders", "judged": True, "growth": 0.02,
                        "start_bytes": 100, "end_bytes": 102, "start_t": 120.0}]}
    return {**base, **changes}


def failed(found: list[tuple[bool, str]]) -> list[str]:
    return [sentence for ok, sentence in found if not ok]


def test_a_clean_run_passes_every_verdict():
    assert failed(verdicts(results())) == []


def test_a_single_500_fails_the_soak_and_says_so():
    found = failed(verdicts(results(totals=Counter({CONFIRMED: 900, "500": 1}))))
    assert found == ["the shop gave answers it must never give: 1 × 500"]


def test_a_leak_a_parked_event_or_a_stuck_saga_fails_the_soak():
    leak = results(growth=[{"process": "gateway", "judged": True, "growth": 0.25,
                            "start_bytes": 100 * MIB, "end_bytes": 125 * MIB,
                            "start_t": 120.0}])
    assert "gateway 100 → 125 MiB (+25.0%)" in failed(verdicts(leak))[0]
    parked = results(end={**results()["end"], "parked": {"ns.email.events.dead": 2}})
    assert failed(verdicts(parked)) == ["events parked: ns.email.events.dead: 2"]
    stuck = results(end={**results()["end"], "pending": 3})
    assert "3 orders still pending" in failed(verdicts(stuck))[0]
