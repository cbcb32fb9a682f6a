"""Schemathesis throws generated input, valid and invalid, at the inventory API (described by its
own /openapi.json), with an admin token: no request may end in a 5xx.

(schemathesis' `from_fixture` does not run on pytest 9, so each operation is fuzzed by a plain
Hypothesis test over the strategies schemathesis builds for it.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from services.inventory.app import create_app

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

OPERATIONS = [("GET", "/admin/breakers"), ("GET", "/api/v1/inventory/{product_id}"),
              ("POST", "/api/v1/inventory/{product_id}/adjust"),
              ("POST", "/api/v1/inventory/reservations"),
              ("GET", "/api/v1/inventory/reservations/{reservation_id}"),
              ("POST", "/api/v1/inventory/reservations/{reservation_id}/release"),
              ("POST", "/api/v1/inventory/reservations/{reservation_id}/commit")]


@pytest.fixture
def inventory_app(make_settings, build_app):
    return build_app(create_app, make_settings("inventory"))


@pytest.fixture
def admin_headers(inventory_app) -> dict[str, str]:
    token = inventory_app.extensions["kit"].tokens.issue("usr_admin", roles=["admin"])
    return {"Authorization": f"Bearer {token}"}


def test_every_operation_of_the_document_is_fuzzed(inventory_app):
    document = inventory_app.test_client().get("/openapi.json").get_json()
    declared = {(method.upper(), path) for path, methods in document["paths"].items()
                for method in methods}
    assert declared == set(OPERATIONS)


@pytest.mark.parametrize("method, path", OPERATIONS)
def test_no_generated_request_makes_a_server_error(inventory_app, admin_headers, method, path):
    operation = schemathesis.openapi.from_wsgi("/openapi.json", inventory_app)[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def no_server_error(case) -> None:
        case.call_and_validate(headers=admin_headers, checks=[not_a_server_error])

    no_server_error()
