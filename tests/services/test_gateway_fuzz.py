"""Schemathesis throws generated requests at the gateway's own routes (its /openapi.json):
none may answer with a 5xx. The upstreams are one stand-in that answers every call with JSON,
so the dashboard and /api/health have something to gather."""

from __future__ import annotations

import pytest
import schemathesis
from flask import Flask, jsonify
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from patterns.settings import ServiceSettings
from services.gateway.app import create_app
from services.gateway.domain import UPSTREAMS


def any_upstream() -> Flask:
    """Plays every upstream (`<url>/<service>`): a JSON answer to any GET."""
    app = Flask("any-upstream")

    @app.get("/<service>/<path:path>")
    def answer(service: str, path: str):
        return jsonify(status="ok", items=[])

    return app


@pytest.fixture
def gateway(build_app, serve_app, monkeypatch) -> Flask:
    monkeypatch.setenv("RATE_LIMIT_CAPACITY", "100000")  # the fuzzer is not a noisy client
    url = serve_app(any_upstream())
    peers = {name: f"{url}/{name}" for name in UPSTREAMS}
    return build_app(create_app, ServiceSettings(name="gateway", port=0, peers=peers))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(gateway, mode):
    # Each operation's strategy is driven by hypothesis here: schemathesis' lazy pytest
    # loader (`from_fixture`), which would take the app from a fixture, fails under pytest 9.
    token = gateway.extensions["kit"].tokens.issue("usr_fuzz", roles=["customer", "admin"])
    schema = schemathesis.openapi.from_wsgi("/openapi.json", gateway)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 5  # with the kit's GET /admin/breakers

    for operation in operations:
        takes_input = operation.path_parameters or operation.query or operation.body
        if mode is GenerationMode.NEGATIVE and not takes_input:
            continue  # nothing to make invalid
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=20, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"},
                                   checks=[not_a_server_error])

        no_server_error()
