"""The gateway service: the one door clients knock on.

Every `/api/<resource>/...` request is checked here, then forwarded to the service that owns
the resource (`domain.ROUTES`): the caller is rate limited (429), private routes need a valid
bearer token (401), and each upstream sits behind its own circuit breaker (503 at once while
it is open). Besides forwarding, the gateway answers a few routes itself:

- `GET /api/dashboard` — the caller's profile, recent orders, unread notifications and a few
  products, fetched in parallel; a part that fails is null and named in `degraded`;
- `GET /api/health` — every upstream's /health in one answer;
- `GET /api/admin/breakers`, `POST /api/admin/breakers/<name>/reset` — the breakers (admin);
- `/health`;
- `/openapi.json` — one document for the whole shop: the gateway's own routes and every route
  it forwards, under its public path, gathered from each upstream's /openapi.json (an upstream
  that does not answer is named in `x-missing-upstreams`; the rest is still served).

Each request leaves one access-log line (patterns.web) with the upstream and the user added.
`/socket.io/` is forwarded to notifications too: long-polling as plain requests, and an upgrade
to WebSocket through a byte tunnel (patterns.tunnel), so a browser's client upgrades as usual.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import redis
from flask import Flask, Response, g, request

from patterns.api import NotFound
from patterns.auth import Claims, TokenError, Tokens
from patterns.ratelimit import RedisTokenBucket, TokenBucket
from patterns.service import ServiceKit, outgoing_context
from patterns.settings import ServiceSettings
from patterns.tunnel import WebSocketTunnel
from patterns.web import error_body
from services.gateway.domain import (DASHBOARD_PARTS, PUBLIC_ROUTES, ROUTES, UPSTREAMS,
                                     GatewayConfig, Limit, UpstreamUnavailable,
                                     assemble_dashboard, client_key, health_summary, is_public,
                                     limit_bucket, public_api_document,
                                     relayed_response_headers, route_request,
                                     upstream_health, upstream_request_headers)
from services.gateway.proxy import Upstream

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
FANOUT_THREADS = 32  # dashboard parts and health probes run here, not on request threads
FORWARDED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

NULLABLE_OBJECT = {"type": ["object", "null"]}
NULLABLE_LIST = {"type": ["array", "null"], "items": {"type": "object"}}
DASHBOARD = {
    "type": "object",
    "required": ["profile", "orders", "notifications", "products", "degraded"],
    "properties": {
        "profile": NULLABLE_OBJECT, "orders": NULLABLE_LIST,
        "notifications": NULLABLE_LIST, "products": NULLABLE_LIST,
        "degraded": {"type": "array", "items": {"type": "string"}},
    },
}
HEALTH_REPORT = {
    "type": "object",
    "required": ["status", "services"],
    "properties": {
        "status": {"enum": ["ok", "degraded"]},
        "services": {"type": "object", "additionalProperties": {
            "enum": ["ok", "degraded", "down"]}},
    },
}
BREAKER = {
    "type": "object",
    "required": ["name", "state", "retry_after"],
    "properties": {"name": {"type": "string"},
                   "state": {"enum": ["closed", "open", "half_open"]},
                   "retry_after": {"type": "number"}},
}


def create_app(settings: ServiceSettings) -> Flask:
    config = GatewayConfig.from_env(os.environ, namespace=settings.bus_namespace)
    kit = ServiceKit(settings, title="gateway", description=_routes_description())
    app = kit.app
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    upstreams = {
        name: Upstream(name, resolve=_resolver(kit, name), pool_size=settings.threads,
                       breaker=kit.breakers.get(
                           name, failure_threshold=config.breaker_failure_threshold,
                           recovery_timeout=config.breaker_recovery_timeout))
        for name in UPSTREAMS
    }
    fanout = ThreadPoolExecutor(FANOUT_THREADS, thread_name_prefix="gateway-fanout")
    kit.on_stop(fanout.shutdown)
    _guard_the_door(app, kit.tokens, _limiters(settings, config))

    @app.errorhandler(UpstreamUnavailable)
    def circuit_open(error: UpstreamUnavailable) -> tuple[Response, int]:
        response, status = error_body(error.status, error.code, error.message, **error.details)
        response.headers["Retry-After"] = str(error.retry_after)
        return response, status

    def forward(rest: str) -> Response:  # `rest` is request.path without its /api/
        destination = route_request(request.path)
        g.setdefault("access_log_extra", {})["upstream"] = destination.service
        if not is_public(request.method, request.path):
            kit.api.authenticate()
        headers = upstream_request_headers(
            request.headers.items(), client_ip=request.remote_addr or "unknown",
            scheme=request.scheme, host=request.host, service_name=settings.name,
            context=outgoing_context())
        answer = upstreams[destination.service].send(
            request.method, destination.path, query=request.query_string, headers=headers,
            body=request.get_data(), read_timeout=destination.route.read_timeout)
        return Response(answer.content, status=answer.status_code,
                        headers=relayed_response_headers(answer.headers.items()))

    app.add_url_rule("/api/<path:rest>", "forward", forward, methods=FORWARDED_METHODS,
                     provide_automatic_options=False)
    app.add_url_rule("/socket.io/", "socketio", forward, defaults={"rest": ""},
                     methods=["GET", "POST"], provide_automatic_options=False)
    # Socket.IO's WebSocket transport: an upgrade is tunnelled to notifications as raw bytes.
    # Each open one holds a thread: capped, so WebSockets can never take every thread from HTTP.
    app.wsgi_app = WebSocketTunnel(  # type: ignore[method-assign]
        app.wsgi_app, "/socket.io/", upstream=_resolver(kit, "notifications"),
        breaker=upstreams["notifications"].breaker,
        max_open=config.websocket_max_open or max(1, settings.threads // 2))

    @kit.api.get("/api/dashboard", auth=True, response=DASHBOARD, errors=(503,),
                 summary="The caller's profile, recent orders, unread notifications and a "
                         "few products, in one call; failed parts are null and named in "
                         "`degraded` (503 only when every part failed)")
    def dashboard(user: Claims) -> dict:
        headers = _fanout_headers(settings.name, {
            "Authorization": request.headers["Authorization"], "Accept": "application/json"})
        parts = {part.name: _submit(fanout, upstreams[part.service].get_json, part.path,
                                    params=part.params, headers=headers,
                                    timeout=config.dashboard_timeout)
                 for part in DASHBOARD_PARTS}
        answers, failures = _gather(parts, timeout=config.dashboard_timeout + 0.5)
        for name, reason in failures.items():
            log.warning("dashboard part failed", extra={"part": name, "reason": reason})
        return assemble_dashboard(answers, failures)

    def whole_shop_document(own: dict) -> dict:
        headers = _fanout_headers(settings.name, {"Accept": "application/json"})
        fetches = {name: _submit(fanout, upstream.get_json, "/openapi.json", params={},
                                 headers=headers, timeout=config.document_timeout)
                   for name, upstream in upstreams.items()}
        documents, failures = _gather(fetches, timeout=config.document_timeout + 0.5)
        return public_api_document(own, documents, failures)

    kit.api.serve_document(whole_shop_document)

    @kit.api.get("/api/health", response=HEALTH_REPORT,
                 summary="Every upstream's /health in one word: ok, degraded or down")
    def health_of_upstreams() -> dict:
        headers = _fanout_headers(settings.name, {})
        probes = {name: _submit(fanout, upstream.probe, headers=headers,
                                timeout=config.health_timeout)
                  for name, upstream in upstreams.items()}
        wait(probes.values(), timeout=config.health_timeout * 2 + 0.5)
        return health_summary({name: upstream_health(probe.result() if probe.done() else None)
                               for name, probe in probes.items()})

    @kit.api.get("/api/admin/breakers", auth="admin",
                 response={"type": "object", "additionalProperties": BREAKER},
                 summary="Every upstream's circuit breaker: state, counts and settings")
    def breakers(user: Claims) -> dict:
        return kit.breakers.snapshot()

    @kit.api.post("/api/admin/breakers/<name>/reset", auth="admin", response=BREAKER,
                  summary="Close an upstream's circuit and forget its counts")
    def reset_breaker(name: str, user: Claims) -> dict:
        if name not in upstreams:
            raise NotFound(f"no upstream called {name!r}; the upstreams are "
                           + ", ".join(upstreams))
        upstreams[name].breaker.reset()
        log.warning("circuit breaker reset by an admin",
                    extra={"breaker": name, "admin": user.subject})
        return upstreams[name].breaker.snapshot()

    kit.start()
    return app


# -- at the door: who is calling, how often ------------------------------------------------


def _guard_the_door(app: Flask, tokens: Tokens,
                    limiters: dict[str, TokenBucket | RedisTokenBucket]) -> None:
    """Every /api/ request is identified and rate limited before any view runs; every answer
    carries the caller's RateLimit-* headers."""

    @app.before_request
    def identify_and_limit() -> tuple[Response, int] | None:
        if not request.path.startswith("/api/"):
            return None
        claims = _bearer_claims(tokens)
        user_id = claims.subject if claims else None
        g.access_log_extra = {"upstream": None, "user_id": user_id}
        bucket = limit_bucket(request.method, request.path)
        key = client_key(bucket, user_id, request.remote_addr or "unknown")
        try:
            decision = limiters[bucket].take(key)
        except redis.RedisError as error:
            # Failing open: an outage of the limiter's store must not become an outage of
            # the whole API. The services behind have their own protections.
            log.warning("rate limiter unavailable; request let through",
                        extra={"error": str(error)[:200]})
            return None
        g.rate_limit = decision
        if decision.allowed:
            return None
        seconds = decision.headers()["Retry-After"]
        return error_body(429, "rate_limited", f"too many requests; retry in {seconds} s",
                          retry_after=int(seconds))

    @app.after_request
    def edge_headers(response: Response) -> Response:
        decision = g.get("rate_limit")
        if decision is not None:
            response.headers.update(decision.headers())
        if response.status_code == 401 and "WWW-Authenticate" not in response.headers:
            response.headers["WWW-Authenticate"] = 'Bearer realm="microlab"'
        return response


