"""Schemathesis throws generated input, valid and invalid, at the products API (described by its
own /openapi.json), with an admin token: no request may end in a 5xx.
"""

from __future__ import annotations

import pytest

from services.products.app import create_app
from tests.services.fuzzing import fuzz_operation, operations_of

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

OPERATIONS = [("GET", "/admin/breakers"),
              ("GET", "/api/v1/products"), ("POST", "/api/v1/products"),
              ("GET", "/api/v1/products/{product_id}"),
              ("PATCH", "/api/v1/products/{product_id}")]


@pytest.fixture
def products_app(make_settings, build_app):
    return build_app(create_app, make_settings("products"))


@pytest.fixture
def admin_headers(products_app) -> dict[str, str]:
    token = products_app.extensions["kit"].tokens.issue("usr_admin", roles=["admin"])
    return {"Authorization": f"Bearer {token}"}


def test_every_operation_of_the_document_is_fuzzed(products_app):
    assert operations_of(products_app) == set(OPERATIONS)


@pytest.mark.parametrize("method, path", OPERATIONS)
def test_no_generated_request_makes_a_server_error(products_app, admin_headers, method, path):
    fuzz_operation(products_app, method, path, admin_headers)
