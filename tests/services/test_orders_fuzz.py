"""Schemathesis throws generated input at orders' own /openapi.json: no answer may be a 5xx.

Orders runs with its peers up (stand-ins for products and inventory, the real payments), so a
5xx could only come from orders itself. Generated product ids are unknown to the catalogue
(422); a few known ones are added so some orders go all the way through the saga.
"""

from __future__ import annotations

import pytest
from hypothesis.errors import HypothesisDeprecationWarning

from services.orders.app import create_app as create_orders
from services.payments.app import create_app as create_payments
from tests.services.fuzzing import fuzz_every_operation
from tests.services.orders_peers import Catalogue, Stockroom

# Raised by schemathesis' own strategies (they use `random`), not by this code.
pytestmark = pytest.mark.filterwarnings("ignore", category=HypothesisDeprecationWarning)

# Orders' own operations (the kit adds admin ones): each must be among those fuzzed.
ORDERS_OPERATIONS = {("POST", "/api/v1/orders"), ("GET", "/api/v1/orders"),
                     ("GET", "/api/v1/orders/{order_id}"),
                     ("POST", "/api/v1/orders/{order_id}/cancel")}


@pytest.fixture
def orders_app(make_settings, build_app, serve_app, monkeypatch):
    monkeypatch.setenv("SAGA_RECOVERY_INTERVAL", "3600")
    catalogue, stockroom = Catalogue(), Stockroom()
    for product in ("0", "a", "prd_mug"):
        catalogue.add(product, 500)
        stockroom.stock(product, 1000)
    payments = build_app(create_payments, make_settings("payments"))
    peers = {"products": serve_app(catalogue.app()), "inventory": serve_app(stockroom.app()),
             "payments": serve_app(payments)}
    app = build_app(create_orders, make_settings("orders", peers=peers))
    yield app
    app.extensions["orders.recovery"].stop()


@pytest.mark.parametrize("roles", [["customer"], ["admin"]])
def test_orders_never_answer_a_server_error(orders_app, roles):
    kit = orders_app.extensions["kit"]
    token = f"Bearer {kit.tokens.issue('usr_fuzz', roles=roles)}"
    fuzzed = fuzz_every_operation(orders_app, {"Authorization": token}, max_examples=12)
    assert fuzzed >= ORDERS_OPERATIONS, f"not fuzzed: {ORDERS_OPERATIONS - fuzzed}"
