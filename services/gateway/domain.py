"""The gateway's rules: where each path goes, who may call it, and what travels with a request.

No I/O here. The route table and the list of public routes are data; the functions turn a
request's method, path and headers into decisions that `app.py` carries out and `proxy.py`
sends over the wire. Read this file to know what the gateway does; read the others to see how.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from patterns.api import ApiError, BadRequest, NotFound
from patterns.settings import number_from_env

# -- where requests go -----------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """`/api/<resource>/...` on the gateway is `/api/v1/<resource>/...` on one service."""

    prefix: str  # what clients call, e.g. /api/orders
    service: str  # the upstream's name, as in the topology and settings.peers
    upstream_prefix: str  # where the same resource lives on the upstream
    read_timeout: float = 10.0  # seconds to wait for the upstream's answer


ROUTES: tuple[Route, ...] = (
    Route("/api/users", "users", "/api/v1/users"),
    Route("/api/products", "products", "/api/v1/products"),
    # Placing an order runs the saga (products, inventory, payments) before orders answers.
    Route("/api/orders", "orders", "/api/v1/orders", read_timeout=30.0),
    Route("/api/inventory", "inventory", "/api/v1/inventory"),
    Route("/api/payments", "payments", "/api/v1/payments"),
    Route("/api/notifications", "notifications", "/api/v1/notifications"),
    Route("/api/emails", "email", "/api/v1/emails"),
)

# Socket.IO's long-polling transport is plain HTTP, so the gateway carries it to notifications
# too (a poll waits up to the ping interval, 25 s). WebSocket upgrades are not proxied: a client
# that tries one stays on polling.
SOCKET_IO = Route("/socket.io", "notifications", "/socket.io", read_timeout=60.0)

UPSTREAMS: tuple[str, ...] = tuple(route.service for route in ROUTES)


@dataclass(frozen=True)
class Destination:
    route: Route
    path: str  # the path on the upstream

    @property
    def service(self) -> str:
        return self.route.service


def route_request(path: str) -> Destination:
    """The upstream and upstream path for a gateway path; `NotFound` when no route has it."""
    for route in (*ROUTES, SOCKET_IO):
        if path == route.prefix or path.startswith(route.prefix + "/"):
            rest = path[len(route.prefix):]
            if any(segment in (".", "..") for segment in rest.split("/")):
                # The HTTP client would resolve them and the request could leave its route.
                raise BadRequest("path segments '.' and '..' are not allowed")
            return Destination(route, route.upstream_prefix + rest)
    raise NotFound(f"no route for {path}; the gateway serves "
                   + ", ".join(route.prefix + "/..." for route in ROUTES))


# -- who may call what -----------------------------------------------------------------------


@dataclass(frozen=True)
class RouteRule:
    """Some methods on one path, or on a path and everything below it (`subtree`)."""

    methods: frozenset[str]
    path: str
    subtree: bool = False

    def matches(self, method: str, path: str) -> bool:
        if method.upper() not in self.methods:
            return False
        return path == self.path or (self.subtree and path.startswith(self.path + "/"))


LOGIN_ROUTES: tuple[RouteRule, ...] = (
    RouteRule(frozenset({"POST"}), "/api/users/register"),
    RouteRule(frozenset({"POST"}), "/api/users/login"),
)

# Everything else needs a valid bearer token; the services check it again themselves.
PUBLIC_ROUTES: tuple[RouteRule, ...] = LOGIN_ROUTES + (
    RouteRule(frozenset({"GET", "HEAD"}), "/api/products", subtree=True),
    # Notifications checks the token of the Socket.IO handshake itself.
    RouteRule(frozenset({"GET", "POST"}), "/socket.io", subtree=True),
)


def is_public(method: str, path: str) -> bool:
    return any(rule.matches(method, path) for rule in PUBLIC_ROUTES)


# -- rate limits -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    capacity: int  # the burst
    refill_per_second: float  # the sustained rate


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's knobs, read from the environment (see `from_env` for the names)."""

    default_limit: Limit = Limit(capacity=100, refill_per_second=50.0)
    # Login and register guess passwords and create accounts: a much smaller bucket, per IP.
    login_limit: Limit = Limit(capacity=10, refill_per_second=1.0)
    rate_limit_prefix: str = "microlab:gateway:ratelimit:"
    breaker_failure_threshold: int = 5
    breaker_recovery_timeout: float = 30.0
    dashboard_timeout: float = 1.5  # seconds each dashboard part may take
    health_timeout: float = 1.0  # seconds each upstream's /health may take
    document_timeout: float = 2.0  # seconds each upstream's /openapi.json may take
    # WebSockets tunnelled at once; each holds a server thread (None: half the threads).
    websocket_max_open: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, namespace: str = "") -> GatewayConfig:
        """RATE_LIMIT_CAPACITY, RATE_LIMIT_REFILL_PER_SECOND, LOGIN_RATE_LIMIT_CAPACITY,
        LOGIN_RATE_LIMIT_REFILL_PER_SECOND, RATE_LIMIT_PREFIX (Redis keys; by default under the
        sandbox's namespace), BREAKER_FAILURE_THRESHOLD, BREAKER_RECOVERY_TIMEOUT,
        WEBSOCKET_MAX_OPEN."""
        defaults = cls()

        def number(name: str, default: Any, kind: type = float) -> Any:
            return number_from_env(environ, name, default, kind)

        prefix = f"{namespace or 'microlab'}:gateway:ratelimit:"
        return cls(
            default_limit=Limit(
                number("RATE_LIMIT_CAPACITY", defaults.default_limit.capacity, int),
                number("RATE_LIMIT_REFILL_PER_SECOND", defaults.default_limit.refill_per_second)),
            login_limit=Limit(
                number("LOGIN_RATE_LIMIT_CAPACITY", defaults.login_limit.capacity, int),
                number("LOGIN_RATE_LIMIT_REFILL_PER_SECOND",
                       defaults.login_limit.refill_per_second)),
            rate_limit_prefix=environ.get("RATE_LIMIT_PREFIX") or prefix,
            breaker_failure_threshold=number("BREAKER_FAILURE_THRESHOLD",
                                             defaults.breaker_failure_threshold, int),
            breaker_recovery_timeout=number("BREAKER_RECOVERY_TIMEOUT",
                                            defaults.breaker_recovery_timeout),
            websocket_max_open=number("WEBSOCKET_MAX_OPEN", defaults.websocket_max_open, int),
        )


