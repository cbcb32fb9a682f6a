"""Notifications under generated input: schemathesis sends what the app's own /openapi.json
allows, and what it forbids, signed in as a user who is also an admin. No answer may be a
5xx, and every answer must match its declared status and schema.

The cases are drawn per operation inside one test (`operation.as_strategy()` with Hypothesis)
rather than through `schemathesis.pytest.from_fixture`: the app needs the database and broker
fixtures, and schemathesis 4.32.5's lazy fixture schema fails on pytest 9 (it reads
`request.node._nodeid`, which pytest 9 no longer has).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from services.notifications.app import create_app

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def test_no_generated_request_makes_the_service_fail(build_app, make_settings):
    app = build_app(create_app, make_settings("notifications"))
    token = app.extensions["kit"].tokens.issue("usr_fuzz00000000", roles=["customer", "admin"])
    signed_in = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in
                  schemathesis.openapi.from_wsgi("/openapi.json", app).get_all_operations()]
    assert len(operations) == 4, [operation.label for operation in operations]

    for operation in operations:
        cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE))

        @given(case=cases)
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def answers_without_failing(case):
            case.call_and_validate(headers=signed_in, checks=CHECKS)

        answers_without_failing()
