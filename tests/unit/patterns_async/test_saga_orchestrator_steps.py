"""The saga orchestrator on an in-memory log: step order, compensation order, keys, recovery."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patterns.saga import (COMPENSATED, COMPENSATING, COMPLETED, DONE, FAILED, PENDING, RUNNING,
                           Saga, SagaOrchestrator, SagaRecord, Step, StepContext)


class Participants:
    """Steps that write down every call; `fail_at` names the actions (and compensations) that
    raise, each as many times as listed."""

    def __init__(self, names: list[str], fail_at: list[str] = ()) -> None:
        self.names = names
        self.fail_at = list(fail_at)
        self.calls: list[tuple[str, str, str]] = []  # (kind, step, idempotency key)

    def saga(self, name: str = "place_order") -> Saga:
        return Saga(name, [Step(step, self._action(step), self._compensation(step))
                           for step in self.names])

    def _action(self, step: str):
        def action(context: StepContext) -> dict[str, Any]:
            self.calls.append(("do", step, context.idempotency_key))
            if step in self.fail_at:
                self.fail_at.remove(step)
                raise RuntimeError(f"{step} refused")
            return {f"{step}_result": len(context.data)}
        return action

    def _compensation(self, step: str):
        def compensation(context: StepContext) -> None:
            self.calls.append(("undo", step, context.idempotency_key))
            if f"undo:{step}" in self.fail_at:
                self.fail_at.remove(f"undo:{step}")
                raise RuntimeError(f"undoing {step} failed")
        return compensation

    def done(self, kind: str) -> list[str]:
        return [step for k, step, _ in self.calls if k == kind]


STEPS = ["validate", "reserve_stock", "charge", "confirm"]


def test_a_saga_runs_every_step_in_order_and_passes_results_forward(saga_log):
    participants = Participants(STEPS)
    orchestrator = SagaOrchestrator(saga_log, participants.saga())

    record = orchestrator.run("place_order", {"order_id": "o-1"}, saga_id="o-1")

    assert record.status == COMPLETED
    assert participants.done("do") == STEPS
    assert participants.done("undo") == []
    assert record.steps == dict.fromkeys(STEPS, DONE)
    # Each action saw the input plus everything returned before it.
    assert record.data == {"order_id": "o-1", "validate_result": 1, "reserve_stock_result": 2,
                           "charge_result": 3, "confirm_result": 4}
    assert saga_log.load("o-1") == record


def test_each_step_gets_a_stable_idempotency_key_from_saga_id_and_step_name(saga_log):
    participants = Participants(["reserve_stock", "charge"], fail_at=["charge"])
    SagaOrchestrator(saga_log, participants.saga()).run("place_order", {}, saga_id="o-7")

    assert [key for _, _, key in participants.calls] == [
        "o-7:reserve_stock", "o-7:charge", "o-7:reserve_stock:undo"]


def test_the_log_is_written_after_every_step(saga_log):
    participants = Participants(["reserve_stock", "charge"], fail_at=["charge"])
    SagaOrchestrator(saga_log, participants.saga()).run("place_order", {}, saga_id="o-2")

    assert [(entry.status, entry.steps) for entry in saga_log.history] == [
        (RUNNING, {"reserve_stock": PENDING, "charge": PENDING}),
        (RUNNING, {"reserve_stock": DONE, "charge": PENDING}),
        (COMPENSATING, {"reserve_stock": DONE, "charge": FAILED}),
        (COMPENSATING, {"reserve_stock": COMPENSATED, "charge": FAILED}),
        (COMPENSATED, {"reserve_stock": COMPENSATED, "charge": FAILED}),
    ]
    assert saga_log.history[-1].error == "charge: RuntimeError: charge refused"


@given(steps=st.integers(min_value=1, max_value=7), data=st.data())
def test_for_any_failing_step_exactly_the_completed_steps_are_compensated_in_reverse(
        make_saga_log, steps, data):
    names = [f"step{i}" for i in range(steps)]
    failing = data.draw(st.integers(min_value=0, max_value=steps - 1), label="failing step")
    participants = Participants(names, fail_at=[names[failing]])

    record = SagaOrchestrator(make_saga_log(), participants.saga()).run("place_order", {})

    assert participants.done("do") == names[: failing + 1]
    assert participants.done("undo") == list(reversed(names[:failing]))
    assert record.status == COMPENSATED
    assert record.steps == {**dict.fromkeys(names[:failing], COMPENSATED), names[failing]: FAILED,
                            **dict.fromkeys(names[failing + 1:], PENDING)}


def test_a_step_without_compensation_has_nothing_to_undo(saga_log):
    calls: list[str] = []
    saga = Saga("notify_then_fail", [
        Step("send_email", lambda context: calls.append("email")),
        Step("charge", lambda context: 1 / 0),
    ])
    record = SagaOrchestrator(saga_log, saga).run("notify_then_fail", {})

    assert calls == ["email"]
    assert record.status == COMPENSATED
    assert record.steps == {"send_email": COMPENSATED, "charge": FAILED}


def test_a_failed_compensation_leaves_the_saga_compensating_until_recover_succeeds(saga_log):
    participants = Participants(STEPS, fail_at=["confirm", "undo:reserve_stock"])
    orchestrator = SagaOrchestrator(saga_log, participants.saga())

    first = orchestrator.run("place_order", {}, saga_id="o-3")
    assert first.status == COMPENSATING
    assert first.steps == {"validate": DONE, "reserve_stock": DONE, "charge": COMPENSATED,
                           "confirm": FAILED}
    assert "undo:reserve_stock" not in participants.fail_at

    [recovered] = orchestrator.recover()

    assert recovered.status == COMPENSATED
    # charge was undone once; reserve_stock was tried twice (the first attempt raised).
    assert participants.done("undo") == ["charge", "reserve_stock", "reserve_stock", "validate"]
    assert orchestrator.recover() == []


def test_recover_continues_a_running_saga_from_its_first_step_not_done(saga_log):
    participants = Participants(STEPS)
    saga_log.create(SagaRecord(id="o-4", saga="place_order", status=RUNNING, data={"order_id": "o-4"},
                               steps={"validate": DONE, "reserve_stock": DONE, "charge": PENDING,
                                      "confirm": PENDING}))

    [record] = SagaOrchestrator(saga_log, participants.saga()).recover()

    assert participants.done("do") == ["charge", "confirm"]
    assert record.status == COMPLETED


def test_recover_finishes_compensating_a_saga_that_was_compensating(saga_log):
    participants = Participants(STEPS)
    saga_log.create(SagaRecord(id="o-5", saga="place_order", status=COMPENSATING, data={},
                               steps={"validate": DONE, "reserve_stock": DONE,
                                      "charge": COMPENSATED, "confirm": FAILED}))

    [record] = SagaOrchestrator(saga_log, participants.saga()).recover()

    assert participants.done("do") == []
    assert participants.done("undo") == ["reserve_stock", "validate"]
    assert record.status == COMPENSATED


@pytest.mark.parametrize("status", [COMPLETED, COMPENSATED])
def test_running_a_finished_saga_id_again_changes_nothing(saga_log, status):
    participants = Participants(STEPS)
    orchestrator = SagaOrchestrator(saga_log, participants.saga())
    saga_log.create(SagaRecord(id="o-6", saga="place_order", status=status, data={},
                               steps=dict.fromkeys(STEPS, DONE)))

    record = orchestrator.run("place_order", {"order_id": "o-6"}, saga_id="o-6")

    assert record.status == status
    assert participants.calls == []


def test_step_names_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        Saga("twice", [Step("charge", lambda c: None), Step("charge", lambda c: None)])


def test_actions_cannot_change_the_saga_data_behind_the_log(saga_log):
    def sneaky(context: StepContext) -> None:
        context.data["paid"] = True  # type: ignore[index]

    record = SagaOrchestrator(saga_log, Saga("s", [Step("sneaky", sneaky)])).run("s", {})

    assert record.status == COMPENSATED  # the TypeError counted as the step failing
    assert "TypeError" in (record.error or "")


def test_a_failed_step_that_may_have_taken_effect_is_compensated_too(saga_log):
    participants = Participants(STEPS, fail_at=["charge"])
    plain = participants.saga()
    # charge's answer may have been lost: it asks to be compensated even when it raised.
    steps = [Step(step.name, step.action, step.compensation,
                  may_have_applied=lambda error, name=step.name: name == "charge")
             for step in plain.steps]
    orchestrator = SagaOrchestrator(saga_log, Saga("place_order", steps))

    record = orchestrator.run("place_order", {"order_id": "o-9"}, saga_id="o-9")

    assert record.status == COMPENSATED
    assert participants.done("undo") == ["charge", "reserve_stock", "validate"]
    assert record.steps["charge"] == COMPENSATED


def test_a_failed_step_is_not_compensated_unless_it_says_so(saga_log):
    participants = Participants(STEPS, fail_at=["charge"])
    record = SagaOrchestrator(saga_log, participants.saga()).run(
        "place_order", {"order_id": "o-10"}, saga_id="o-10")
    assert participants.done("undo") == ["reserve_stock", "validate"]
    assert record.steps["charge"] == FAILED