def limit_bucket(method: str, path: str) -> str:
    """Which bucket a request takes its token from: "login" or "default"."""
    return "login" if any(rule.matches(method, path) for rule in LOGIN_ROUTES) else "default"


def client_key(bucket: str, user_id: str | None, client_ip: str) -> str:
    """Whose bucket: the user's when the token says who they are, else the client address.

    Login attempts are always counted per address: the caller has no token yet, and a guesser
    must not get a fresh bucket per account it tries."""
    if user_id and bucket != "login":
        return f"user:{user_id}"
    return f"ip:{client_ip}"


# -- what travels with a request -------------------------------------------------------------

# Headers about one connection, not the request (RFC 9110 §7.6.1): never forwarded.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})
# Recomputed for the new hop by the HTTP client.
RECOMPUTED = frozenset({"host", "content-length"})
# From the upstream's answer, what the client needs; the gateway adds its own (request id,
# rate limits) and the web server its framing (length, date, server).
RELAYED_RESPONSE_HEADERS = frozenset({
    "content-type", "retry-after", "location", "cache-control", "etag", "last-modified",
    "www-authenticate", "allow", "content-disposition", "content-language"})
RELAYED_RESPONSE_PREFIXES = ("idempotency-", "idempotent-")


def upstream_request_headers(incoming: Iterable[tuple[str, str]], *, client_ip: str,
                             scheme: str, host: str, service_name: str,
                             context: Mapping[str, str]) -> dict[str, str]:
    """The headers sent upstream: the client's end-to-end headers (Authorization included: the
    services check the token again), plus who forwarded the request, for whom, and which
    request and trace it belongs to (`context`: X-Request-Id, traceparent, ...).

    Names are lower-cased: HTTP header names are case-insensitive, and one spelling makes
    repeated headers easy to merge."""
    incoming = [(name.lower(), value) for name, value in incoming]
    named_by_connection = {token.strip().lower() for name, value in incoming
                           if name == "connection" for token in value.split(",")}
    dropped = HOP_BY_HOP | RECOMPUTED | named_by_connection
    headers: dict[str, str] = {}
    for name, value in incoming:
        if name in dropped:
            continue
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    previous_hops = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{previous_hops}, {client_ip}" if previous_hops else client_ip
    headers["x-forwarded-proto"] = scheme
    headers["x-forwarded-host"] = host
    headers.update({name.lower(): value for name, value in context.items()})
    headers["x-service-name"] = service_name
    return headers


