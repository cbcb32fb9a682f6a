"""The registry service: the part of Consul's HTTP API that service discovery uses.

Enough for `py-consul` code written against a real Consul to run unchanged on a laptop:

    PUT /v1/agent/service/register            ID, Name, Tags, Address, Port, Meta, Weights,
                                              Check / Checks (TTL, or HTTP + Interval),
                                              DeregisterCriticalServiceAfter;
                                              ?replace-existing-checks
    PUT /v1/agent/service/deregister/<id>
    PUT /v1/agent/check/pass|warn|fail/<id>   ?note=
    GET /v1/agent/services, /v1/agent/checks
    GET /v1/health/service/<name>             ?passing ?tag= ?index= ?wait=
    GET /v1/catalog/services                  ?index= ?wait=
    GET /v1/catalog/service/<name>            ?tag= ?index= ?wait=
    GET /v1/status/leader

The catalog lives in memory, like a Consul dev agent: a restarted registry starts empty and
services re-register on their next heartbeat. Errors are Consul's: a status and a plain-text
body (400 for a body or query it cannot read, 404 for an unknown service or check ID).

Blocking queries (`index` + `wait`) hold one of the server's threads, so they are bounded:
`wait` defaults to 5 minutes and is capped there (Consul caps at 10), and at most
`threads - 4` of them wait at once; one more is answered 429 at once, leaving threads free for
registrations, heartbeats and /health.
"""

from __future__ import annotations

import threading

from flask import Blueprint, Flask, Response, jsonify, request

from patterns.settings import ServiceSettings
from patterns.web import create_service_app
from services.registry import wire
from services.registry.checker import HealthChecker
from services.registry.domain import Catalog, CheckStatus, RegistryError

DEFAULT_WAIT = MAX_WAIT = 300.0  # seconds a blocking query waits at most
SPARE_THREADS = 4  # server threads a blocking query may never take


class TooManyBlockingQueries(RegistryError):
    status = 429

    def __init__(self) -> None:
        super().__init__("Too many blocking queries are waiting; retry in a moment")


def create_app(settings: ServiceSettings) -> Flask:
    catalog = Catalog(node=settings.name)
    checker = HealthChecker(catalog).start()
    app = create_service_app(settings.name, health_checks={"checker": checker.assert_running})
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.extensions["registry"] = catalog
    app.extensions["registry.checker"] = checker
    max_blocking = max(1, settings.threads - SPARE_THREADS)
    app.register_blueprint(consul_api(catalog, max_blocking=max_blocking))
    return app


def consul_api(catalog: Catalog, *, max_blocking: int) -> Blueprint:
    api = Blueprint("consul", __name__, url_prefix="/v1")
    blocking_slots = threading.BoundedSemaphore(max_blocking)

    @api.errorhandler(RegistryError)
    def _refused(error: RegistryError) -> Response:
        return Response(str(error), status=error.status, mimetype="text/plain")

    def wait_if_blocking(name: str | None) -> None:
        index, wait = wire.blocking_params(request.args)
        if not index:
            return
        if not blocking_slots.acquire(blocking=False):
            raise TooManyBlockingQueries()
        try:
            catalog.wait_for_change(index, min(wait or DEFAULT_WAIT, MAX_WAIT), name)
        finally:
            blocking_slots.release()

    def with_index(body: object, index: int) -> Response:
        response = jsonify(body)
        response.headers["X-Consul-Index"] = str(index)
        response.headers["X-Consul-KnownLeader"] = "true"
        response.headers["X-Consul-LastContact"] = "0"
        return response

    def reject_filter() -> None:
        if request.args.get("filter"):
            raise wire.BadRequest("filter expressions are not supported by this registry")

    @api.put("/agent/service/register")
    def register_service() -> Response:
        definition = wire.decode_service(request.get_data())
        replace = wire.flag(request.args, "replace-existing-checks")
        catalog.register(definition, replace_existing_checks=replace)
        return Response(status=200)

    @api.put("/agent/service/deregister/<path:service_id>")
    def deregister_service(service_id: str) -> Response:
        catalog.deregister(service_id)
        return Response(status=200)

    @api.put("/agent/check/<any(pass, warn, fail):verdict>/<path:check_id>")
    def update_ttl_check(verdict: str, check_id: str) -> Response:
        status = {"pass": CheckStatus.PASSING, "warn": CheckStatus.WARNING,
                  "fail": CheckStatus.CRITICAL}[verdict]
        catalog.update_ttl(check_id, status, request.args.get("note", ""))
        return Response(status=200)

    @api.get("/agent/services")
    def agent_services() -> Response:
        reject_filter()
        return jsonify({service.id: wire.agent_service(service, catalog)
                        for service in catalog.services()})

    @api.get("/agent/checks")
    def agent_checks() -> Response:
        reject_filter()
        return jsonify({check.id: wire.check_json(check, catalog) for check in catalog.checks()})

    @api.get("/health/service/<path:name>")
    def service_health(name: str) -> Response:
        reject_filter()
        passing_only = wire.flag(request.args, "passing")
        wait_if_blocking(name)
        index, entries = catalog.health(name, passing_only=passing_only,
                                        tags=tuple(request.args.getlist("tag")))
        return with_index([wire.health_entry(entry, catalog) for entry in entries], index)

    @api.get("/catalog/services")
    def catalog_services() -> Response:
        reject_filter()
        wait_if_blocking(None)
        index, names = catalog.service_names()
        return with_index(names, index)

    @api.get("/catalog/service/<path:name>")
    def catalog_service(name: str) -> Response:
        reject_filter()
        wait_if_blocking(name)
        index, services = catalog.instances(name, tuple(request.args.getlist("tag")))
        return with_index([wire.catalog_service(service, catalog) for service in services], index)

    @api.get("/status/leader")
    def leader() -> Response:
        return jsonify(f"{catalog.node_address}:8300")

    return api
