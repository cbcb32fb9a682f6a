"""The skeleton every service's Flask app shares: request ids, access log, JSON errors, /health.

Protects against: the failure modes that make a distributed system impossible to debug —
requests nobody can follow across services (each request gets an `X-Request-Id`, kept if the
caller sent one), HTML error pages and stack traces leaking to clients (every error is a JSON
body with the right status; unexpected ones are logged with the request id and answered with a
generic 500), a known outage answered as a bug (the service's database unreachable is a 503
naming the dependency, with `Retry-After`, never a 500), and health endpoints that say "ok" while
a dependency is down (`/health` runs the service's dependency checks and answers 503 when one
fails).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from flask import Flask, Response, g, jsonify, request
from opentelemetry import trace
from pymongo.errors import ConnectionFailure
from werkzeug.exceptions import HTTPException

from patterns.logs import REQUEST_ID_HEADER, request_id_var

# A health check raises when its dependency is unhealthy; it may return a dict of details
# (e.g. {"connected": 3}) shown beside its status.
HealthCheck = Callable[[], dict | None]
# Seconds a client is told to wait when a dependency is unreachable: about the database
# client's own server selection timeout (patterns.mongo), so a retry finds it back or fails fast.
DEPENDENCY_RETRY_AFTER = 2

log = logging.getLogger("access")


def error_body(status: int, code: str, message: str, /, **details: object) -> tuple[Response, int]:
    """The one error shape of every service: {"error": {"code", "message", ...}}."""
    body = {"code": code, "message": message, **details}
    if request_id_var.get():
        body["request_id"] = request_id_var.get()
    return jsonify(error=body), status


def create_service_app(name: str, health_checks: dict[str, HealthCheck] | None = None) -> Flask:
    """A Flask app with the shared behaviour; the service adds its routes to it.

    A route can add fields to its access log line with `g.access_log_extra = {...}`."""
    app = Flask(name)
    app.json.sort_keys = False
    started = time.monotonic()
    checks = dict(health_checks or {})

    @app.before_request
    def _start_request() -> None:
        g.request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        g.request_id_token = request_id_var.set(g.request_id)
        g.started = time.perf_counter()

    @app.after_request
    def _finish_request(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        if request.path != "/health":
            log.info("request", extra={
                "method": request.method, "path": request.path, "status": response.status_code,
                "duration_ms": round((time.perf_counter() - g.get("started", 0)) * 1000, 2),
                "caller": request.headers.get("X-Service-Name"),
                **g.get("access_log_extra", {}),  # a route may add fields, e.g. the upstream
            })
        return response

    @app.teardown_request
    def _forget_request(_error: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id_var.reset(token)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        code = (error.name or "error").lower().replace(" ", "_")
        response, status = error_body(error.code or 500, code, error.description or code)
        # Keep the headers the error carries, such as the `Allow` a 405 must send
        # (RFC 9110 §15.5.6); only its HTML Content-Type gives way to JSON's.
        for header, value in error.get_headers():
            if header.lower() != "content-type":
                response.headers[header] = value
        return response, status

    @app.errorhandler(ConnectionFailure)
    def _database_unavailable(error: ConnectionFailure) -> tuple[Response, int]:
        # Not a bug of ours: the database is unreachable (down, or its edge cut). Say so.
        logging.getLogger(name).warning("database unreachable", extra={"error": str(error)[:200]})
        response, status = error_body(
            503, "dependency_unavailable", f"{name} cannot reach its database; try again shortly",
            dependency="mongo")
        response.headers["Retry-After"] = str(DEPENDENCY_RETRY_AFTER)
        return response, status

    @app.errorhandler(Exception)
    def _unexpected_error(error: Exception) -> tuple[Response, int]:
        logging.getLogger(name).exception("unhandled error")
        trace.get_current_span().record_exception(error)
        return error_body(500, "internal_error", "internal error; see the service log")

    @app.get("/health")
    def health() -> tuple[Response, int]:
        results = {}
        for check_name, check in checks.items():
            try:
                details = check()
                results[check_name] = {"status": "ok", **(details or {})}
            except Exception as error:  # a health check reports any failure, it never raises
                results[check_name] = {"status": "down", "error": str(error)[:200]}
        healthy = all(result["status"] == "ok" for result in results.values())
        body = {"status": "ok" if healthy else "degraded", "service": name,
                "uptime_s": round(time.monotonic() - started, 1), "checks": results}
        return jsonify(body), 200 if healthy else 503

    return app