def relayed_response_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's response headers that go back to the client unchanged."""
    return [(name, value) for name, value in upstream
            if name.lower() in RELAYED_RESPONSE_HEADERS
            or name.lower().startswith(RELAYED_RESPONSE_PREFIXES)]


# -- failures of the upstreams ---------------------------------------------------------------


class UpstreamUnavailable(ApiError):
    """The upstream's circuit is open: answered at once, without calling it."""

    status, code = 503, "upstream_unavailable"

    def __init__(self, service: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))  # whole seconds, never "retry after 0"
        super().__init__(f"{service} is unavailable (circuit open); retry in {seconds} s",
                         service=service, retry_after=seconds)
        self.retry_after = seconds


class UpstreamUnreachable(ApiError):
    """No connection to the upstream (refused, reset, no healthy instance)."""

    status, code = 502, "upstream_unreachable"

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service} could not be reached ({reason})", service=service)


class UpstreamTimeout(ApiError):
    """The upstream did not answer in time."""

    status, code = 504, "upstream_timeout"

    def __init__(self, service: str, seconds: float) -> None:
        super().__init__(f"{service} did not answer within {seconds:g} s", service=service)


# -- the dashboard: one call, several services -----------------------------------------------


@dataclass(frozen=True)
class DashboardPart:
    name: str
    service: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)


DASHBOARD_PARTS: tuple[DashboardPart, ...] = (
    DashboardPart("profile", "users", "/api/v1/users/me"),
    DashboardPart("orders", "orders", "/api/v1/orders", {"limit": "5"}),
    DashboardPart("notifications", "notifications", "/api/v1/notifications",
                  {"unread": "true", "limit": "5"}),
    DashboardPart("products", "products", "/api/v1/products", {"limit": "5"}),
)


class DashboardUnavailable(ApiError):
    status, code = 503, "dashboard_unavailable"


def assemble_dashboard(answers: Mapping[str, Any], failed: Collection[str]) -> dict[str, Any]:
    """The dashboard from each part's JSON answer; a failed part is null and named in
    `degraded`. Lists come back as the list itself, without their page envelope."""
    if failed and all(part.name in failed for part in DASHBOARD_PARTS):
        raise DashboardUnavailable("no part of the dashboard could be loaded",
                                   degraded=[part.name for part in DASHBOARD_PARTS])
    dashboard: dict[str, Any] = {}
    for part in DASHBOARD_PARTS:
        answer = None if part.name in failed else answers.get(part.name)
        if isinstance(answer, dict) and isinstance(answer.get("items"), list):
            answer = answer["items"]
        dashboard[part.name] = answer
    dashboard["degraded"] = [part.name for part in DASHBOARD_PARTS if part.name in failed]
    return dashboard


# -- /api/health: every upstream at a glance -------------------------------------------------


