"""The behaviour every service inherits: settings from env, JSON errors, health, JSON logs."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from microlab.topology import free_ports
from patterns.logs import JsonFormatter
from patterns.serve import WORKER_BOOT_ERROR
from patterns.settings import ServiceSettings, SettingsError
from patterns.web import create_service_app


def test_settings_come_from_env_with_peers_by_name():
    settings = ServiceSettings.from_env("orders", {
        "PORT": "3003", "MONGO_URL": "mongodb://db/", "PAYMENTS_URL": "http://p:1",
        "AMQP_URL": "amqp://b/", "MICROLAB_ENV": "prod"})
    assert settings.port == 3003 and settings.mongo_db == "orders"
    assert settings.peer_url("payments") == "http://p:1"
    assert not settings.dev_mode
    with pytest.raises(SettingsError, match="USERS_URL is not set for orders"):
        settings.peer_url("users")


@pytest.mark.parametrize("env, message", [
    ({}, "PORT is not set"),
    ({"PORT": "http"}, "PORT is not set"),
    ({"PORT": "1", "THREADS": "0"}, "THREADS must be a whole number"),
])
def test_bad_settings_say_which_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        ServiceSettings.from_env("users", env)


def failing_check() -> None:
    raise ConnectionError("database unreachable")


@pytest.fixture
def client():
    app = create_service_app("demo", health_checks={"mongo": failing_check,
                                                    "broker": lambda: None})

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    return app.test_client()


def test_health_is_503_and_names_the_failing_dependency(client):
    response = client.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded" and body["service"] == "demo"
    assert body["checks"]["mongo"] == {"status": "down", "error": "database unreachable"}
    assert body["checks"]["broker"] == {"status": "ok"}


def test_unknown_route_and_wrong_method_are_json_errors(client):
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"
    wrong = client.post("/health")
    assert wrong.status_code == 405
    assert wrong.get_json()["error"]["code"] == "method_not_allowed"
    # RFC 9110 §15.5.6: a 405 says which methods the resource does support.
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_unexpected_errors_are_a_generic_json_500_without_internals(client):
    response = client.get("/boom", headers={"X-Request-Id": "req-42"})
    assert response.status_code == 500
    assert response.get_json() == {"error": {
        "code": "internal_error", "message": "internal error; see the service log",
        "request_id": "req-42"}}
    assert b"secret internals" not in response.data
    assert b"Traceback" not in response.data


def test_request_id_is_kept_from_the_caller_or_made_up(client):
    assert client.get("/health", headers={"X-Request-Id": "abc"}).headers["X-Request-Id"] == "abc"
    assert len(client.get("/health").headers["X-Request-Id"]) == 32


def test_log_lines_are_json_with_service_and_extra_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("orders"))
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.warning("order placed", extra={"order_id": "o-1", "total": 12.5})
    event = json.loads(stream.getvalue())
    assert event["service"] == "orders" and event["event"] == "order placed"
    assert event["order_id"] == "o-1" and event["total"] == 12.5
    assert event["level"] == "warning" and "request_id" in event and "trace_id" in event


@pytest.mark.parametrize("supervised", ["1", "0"])  # gunicorn's worker alone, or its master too
def test_a_bad_knob_of_a_service_stops_it_with_one_line_naming_it(supervised):
    """A knob only the service's create_app reads (here orders' ORDER_TAKEOVER_AFTER) is read in
    the worker: it still ends the service with one clear line, no traceback, no restart loop."""
    env = {**os.environ, "PORT": str(free_ports(1)[0]), "MICROLAB_SUPERVISED": supervised,
           "ORDER_TAKEOVER_AFTER": "soon"}
    started = subprocess.run([sys.executable, "-m", "services.orders"], env=env, timeout=60,
                             capture_output=True, text=True)
    output = started.stdout + started.stderr
    assert started.returncode == WORKER_BOOT_ERROR, output
    assert "cannot start: ORDER_TAKEOVER_AFTER must be a number, not 'soon'" in output
    assert "Traceback" not in output
