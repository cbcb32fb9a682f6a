"""Schemathesis throws generated input at payments' own /openapi.json: no answer may be a 5xx.

Every case is sent with an admin token and a fresh Idempotency-Key (the header is required on
the POSTs but not part of the OpenAPI document). After each case the providers are put back to
healthy, so a generated `PUT .../providers` that took one down cannot turn the next charge
into its (documented, intended) 503.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis.errors import HypothesisDeprecationWarning

from services.payments.app import create_app
from tests.services.fuzzing import fuzz_every_operation

# Raised by schemathesis' own strategies (they use `random`), not by this code.
pytestmark = pytest.mark.filterwarnings("ignore", category=HypothesisDeprecationWarning)

# Payments' own operations (the kit adds admin ones): each must be among those fuzzed.
PAYMENTS_OPERATIONS = {("POST", "/api/v1/payments/charges"),
                       ("POST", "/api/v1/payments/{payment_id}/refund"),
                       ("GET", "/api/v1/payments/providers"),
                       ("PUT", "/api/v1/payments/providers/{name}"),
                       ("GET", "/api/v1/payments/{payment_id}"), ("GET", "/api/v1/payments")}


@pytest.fixture
def payments_app(make_settings, build_app):
    return build_app(create_app, make_settings("payments"))


def test_payments_never_answer_a_server_error(payments_app):
    kit = payments_app.extensions["kit"]
    admin = f"Bearer {kit.tokens.issue('svc:fuzz', roles=['admin'])}"
    client = payments_app.test_client()

    def restore_providers() -> None:
        for name in ("stripe-sim", "paypal-sim"):
            client.put(f"/api/v1/payments/providers/{name}", headers={"Authorization": admin},
                       json={"down": False, "latency_ms": 0, "failure_rate": 0.0})

    fuzzed = fuzz_every_operation(
        payments_app, lambda: {"Authorization": admin, "Idempotency-Key": uuid.uuid4().hex},
        max_examples=15, after_each=restore_providers)
    assert fuzzed >= PAYMENTS_OPERATIONS, f"not fuzzed: {PAYMENTS_OPERATIONS - fuzzed}"