def _bearer_claims(tokens: Tokens) -> Claims | None:
    """Who the bearer token says is calling, or None (no token, or one that fails checks)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        return tokens.verify(token.strip())
    except TokenError:
        return None


def _limiters(settings: ServiceSettings,
              config: GatewayConfig) -> dict[str, TokenBucket | RedisTokenBucket]:
    """One limiter per bucket: in Redis when REDIS_URL is set (shared by every gateway
    process and replica), else in this process."""
    client = (redis.Redis.from_url(settings.redis_url, socket_connect_timeout=0.5,
                                   socket_timeout=0.5) if settings.redis_url else None)

    def limiter(limit: Limit, bucket: str) -> TokenBucket | RedisTokenBucket:
        if client is None:
            return TokenBucket(limit.capacity, limit.refill_per_second)
        return RedisTokenBucket(client, limit.capacity, limit.refill_per_second,
                                prefix=f"{config.rate_limit_prefix}{bucket}:")

    return {"default": limiter(config.default_limit, "default"),
            "login": limiter(config.login_limit, "login")}


# -- upstreams ---------------------------------------------------------------------------


def _resolver(kit: ServiceKit, name: str) -> Callable[[], str]:
    """Where upstream `name` lives: its <NAME>_URL (the chaos proxy of that edge locally),
    else the registry's healthy instances."""
    if name in kit.settings.peers:
        url = kit.settings.peers[name]
        return lambda: url
    if kit.discovery is not None:
        return kit.discovery.balancer(name)

    def not_configured() -> str:
        raise ConnectionError(f"{name.upper()}_URL is not set and there is no registry")

    return not_configured


