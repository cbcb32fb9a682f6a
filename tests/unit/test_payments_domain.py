"""Payments' rules without I/O: provider decisions, one payment per key, who may see and refund."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from patterns.api import Conflict, Forbidden, NotFound, Unprocessable
from patterns.auth import Claims
from services.payments.domain import (CAPTURED, FAILED, Decision, IdempotencyKeyReused,
                                      NotRefundable, PaymentDeclined, Provider,
                                      ProviderSimulator, ProviderUnavailable, charge_id,
                                      check_may_charge, check_refundable, check_same_charge,
                                      new_payment, visible_to)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BODY = {"order_id": "ord_1", "user_id": "usr_1", "amount_cents": 1200}


def claims(subject: str, *roles: str) -> Claims:
    return Claims(subject=subject, roles=roles, issuer="i", audience="a", issued_at=0,
                  expires_at=1)


def test_a_down_provider_refuses_without_waiting_or_deciding():
    waited: list[float] = []
    simulator = ProviderSimulator(seed="1", sleep=waited.append)
    with pytest.raises(ProviderUnavailable) as refused:
        simulator.charge(Provider("stripe-sim", down=True, latency_ms=500), "k")
    assert refused.value.status == 503 and refused.value.code == "provider_unavailable"
    assert waited == []


def test_a_provider_waits_its_latency_then_captures_or_declines_by_its_failure_rate():
    waited: list[float] = []
    simulator = ProviderSimulator(seed="1", sleep=waited.append)
    assert simulator.charge(Provider("p", failure_rate=0.0, latency_ms=250), "k") == Decision(True)
    declined = simulator.charge(Provider("p", failure_rate=1.0), "k")
    assert not declined.captured and "declined by p" in declined.reason
    assert waited == [0.25, 0.0]


def test_decisions_are_reproducible_per_seed_and_key_and_follow_the_rate():
    flaky = Provider("p", failure_rate=0.3)

    def outcomes(seed: str) -> list[bool]:
        simulator = ProviderSimulator(seed=seed, sleep=lambda _: None)
        return [simulator.charge(flaky, f"key-{n}").captured for n in range(400)]

    assert outcomes("7") == outcomes("7")
    assert outcomes("7") != outcomes("8")
    assert 0.2 < outcomes("7").count(False) / 400 < 0.4


def test_one_key_gives_one_payment_id_and_a_different_body_is_refused():
    assert charge_id("k-1") == charge_id("k-1") != charge_id("k-2")
    assert charge_id("k-1").startswith("pay_") and len(charge_id("k-1")) == 16
    payment = new_payment("k-1", BODY, "stripe-sim", Decision(True), NOW)
    assert payment["_id"] == charge_id("k-1") and payment["status"] == CAPTURED
    check_same_charge(payment, dict(reversed(list(BODY.items()))))  # same body, any key order
    with pytest.raises(IdempotencyKeyReused) as reused:
        check_same_charge(payment, {**BODY, "amount_cents": 1})
    assert reused.value.status == 409


def test_a_declined_charge_is_stored_as_failed_with_its_reason():
    payment = new_payment("k", BODY, "paypal-sim", Decision(False, "declined by paypal-sim"), NOW)
    assert payment["status"] == FAILED and payment["reason"] == "declined by paypal-sim"
    assert payment["refunded_at"] is None
    assert PaymentDeclined("no").status == 402


def test_only_captured_payments_are_refundable():
    check_refundable({"_id": "pay_1", "status": "captured"})
    for status in ("failed", "refunded"):
        with pytest.raises(NotRefundable) as refused:
            check_refundable({"_id": "pay_1", "status": status})
        assert isinstance(refused.value, Conflict) and refused.value.code == "not_refundable"


def test_customers_pay_for_themselves_and_see_only_their_payments():
    check_may_charge(claims("usr_1"), "usr_1")
    check_may_charge(claims("svc:orders", "admin"), "usr_1")
    with pytest.raises(Forbidden):
        check_may_charge(claims("usr_2"), "usr_1")
    payment = {"user_id": "usr_1"}
    assert visible_to(payment, claims("usr_1")) is payment
    assert visible_to(payment, claims("ops", "admin")) is payment
    for missing in (payment, None):
        with pytest.raises(NotFound):
            visible_to(missing, claims("usr_2"))


def test_provider_changes_are_checked_and_partial():
    provider = Provider("stripe-sim", failure_rate=0.1, latency_ms=20)
    assert provider.with_changes({"down": 1}) == Provider("stripe-sim", 0.1, 20, True)
    assert provider.with_changes({"failure_rate": 1}).failure_rate == 1
    for bad in ({"failure_rate": 1.5}, {"latency_ms": -1}, {"name": "x"}):
        with pytest.raises(Unprocessable):
            provider.with_changes(bad)
