"""Schemathesis throws generated requests at the users service's own OpenAPI document: valid
ones and invalid ones, to every operation. Whatever it sends, the answer is never a 5xx.

(`schemathesis.pytest.from_fixture` fails under pytest 9 — it sets `node._nodeid` — so each
operation's strategy is driven by Hypothesis here directly.)
"""

from __future__ import annotations

import functools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from services.users.app import create_app

# Schemathesis's negative mode trips a Hypothesis deprecation inside its own strategies.
pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning")
EXAMPLES = settings(max_examples=20, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture
def users_app(build_app, make_settings):
    return build_app(functools.partial(create_app, env={}), make_settings("users"))


@pytest.fixture
def admin_headers(users_app) -> dict[str, str]:
    response = users_app.test_client().post("/api/v1/users/login", json={
        "email": "admin@microlab.local", "password": "admin-password"})
    return {"Authorization": f"Bearer {response.get_json()['token']}"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_users_api_never_answers_5xx(users_app, admin_headers, mode):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", users_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7  # with the kit's GET /admin/breakers

    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @EXAMPLES
        def never_5xx(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=admin_headers, checks=[not_a_server_error])

        never_5xx()
