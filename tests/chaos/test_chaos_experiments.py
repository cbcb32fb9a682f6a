"""Every experiment of `chaos/`, in a short version, against one sandbox of this module's own.

Each runs through `chaos.runner` (so `chaos run` in a child process, as `make chaos` does)
with short faults and a small load, and its verdict is checked: the journal completed, the
steady state held before and after, the invariant checker was clean, the report was written,
and the orders placed during the fault got the answers the experiment predicts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.probes import wait_for_recovery
from chaos.runner import experiment_names, run_experiment
from microlab.launcher import SandboxProcess
from microlab.rabbit import delete_namespace

pytestmark = pytest.mark.slow

SHORT = {"CHAOS_FAULT_SECONDS": "5", "CHAOS_FLAP_SECONDS": "1.5", "CHAOS_COOLDOWN_SECONDS": "4",
         "CHAOS_MAX_ORDERS": "60", "CHAOS_SETTLE_SECONDS": "20"}
# Orders' reservation gives up after 3 tries of 5 s: the fault must outlast them to show.
LONGER_FAULT = {"inventory-latency": {"CHAOS_FAULT_SECONDS": "18"}}
# The answer most orders placed during the fault get, if the system behaves.
DURING_FAULT = {"payments-outage": "503", "inventory-latency": "503",
                "inventory-flapping": "503", "broker-restart": "201",
                "notifications-crash": "201", "products-db-outage": "503",
                "orders-db-latency": "201", "services-crash": "503",
                "broker-restart-real": "201"}
# A real broker restart drops every connection to it, other programs' too: only where the
# broker is ours (CI sets CHAOS_OWN_BROKER=1; the machine's broker serves nothing else there).
NEEDS_OWN_BROKER = {"broker-restart-real"}
# inventory-latency runs last: it is the longest.
ORDER = sorted(experiment_names(), key=lambda name: name == "inventory-latency")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, amqp_url: str) -> Iterator[dict]:
    runner = SandboxProcess(tmp_path_factory.mktemp("chaos-sandbox") / "run",
                            env={"BREAKER_RECOVERY_TIMEOUT": "3"})
    runner.start()
    try:
        yield {**runner.state, "run_dir": str(runner.run_dir.path)}
    finally:
        code = runner.stop()
        delete_namespace(amqp_url, runner.namespace)
        assert code == 0, f"microlab up exited with {code}:\n{runner.output()[-3000:]}"


def test_every_experiment_is_covered() -> None:
    assert set(ORDER) == set(DURING_FAULT)


@pytest.mark.parametrize("name", ORDER)
def test_the_hypothesis_holds_before_and_after_the_fault(sandbox: dict, name: str,
                                                         tmp_path: Path) -> None:
    if name in NEEDS_OWN_BROKER and os.environ.get("CHAOS_OWN_BROKER") != "1":
        pytest.skip("restarts the RabbitMQ node: set CHAOS_OWN_BROKER=1 if it is yours")
    # Each starts from a healthy shop: the experiments share this sandbox, and the one before may
    # have left a service answering its first /health slowly (CI saw the next one's hypothesis
    # fail before its fault, every step of the earlier one having passed).
    wait_for_recovery(sandbox["urls"]["gateway"], within_seconds=30)
    verdict = run_experiment(name, sandbox, tmp_path, {**SHORT, **LONGER_FAULT.get(name, {})})

    assert {"journal.json", "report.md", "orders.png"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "orders.png").stat().st_size > 10_000
    assert verdict.windows, "no fault window found in the method"
    counts = verdict.counts()
    assert counts["during"][DURING_FAULT[name]] > 0, counts
    assert not any(counts[phase]["500"] for phase in counts), counts  # a known failure is no 500
    assert verdict.status == "completed"
    assert verdict.before is True and verdict.after is True
    assert verdict.deviated is False
    assert verdict.checker_clean, verdict.checker
    assert verdict.failed_activities == []
    # The shop healed within the run: an order confirmed again after the repair.
    assert verdict.recovered_seconds is not None, verdict.activities
    assert f"recovered in {verdict.recovered_seconds} s" in (tmp_path / "report.md").read_text()
    assert verdict.passed
