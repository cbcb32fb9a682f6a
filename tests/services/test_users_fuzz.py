"""Schemathesis throws generated requests at the users service's own OpenAPI document: valid
ones and invalid ones, to every operation. Whatever it sends, the answer is never a 5xx.
"""

from __future__ import annotations

import functools

import pytest
from schemathesis import GenerationMode

from services.users.app import create_app
from tests.services.fuzzing import fuzz_every_operation

# Schemathesis's negative mode trips a Hypothesis deprecation inside its own strategies.
pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning")


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
    fuzzed = fuzz_every_operation(users_app, admin_headers, modes=[mode])
    assert len(fuzzed) == 7  # with the kit's GET /admin/breakers
