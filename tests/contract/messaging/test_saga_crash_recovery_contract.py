"""A saga orchestrator killed between steps, and a new process recovering it from the MongoDB log:
the saga completes or compensates, and no step is applied twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from patterns.saga import COMPENSATED, COMPENSATING, COMPLETED, DONE, FAILED, PENDING, RUNNING

REPO = Path(__file__).resolve().parents[3]
CRASHED = 3


@pytest.fixture
def orchestrator_process(worker_script, mongo_url, db):
    """Runs the orchestrator in a fresh process; returns (exit code, printed statuses)."""

    def run(**spec) -> tuple[int, list[str]]:
        spec = {"mongo_url": mongo_url, "db": db.name, **spec}
        environment = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, str(worker_script), json.dumps(spec)], cwd=REPO,
                              env=environment, capture_output=True, text=True, timeout=60)
        assert done.returncode in (0, CRASHED), done.stderr
        return done.returncode, json.loads(done.stdout) if done.returncode == 0 else []

    return run


def invocations(db) -> Counter:
    return Counter((call["kind"], call["step"]) for call in db.calls.find())


def log_entry(db, saga_id: str) -> tuple[str, dict[str, str]]:
    entry = db.sagas.find_one({"_id": saga_id})
    return entry["status"], {step["name"]: step["state"] for step in entry["steps"]}


def test_killed_after_a_step_is_logged_the_saga_resumes_without_repeating_it(
        orchestrator_process, db):
    code, _ = orchestrator_process(mode="run", saga_id="o-1", crash_after=["reserve_stock", DONE])
    assert code == CRASHED
    assert log_entry(db, "o-1") == (RUNNING, {"reserve_stock": DONE, "charge": PENDING,
                                              "confirm_order": PENDING})

    assert orchestrator_process(mode="recover") == (0, [COMPLETED])

    assert invocations(db) == Counter({("do", "reserve_stock"): 1, ("do", "charge"): 1,
                                       ("do", "confirm_order"): 1})
    assert sorted(effect["_id"] for effect in db.effects.find()) == [
        "o-1:charge", "o-1:confirm_order", "o-1:reserve_stock"]
    assert db.sagas.find_one({"_id": "o-1"})["data"]["charge_ref"] == "o-1:charge"


def test_killed_inside_a_step_the_step_runs_again_with_the_same_key_and_applies_once(
        orchestrator_process, db):
    code, _ = orchestrator_process(mode="run", saga_id="o-2", crash_inside="charge")
    assert code == CRASHED
    assert log_entry(db, "o-2")[1]["charge"] == PENDING  # its effect happened, the log missed it

    assert orchestrator_process(mode="recover") == (0, [COMPLETED])

    assert invocations(db)[("do", "charge")] == 2
    assert [call["key"] for call in db.calls.find({"step": "charge"})] == ["o-2:charge"] * 2
    assert db.effects.count_documents({"step": "charge"}) == 1
    assert invocations(db)[("do", "reserve_stock")] == 1


def test_killed_while_compensating_the_saga_finishes_compensating_the_rest(
        orchestrator_process, db):
    code, _ = orchestrator_process(mode="run", saga_id="o-3", fail_step="confirm_order",
                                   crash_after=["charge", COMPENSATED])
    assert code == CRASHED
    assert log_entry(db, "o-3") == (COMPENSATING, {"reserve_stock": DONE, "charge": COMPENSATED,
                                                   "confirm_order": FAILED})

    assert orchestrator_process(mode="recover", fail_step="confirm_order") == (0, [COMPENSATED])

    assert invocations(db) == Counter({
        ("do", "reserve_stock"): 1, ("do", "charge"): 1, ("do", "confirm_order"): 1,
        ("undo", "charge"): 1, ("undo", "reserve_stock"): 1})
    undo_order = [call["step"] for call in db.calls.find({"kind": "undo"})]
    assert undo_order == ["charge", "reserve_stock"]
    assert log_entry(db, "o-3") == (COMPENSATED, {"reserve_stock": COMPENSATED,
                                                  "charge": COMPENSATED, "confirm_order": FAILED})


def test_recover_with_nothing_unfinished_does_nothing(orchestrator_process, db):
    assert orchestrator_process(mode="run", saga_id="o-4") == (0, [COMPLETED])
    assert orchestrator_process(mode="recover") == (0, [])
    assert sum(invocations(db).values()) == 3
