"""The dashboard's web server: one page, and the small JSON API the page polls and posts to.

    GET  /                          the page (static/index.html and its script and styles)
    GET  /api/state                 health, edges, breakers and their transitions, in one answer
    POST /api/edges/<edge>/latency  {"latency_ms": 800, "jitter_ms": 100}
    POST /api/edges/<edge>/cut      refuse the edge's connections
    POST /api/edges/<edge>/restore  the edge back up, with no toxics
    POST /api/check                 `microlab check`'s verdict
    POST /api/orders                {"count": 5}: place that many orders as the demo customer
    GET  /api/session               the demo customer's token, for the live notification feed
    GET  /api/trace                 the spans of the latest request through the gateway
    GET  /api/sagas                 the latest sagas of the orders service's saga log
    GET|POST /socket.io/            relayed to the gateway's, so the page's feed stays on its own
                                    origin (the gateway sends no CORS headers): long-polling as
                                    requests, the upgrade to WebSocket as a byte tunnel
    GET  /health                    {"status": "ok"} (the dashboard itself)

Every answer is JSON; every refusal is `{"error": "<a sentence for the page>"}` with a 4xx or
5xx status, never a stack trace. Posts may carry `"sandbox": "<identity>"` (the run the page
was showing): a page left open across a restart gets a 409 saying so instead of acting blind.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, send_file
from werkzeug.exceptions import HTTPException

from microlab.dashboard.sandbox import DashboardError, Sandbox, TransitionLog
from microlab.processes import ROOT
from patterns.tunnel import WebSocketTunnel
from patterns.tracing import span_tree

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def socket_io_client() -> Path | None:
    """The Socket.IO client `make dashboard-assets` fetched from npm: $SOCKET_IO_JS, else the
    newest build/vendor/socket.io-client-*.min.js; None when it has not been fetched."""
    if os.environ.get("SOCKET_IO_JS"):
        path = Path(os.environ["SOCKET_IO_JS"])
        return path if path.is_absolute() else ROOT / path
    found = sorted((ROOT / "build" / "vendor").glob("socket.io-client-*.min.js"))
    return found[-1] if found else None


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def create_app(sandbox: Sandbox | None = None) -> Flask:
    sandbox = sandbox or Sandbox()
    transitions = TransitionLog()
    shown = {"identity": None}
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")

    @app.errorhandler(DashboardError)
    def refused(error: DashboardError) -> tuple[Response, int]:
        return jsonify(error=error.message), error.status

    @app.before_request
    def loopback_names_only() -> tuple[Response, int] | None:
        # The page can cut edges and hands out a demo token: a web page whose name was
        # rebound to 127.0.0.1 (DNS rebinding) must not get to use it.
        if request.host.rsplit(":", 1)[0] not in LOOPBACK_NAMES:
            return jsonify(error=f"the control room answers only as {', '.join(LOOPBACK_NAMES)}"
                           ), 421
        return None

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return jsonify(error=f"{error.name}: {error.description}"), error.code or 500

    @app.errorhandler(Exception)
    def failed(error: Exception) -> tuple[Response, int]:
        log.exception("dashboard request failed")
        return jsonify(error="the dashboard failed on this request; its log says why"), 500

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise DashboardError("send a JSON object")
        sandbox.check_identity(data.get("sandbox"))
        return data

    @app.get("/")
    def page() -> Response:
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        # The Socket.IO client is built from npm by `make dashboard`; without it the page still
        # works, and its feed panel says how to get it (a missing script would be an error).
        client = socket_io_client()
        script = ('<script src="/vendor/socket.io.min.js"></script>'
                  if client and client.exists() else "")
        return Response(html.replace("<!-- socket.io -->", script), mimetype="text/html")

    @app.get("/vendor/socket.io.min.js")
    def socket_io_script() -> Response:
        client = socket_io_client()
        if client is None or not client.exists():
            raise DashboardError("the Socket.IO client is not built: run `make dashboard-assets`",
                                 404)
        return send_file(client, mimetype="text/javascript", max_age=3600)

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok")

    @app.get("/api/state")
    def state() -> Response:
        about = sandbox.state()
        if about["identity"] != shown["identity"]:
            shown["identity"] = about["identity"]
            transitions.clear()
        health = sandbox.health()
        if all(word == "down" for word in health.values()):
            return jsonify(sandbox=about, health=health, edges=[], breakers={}, transitions=[],
                           problems=[f"no sandbox answers at {about['gateway']}: start one with "
                                     "`make up`; this page keeps looking"])
        edges, problems = sandbox.edges()
        try:
            breakers, unanswered = sandbox.breakers()
        except DashboardError as error:
            breakers, unanswered = {}, [error.message]
        return jsonify(sandbox=about, health=health, edges=edges, breakers=breakers,
                       transitions=transitions.update(breakers)[:50],
                       problems=problems + unanswered)

    @app.post("/api/edges/<path:edge>/latency")
    def slow(edge: str) -> Response:
        data = body()
        return jsonify(message=sandbox.slow(edge, data.get("latency_ms"), data.get("jitter_ms")))

    @app.post("/api/edges/<path:edge>/cut")
    def cut(edge: str) -> Response:
        body()
        return jsonify(message=sandbox.cut(edge))

    @app.post("/api/edges/<path:edge>/restore")
    def restore(edge: str) -> Response:
        body()
        return jsonify(message=sandbox.restore(edge))

    @app.post("/api/check")
    def check() -> Response:
        body()
        return jsonify(sandbox.check())

    @app.post("/api/orders")
    def orders() -> Response:
        return jsonify(results=sandbox.place_orders(body().get("count")))

    @app.get("/api/session")
    def session() -> Response:
        return jsonify(sandbox.session())

    @app.route("/socket.io/", methods=["GET", "POST"])
    def socket_io() -> Response:
        status, content, content_type = sandbox.relay_socket_io(
            request.method, request.query_string.decode(), request.get_data(),
            request.headers.get("Content-Type"))
        return Response(content, status=status, content_type=content_type)

    @app.get("/api/sagas")
    def sagas() -> Response:
        return jsonify(sagas=sandbox.sagas())

    @app.get("/api/trace")
    def trace() -> Response:
        rows = span_tree(sandbox.latest_trace())
        return jsonify(rows=[{**span, "depth": depth} for depth, span in rows])

    app.wsgi_app = WebSocketTunnel(app.wsgi_app, "/socket.io/",  # type: ignore[method-assign]
                                   upstream=lambda: sandbox.current()[0].gateway)
    return app