def _submit(fanout: ThreadPoolExecutor, call: Callable[..., Any], *args: Any,
            **kwargs: Any) -> Future:
    """Run `call` on the fanout pool inside a copy of this request's context variables, so its
    HTTP call belongs to the request's trace (a pool thread starts with an empty context)."""
    return fanout.submit(contextvars.copy_context().run, call, *args, **kwargs)


def _fanout_headers(service_name: str, incoming: dict[str, str]) -> dict[str, str]:
    """Headers for calls made on the fanout threads, built on the request's thread (Flask's
    `request` is not for other threads to read)."""
    return upstream_request_headers(
        incoming.items(), client_ip=request.remote_addr or "unknown", scheme=request.scheme,
        host=request.host, service_name=service_name, context=outgoing_context())


def _gather(futures: dict[str, Future], *, timeout: float) -> tuple[dict[str, Any],
                                                                      dict[str, str]]:
    """Wait up to `timeout` for every fanout call: the answers of those that succeeded, and
    why each of the others failed."""
    wait(futures.values(), timeout=timeout)
    answers, failures = {}, {}
    for name, future in futures.items():
        reason = _failure_of(future)
        if reason is None:
            answers[name] = future.result()
        else:
            failures[name] = reason
    return answers, failures


def _failure_of(future: Future) -> str | None:
    """Why a fanout call failed (None if it succeeded)."""
    if not future.done():
        return "timed out"
    error = future.exception()
    return None if error is None else str(error)[:200] or type(error).__name__


def _routes_description() -> str:
    lines = ["Forwarded routes (each documented below under its public path, tagged with its "
             "service):", ""]
    lines += [f"- `{route.prefix}/...` → {route.service} `{route.upstream_prefix}/...`"
              for route in ROUTES]
    lines += ["", "Public (no token needed):", ""]
    lines += [f"- {' '.join(sorted(rule.methods))} `{rule.path}{'/...' if rule.subtree else ''}`"
              for rule in PUBLIC_ROUTES]
    lines += ["", "Everything else needs `Authorization: Bearer <jwt>`."]
    return "\n".join(lines)