def upstream_health(status_code: int | None) -> str:
    """One upstream's /health answer in a word: ok (200), degraded (503: a dependency of
    its own is down), down (no answer, or anything else)."""
    return {200: "ok", 503: "degraded"}.get(status_code, "down")


def health_summary(statuses: Mapping[str, str]) -> dict[str, Any]:
    overall = "ok" if all(status == "ok" for status in statuses.values()) else "degraded"
    return {"status": overall, "services": dict(statuses)}


# -- /openapi.json: the whole shop in one document -------------------------------------------

# What the gateway itself may answer on any forwarded route, whatever the upstream documents.
GATEWAY_ANSWERS: Mapping[str, str] = {
    "429": "rate limited by the gateway (see Retry-After and the RateLimit-* headers)",
    "502": "the upstream could not be reached",
    "503": "the upstream's circuit is open, or the upstream is unavailable (see Retry-After)",
    "504": "the upstream did not answer in time",
}
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def public_path(service: str, upstream_path: str) -> str | None:
    """Where a service's path is reached through the gateway (`/api/v1/users/me` of users is
    `/api/users/me`), or None when no route leads there (the path is internal)."""
    for route in ROUTES:
        if route.service != service:
            continue
        if upstream_path == route.upstream_prefix \
                or upstream_path.startswith(route.upstream_prefix + "/"):
            return route.prefix + upstream_path[len(route.upstream_prefix):]
    return None


def public_api_document(own: Mapping[str, Any], upstreams: Mapping[str, Any],
                        failures: Mapping[str, str]) -> dict[str, Any]:
    """One OpenAPI document for everything a client can call on the gateway: its own routes
    (`own`, its document) and every upstream route it forwards, under the public path.

    `upstreams` maps a service to its /openapi.json; `failures` says why a service's document
    could not be fetched. Each upstream operation is tagged with its service, needs a bearer
    token unless the gateway lets it through without one (the service may still ask for one),
    and lists what the gateway may answer instead of the upstream (429, 502, 503, 504). A
    service with no usable document is named in `x-missing-upstreams` and in the description:
    the document is then partial, never an error."""
    document = copy.deepcopy(dict(own))
    paths = dict(document.get("paths", {}))
    for item in paths.values():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                operation.setdefault("tags", ["gateway"])
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    missing: dict[str, str] = {}
    for service in UPSTREAMS:
        upstream = upstreams.get(service)
        if not isinstance(upstream, Mapping) or not isinstance(upstream.get("paths"), Mapping):
            missing[service] = failures.get(service, "no OpenAPI document")
            continue
        for path, item in upstream["paths"].items():
            public = public_path(service, path)
            if public is None or not isinstance(item, Mapping):
                continue
            paths[public] = {key: _forwarded_operation(service, key, public, value)
                             if key in HTTP_METHODS else copy.deepcopy(value)
                             for key, value in item.items()}
        for name, schema in upstream.get("components", {}).get("schemas", {}).items():
            schemas.setdefault(name, schema)  # every service shares patterns.api's Error
    document["paths"] = paths
    if missing:
        document["x-missing-upstreams"] = missing
        document["info"]["description"] = (
            document["info"].get("description", "") + "\n\n**Partial document.** Missing: "
            + "; ".join(f"{service} ({reason})" for service, reason in missing.items()))
    return document


def _forwarded_operation(service: str, method: str, path: str,
                         operation: Mapping[str, Any]) -> dict[str, Any]:
    forwarded = copy.deepcopy(dict(operation))
    forwarded["tags"] = [service]
    responses = forwarded.setdefault("responses", {})
    error = {"description": "", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
    if not is_public(method, path):
        forwarded["security"] = [{"bearer": []}]
        responses.setdefault("401", {**error, "description": "a bearer token is required"})
    for status, description in GATEWAY_ANSWERS.items():
        responses.setdefault(status, {**error, "description": description})
    return forwarded
