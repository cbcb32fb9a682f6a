"""The gateway's /openapi.json in front of the real services' documents: the whole shop on one
page, every public route under its public path, nothing internal, and a partial document (not a
500) when an upstream does not answer. And the 405 every service sends names what is allowed.

Each service is built in-process by its own `create_app`; a stand-in serves the documents they
produced at `<url>/<service>/openapi.json`, where the gateway looks for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
from flask import Flask, Response, jsonify

from patterns.settings import ServiceSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.domain import UPSTREAMS, route_request

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def service_apps(mongo_url, amqp_url, bus_namespace) -> Iterator[dict[str, Flask]]:
    """Every upstream's app, built once for the module (building them takes a few seconds)."""
    apps = {}
    # Peers are never called while documents are read; any URL will do.
    peers = {name: "http://127.0.0.1:9" for name in UPSTREAMS}
    for name in UPSTREAMS:
        create_app = importlib.import_module(f"services.{name}.app").create_app
        apps[name] = create_app(ServiceSettings(
            name=name, port=0, mongo_url=mongo_url, mongo_db=f"test_openapi_{name}",
            amqp_url=amqp_url, bus_namespace=bus_namespace, peers=peers))
    yield apps
    for app in apps.values():
        app.extensions["kit"].stop()


@pytest.fixture(scope="module")
def documents(service_apps) -> dict[str, dict]:
    return {name: app.test_client().get("/openapi.json").get_json()
            for name, app in service_apps.items()}


def documents_stand_in(documents: dict[str, dict], down: set[str]) -> Flask:
    app = Flask("documents")

    @app.get("/<service>/openapi.json")
    def document(service: str) -> Response:
        if service in down:
            return Response("unavailable", status=503)
        return jsonify(documents[service])

    return app


@pytest.fixture
def gateway_document(documents, serve_app, build_app):
    def fetch(down: set[str] = frozenset()) -> dict:
        url = serve_app(documents_stand_in(documents, set(down)))
        gateway = build_app(create_gateway, ServiceSettings(
            name="gateway", port=0, peers={name: f"{url}/{name}" for name in UPSTREAMS}))
        answer = gateway.test_client().get("/openapi.json")
        assert answer.status_code == 200
        return answer.get_json()

    return fetch


def test_every_public_route_of_every_service_is_in_the_gateways_document(documents,
                                                                        gateway_document):
    whole = gateway_document()
    assert "x-missing-upstreams" not in whole
    expected = set()
    for service, document in documents.items():
        for path, item in document["paths"].items():
            if not path.startswith("/api/v1/"):
                continue  # the kit's /admin/breakers: the gateway does not forward it
            public = path.replace("/api/v1/", "/api/", 1)
            assert route_request(public).service == service
            expected |= {(public, method) for method in item if method in METHODS}
    found = {(path, method) for path, item in whole["paths"].items()
             for method in item if method in METHODS}
    assert expected <= found
    assert len(expected) > 30  # the whole shop, not a few routes
    # Nothing internal: every path is either public under /api/ or the gateway's own.
    own = {"/admin/breakers", "/api/dashboard", "/api/health", "/api/admin/breakers",
           "/api/admin/breakers/{name}/reset"}
    assert {path for path, _ in found - expected} == own
    assert not any(path.startswith("/api/v1/") for path, _ in found)
    tags = {operation["tags"][0] for path, item in whole["paths"].items() if path not in own
            for method, operation in item.items() if method in METHODS}
    assert tags == set(UPSTREAMS)


def test_private_routes_ask_for_a_token_and_public_ones_do_not(gateway_document):
    paths = gateway_document()["paths"]
    assert "security" not in paths["/api/products"]["get"]
    assert "security" not in paths["/api/users/login"]["post"]
    assert paths["/api/orders"]["post"]["security"] == [{"bearer": []}]
    assert "401" in paths["/api/orders"]["post"]["responses"]


def test_an_upstream_that_does_not_answer_leaves_a_partial_document_not_an_error(
        gateway_document):
    whole = gateway_document(down={"payments"})
    assert set(whole["x-missing-upstreams"]) == {"payments"}
    assert "payments answered 503" in whole["x-missing-upstreams"]["payments"]
    assert not any(path.startswith("/api/payments") for path in whole["paths"])
    assert any(path.startswith("/api/orders") for path in whole["paths"])
    assert "Missing: payments" in whole["info"]["description"]


@pytest.mark.parametrize("service", UPSTREAMS)
def test_a_wrong_method_is_a_405_that_says_which_methods_are_allowed(service, service_apps):
    wrong = service_apps[service].test_client().delete("/openapi.json")
    assert wrong.status_code == 405
    assert wrong.get_json()["error"]["code"] == "method_not_allowed"
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
