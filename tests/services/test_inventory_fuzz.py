"""Schemathesis throws generated input, valid and invalid, at the inventory API (described by its
own /openapi.json), with an admin token: no request may end in a 5xx.
"""

from __future__ import annotations

import pytest

from services.inventory.app import create_app
from tests.services.fuzzing import fuzz_operation, operations_of

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

OPERATIONS = [("GET", "/admin/breakers"), ("GET", "/api/v1/inventory/{product_id}"),
              ("POST", "/api/v1/inventory/{product_id}/adjust"),
              ("POST", "/api/v1/inventory/reservations"),
              ("GET", "/api/v1/inventory/reservations/{reservation_id}"),
              ("POST", "/api/v1/inventory/reservations/{reservation_id}/release"),
              ("POST", "/api/v1/inventory/reservations/{reservation_id}/commit"),
              ("POST", "/api/v1/inventory/reservations/{reservation_id}/return")]


@pytest.fixture
def inventory_app(make_settings, build_app):
    return build_app(create_app, make_settings("inventory"))


@pytest.fixture
def admin_headers(inventory_app) -> dict[str, str]:
    token = inventory_app.extensions["kit"].tokens.issue("usr_admin", roles=["admin"])
    return {"Authorization": f"Bearer {token}"}


def test_every_operation_of_the_document_is_fuzzed(inventory_app):
    assert operations_of(inventory_app) == set(OPERATIONS)


@pytest.mark.parametrize("method, path", OPERATIONS)
def test_no_generated_request_makes_a_server_error(inventory_app, admin_headers, method, path):
    fuzz_operation(inventory_app, method, path, admin_headers)
