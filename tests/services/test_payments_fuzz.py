"""Schemathesis throws generated input at payments' own /openapi.json: no answer may be a 5xx.

Every case is sent with an admin token and a fresh Idempotency-Key (the header is required on
the POSTs but not part of the OpenAPI document). After each case the providers are put back to
healthy, so a generated `PUT .../providers` that took one down cannot turn the next charge
into its (documented, intended) 503.
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import HypothesisDeprecationWarning
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from services.payments.app import create_app

# Raised by schemathesis' own strategies (they use `random`), not by this code.
pytestmark = pytest.mark.filterwarnings("ignore", category=HypothesisDeprecationWarning)


@pytest.fixture
def payments_app(make_settings, build_app):
    return build_app(create_app, make_settings("payments"))


def test_payments_never_answer_a_server_error(payments_app):
    kit = payments_app.extensions["kit"]
    admin = f"Bearer {kit.tokens.issue('svc:fuzz', roles=['admin'])}"
    client = payments_app.test_client()
    schema = schemathesis.openapi.from_wsgi("/openapi.json", payments_app)

    def restore_providers() -> None:
        for name in ("stripe-sim", "paypal-sim"):
            client.put(f"/api/v1/payments/providers/{name}", headers={"Authorization": admin},
                       json={"down": False, "latency_ms": 0, "failure_rate": 0.0})

    for operation in (result.ok() for result in schema.get_all_operations()):
        cases = st.one_of(operation.as_strategy(generation_mode=mode) for mode in GenerationMode)

        @given(case=cases)
        @settings(max_examples=15, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            try:
                case.call_and_validate(headers={"Authorization": admin,
                                                "Idempotency-Key": uuid.uuid4().hex},
                                       checks=[not_a_server_error])
            finally:
                restore_providers()

        no_server_error()
