"""Schemathesis throws generated requests at the email service's own OpenAPI document, as an
admin and as a customer, valid and invalid: the answer is never a 5xx.
"""

from __future__ import annotations

import uuid

import pytest
from schemathesis import GenerationMode

from patterns.bus import Bus
from services.email.app import create_app
from tests.helpers import wait_for
from tests.services.fuzzing import fuzz_every_operation

# Schemathesis's negative mode trips a Hypothesis deprecation inside its own strategies.
pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning")


@pytest.fixture
def email_app(build_app, make_settings, bus_namespace, amqp_url):
    namespace = f"{bus_namespace}.email-fuzz-{uuid.uuid4().hex[:8]}"
    app = build_app(create_app, make_settings("email", peers={"users": "http://127.0.0.1:9"},
                                              bus_namespace=namespace))
    bus = Bus(amqp_url, namespace=namespace)
    bus.publish("users", "user.registered", {"user_id": "usr_fuzz", "email": "ann@example.org",
                                             "name": "Ann"})
    bus.close()
    # Something for the admin and for Ann to list: the fuzzer must not read an empty mailbox.
    emails = app.extensions["kit"].db["emails"]
    welcome = wait_for(lambda: emails.find_one({"to": "ann@example.org"}),
                       what="the welcome email to be stored")
    assert welcome["event_type"] == "user.registered"
    return app


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("roles, email", [(["customer", "admin"], None),
                                          (["customer"], "ann@example.org")])
def test_email_api_never_answers_5xx(email_app, mode, roles, email):
    token = email_app.extensions["kit"].tokens.issue(
        "usr_fuzz", roles=roles, **({"email": email} if email else {}))
    fuzzed = fuzz_every_operation(email_app, {"Authorization": f"Bearer {token}"}, modes=[mode])
    assert len(fuzzed) == 3  # with the kit's GET /admin/breakers
