"""Schemathesis throws generated input at orders' own /openapi.json: no answer may be a 5xx.

Orders runs with its peers up (stand-ins for products and inventory, the real payments), so a
5xx could only come from orders itself. Generated product ids are unknown to the catalogue
(422); a few known ones are added so some orders go all the way through the saga.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import HypothesisDeprecationWarning
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from services.orders.app import create_app as create_orders
from services.payments.app import create_app as create_payments
from tests.services.orders_peers import Catalogue, Stockroom

# Raised by schemathesis' own strategies (they use `random`), not by this code.
pytestmark = pytest.mark.filterwarnings("ignore", category=HypothesisDeprecationWarning)


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
    schema = schemathesis.openapi.from_wsgi("/openapi.json", orders_app)

    for operation in (result.ok() for result in schema.get_all_operations()):
        cases = st.one_of(operation.as_strategy(generation_mode=mode) for mode in GenerationMode)

        @given(case=cases)
        @settings(max_examples=12, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            case.call_and_validate(headers={"Authorization": token}, checks=[not_a_server_error])

        no_server_error()
