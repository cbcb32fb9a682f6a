"""The gateway's rules without a network: routing, who may call what, headers, the dashboard."""

from __future__ import annotations

import pytest

from patterns.api import BadRequest, NotFound
from patterns.settings import SettingsError
from services.gateway.domain import (DASHBOARD_PARTS, ROUTES, UPSTREAMS, DashboardUnavailable,
                                     GatewayConfig, Limit, UpstreamUnavailable,
                                     assemble_dashboard, client_key, health_summary, is_public,
                                     limit_bucket, public_api_document, public_path,
                                     relayed_response_headers, route_request, upstream_health,
                                     upstream_request_headers)

# -- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "service", "upstream_path"), [
    ("/api/users/login", "users", "/api/v1/users/login"),
    ("/api/users", "users", "/api/v1/users"),
    ("/api/products/prd_0123456789ab", "products", "/api/v1/products/prd_0123456789ab"),
    ("/api/orders/ord_1/cancel", "orders", "/api/v1/orders/ord_1/cancel"),
    ("/api/inventory/reservations", "inventory", "/api/v1/inventory/reservations"),
    ("/api/payments/charges", "payments", "/api/v1/payments/charges"),
    ("/api/notifications/read-all", "notifications", "/api/v1/notifications/read-all"),
    ("/api/emails/eml_1", "email", "/api/v1/emails/eml_1"),
])
def test_each_resource_is_rewritten_to_its_service_under_v1(path, service, upstream_path):
    destination = route_request(path)
    assert (destination.service, destination.path) == (service, upstream_path)


def test_every_service_the_lesson_names_has_a_route():
    assert {route.service for route in ROUTES} == {
        "users", "products", "orders", "inventory", "payments", "notifications", "email"}


@pytest.mark.parametrize("path", ["/api/usersx", "/api/unknown/thing", "/api/", "/api/v1/users"])
def test_a_path_no_route_owns_is_not_found(path):
    with pytest.raises(NotFound):
        route_request(path)


@pytest.mark.parametrize("path", ["/api/products/../users/me", "/api/products/./x",
                                  "/api/users/register/.."])
def test_dot_segments_cannot_walk_out_of_a_route(path):
    with pytest.raises(BadRequest):
        route_request(path)


def test_orders_waits_longer_than_the_rest_because_it_runs_the_saga():
    timeouts = {route.service: route.read_timeout for route in ROUTES}
    assert timeouts["orders"] > max(t for name, t in timeouts.items() if name != "orders")


# -- public and private ---------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/users/register"), ("POST", "/api/users/login"),
    ("GET", "/api/products"), ("GET", "/api/products/prd_1"), ("HEAD", "/api/products"),
])
def test_registering_logging_in_and_browsing_products_need_no_token(method, path):
    assert is_public(method, path)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/users/me"), ("GET", "/api/users/login"), ("POST", "/api/users/login/x"),
    ("POST", "/api/products"), ("PATCH", "/api/products/prd_1"), ("GET", "/api/productsx"),
    ("GET", "/api/orders"), ("POST", "/api/orders"), ("GET", "/api/inventory/prd_1"),
    ("GET", "/api/payments/providers"), ("GET", "/api/notifications"), ("GET", "/api/emails"),
])
def test_everything_else_is_private(method, path):
    assert not is_public(method, path)


# -- rate limits ----------------------------------------------------------------------------


def test_login_and_register_have_their_own_bucket():
    assert limit_bucket("POST", "/api/users/login") == "login"
    assert limit_bucket("POST", "/api/users/register") == "login"
    assert limit_bucket("GET", "/api/users/me") == "default"
    assert limit_bucket("GET", "/api/products") == "default"


def test_a_known_user_is_limited_by_id_and_anyone_else_by_address():
    assert client_key("default", "usr_1", "10.0.0.1") == "user:usr_1"
    assert client_key("default", None, "10.0.0.1") == "ip:10.0.0.1"


def test_login_attempts_count_per_address_even_with_a_token():
    assert client_key("login", "usr_1", "10.0.0.1") == "ip:10.0.0.1"


def test_config_defaults_let_a_learner_click_around_and_keep_login_strict():
    config = GatewayConfig.from_env({}, namespace="sandbox-1")
    assert config.default_limit == Limit(100, 50.0)
    assert config.login_limit.capacity < config.default_limit.capacity
    assert config.login_limit.refill_per_second < config.default_limit.refill_per_second
    assert config.rate_limit_prefix.startswith("sandbox-1:")


def test_config_reads_every_knob_from_the_environment():
    config = GatewayConfig.from_env({
        "RATE_LIMIT_CAPACITY": "7", "RATE_LIMIT_REFILL_PER_SECOND": "2.5",
        "LOGIN_RATE_LIMIT_CAPACITY": "3", "LOGIN_RATE_LIMIT_REFILL_PER_SECOND": "0.5",
        "RATE_LIMIT_PREFIX": "mine:", "BREAKER_FAILURE_THRESHOLD": "2",
        "BREAKER_RECOVERY_TIMEOUT": "4", "WEBSOCKET_MAX_OPEN": "3"})
    assert config.default_limit == Limit(7, 2.5)
    assert config.login_limit == Limit(3, 0.5)
    assert config.rate_limit_prefix == "mine:"
    assert (config.breaker_failure_threshold, config.breaker_recovery_timeout) == (2, 4.0)
    assert config.websocket_max_open == 3


@pytest.mark.parametrize("environ", [
    {"RATE_LIMIT_CAPACITY": "lots"}, {"RATE_LIMIT_CAPACITY": "0"},
    {"RATE_LIMIT_REFILL_PER_SECOND": "-1"}, {"BREAKER_FAILURE_THRESHOLD": "2.5"},
    {"WEBSOCKET_MAX_OPEN": "0"},
])
def test_a_bad_knob_is_a_settings_error_naming_it(environ):
    with pytest.raises(SettingsError, match=next(iter(environ))):
        GatewayConfig.from_env(environ)


# -- headers --------------------------------------------------------------------------------


def forwarded(incoming, **overrides):
    options = dict(client_ip="10.0.0.9", scheme="https", host="shop.example",
                   service_name="gateway", context={"X-Request-Id": "req-1"})
    options.update(overrides)
    return upstream_request_headers(incoming, **options)


def test_end_to_end_headers_pass_and_hop_by_hop_ones_stop_at_the_gateway():
    headers = forwarded([
        ("Authorization", "Bearer abc"), ("Content-Type", "application/json"),
        ("Accept", "application/json"), ("Connection", "keep-alive, X-Private-Hop"),
        ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Transfer-Encoding", "chunked"),
        ("Upgrade", "websocket"), ("Proxy-Authorization", "Basic x"), ("X-Private-Hop", "1"),
        ("Host", "shop.example"), ("Content-Length", "12"),
    ])
    assert headers["authorization"] == "Bearer abc"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    for dropped in ("connection", "keep-alive", "te", "transfer-encoding", "upgrade",
                    "proxy-authorization", "x-private-hop", "host", "content-length"):
        assert dropped not in headers


def test_the_gateway_says_who_forwarded_for_whom():
    headers = forwarded([("X-Forwarded-For", "203.0.113.7")])
    assert headers["x-forwarded-for"] == "203.0.113.7, 10.0.0.9"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == "shop.example"
    assert headers["x-service-name"] == "gateway"
    assert forwarded([])["x-forwarded-for"] == "10.0.0.9"


def test_the_request_and_trace_context_travel_and_a_caller_cannot_pose_as_a_service():
    headers = forwarded([("X-Service-Name", "payments"), ("traceparent", "00-old-old-01")],
                        context={"X-Request-Id": "req-7", "traceparent": "00-new-new-01"})
    assert headers["x-request-id"] == "req-7"
    assert headers["traceparent"] == "00-new-new-01"
    assert headers["x-service-name"] == "gateway"


def test_a_repeated_header_is_merged_not_lost():
    assert forwarded([("Accept", "text/html"), ("accept", "application/json")])["accept"] \
        == "text/html, application/json"


def test_only_the_headers_a_client_needs_come_back():
    relayed = dict(relayed_response_headers([
        ("Content-Type", "application/json"), ("Retry-After", "3"),
        ("Location", "/api/v1/orders/ord_1"), ("Idempotency-Replayed", "true"),
        ("Server", "Werkzeug"), ("Connection", "close"), ("Transfer-Encoding", "chunked"),
        ("X-Request-Id", "req-1"), ("Content-Length", "10"),
    ]))
    assert relayed == {"Content-Type": "application/json", "Retry-After": "3",
                       "Location": "/api/v1/orders/ord_1", "Idempotency-Replayed": "true"}


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "told"), [(0.0, 1), (0.2, 1), (1.0, 1), (29.3, 30)])
def test_an_open_circuit_tells_whole_seconds_never_zero(seconds, told):
    error = UpstreamUnavailable("orders", seconds)
    assert error.status == 503 and error.code == "upstream_unavailable"
    assert error.retry_after == told
    assert error.details == {"service": "orders", "retry_after": told}


# -- the dashboard --------------------------------------------------------------------------


def test_the_dashboard_asks_four_services_for_small_pages():
    assert [(part.name, part.service) for part in DASHBOARD_PARTS] == [
        ("profile", "users"), ("orders", "orders"), ("notifications", "notifications"),
        ("products", "products")]
    assert all(part.params.get("limit") == "5" for part in DASHBOARD_PARTS[1:])
    assert DASHBOARD_PARTS[2].params["unread"] == "true"


def test_a_failed_part_is_null_and_named_while_the_rest_is_shown():
    dashboard = assemble_dashboard(
        {"profile": {"id": "usr_1"}, "orders": {"items": [{"id": "ord_1"}], "total": 1},
         "products": {"items": [], "page": 1}},
        failed=["notifications"])
    assert dashboard == {"profile": {"id": "usr_1"}, "orders": [{"id": "ord_1"}],
                         "notifications": None, "products": [], "degraded": ["notifications"]}


def test_a_plain_list_answer_is_kept_as_it_is():
    dashboard = assemble_dashboard({"profile": {}, "orders": [{"id": "ord_1"}],
                                    "notifications": [], "products": []}, failed=[])
    assert dashboard["orders"] == [{"id": "ord_1"}] and dashboard["degraded"] == []


def test_a_dashboard_with_no_part_at_all_is_unavailable():
    with pytest.raises(DashboardUnavailable) as refused:
        assemble_dashboard({}, failed=[part.name for part in DASHBOARD_PARTS])
    assert refused.value.status == 503
    assert refused.value.details["degraded"] == [part.name for part in DASHBOARD_PARTS]


# -- /api/health ----------------------------------------------------------------------------


def test_an_upstream_health_answer_in_one_word():
    assert upstream_health(200) == "ok"
    assert upstream_health(503) == "degraded"
    assert upstream_health(404) == "down"
    assert upstream_health(None) == "down"


def test_the_system_is_ok_only_when_every_upstream_is():
    assert health_summary({"users": "ok", "orders": "ok"})["status"] == "ok"
    report = health_summary({"users": "ok", "orders": "down"})
    assert report == {"status": "degraded", "services": {"users": "ok", "orders": "down"}}


def test_socket_io_polling_goes_to_notifications_unchanged_and_is_public():
    destination = route_request("/socket.io/")
    assert (destination.service, destination.path) == ("notifications", "/socket.io/")
    assert destination.route.read_timeout > 25  # outlasts a long-poll
    assert is_public("GET", "/socket.io/") and is_public("POST", "/socket.io/")


# -- /openapi.json: the whole shop in one document ------------------------------------------


def operation(summary: str, *, secured: bool = False) -> dict:
    found = {"summary": summary, "responses": {"200": {"description": "success"}}}
    if secured:
        found["security"] = [{"bearer": []}]
    return found


GATEWAY_OWN = {"openapi": "3.1.0", "info": {"title": "gateway", "version": "1.0.0"},
               "paths": {"/api/dashboard": {"get": operation("dashboard", secured=True)}},
               "components": {"schemas": {"Error": {"type": "object"}}}}


def canned_document(service: str) -> dict:
    """What a service's /openapi.json looks like: its /api/v1 routes and the kit's own."""
    upstream_prefix = next(route.upstream_prefix for route in ROUTES if route.service == service)
    return {"openapi": "3.1.0", "info": {"title": service, "version": "1.0.0"},
            "paths": {
                upstream_prefix: {"get": operation(f"list {service}"),
                                  "post": operation(f"create {service}")},
                upstream_prefix + "/{item_id}": {"get": operation(f"one of {service}"),
                                                 "parameters": []},
                "/admin/breakers": {"get": operation("breakers", secured=True)},
                "/api/v1/internal-only": {"get": operation("not routed")},
            },
            "components": {"schemas": {"Error": {"type": "object"},
                                       f"{service}_thing": {"type": "object"}}}}


@pytest.mark.parametrize(("service", "upstream_path", "public"), [
    ("users", "/api/v1/users/me", "/api/users/me"),
    ("products", "/api/v1/products/{product_id}", "/api/products/{product_id}"),
    ("email", "/api/v1/emails", "/api/emails"),
    ("users", "/api/v1/usersextra", None),  # a prefix match is not a route
    ("users", "/admin/breakers", None),
    ("products", "/api/v1/users/me", None),  # not products' route
])
def test_a_service_path_has_one_public_path_or_none(service, upstream_path, public):
    assert public_path(service, upstream_path) == public


def test_the_whole_shop_document_has_every_public_route_of_every_service_and_nothing_else():
    document = public_api_document(GATEWAY_OWN, {name: canned_document(name)
                                                 for name in UPSTREAMS}, {})
    expected = {"/api/dashboard"} | {f"{route.prefix}{rest}" for route in ROUTES
                                     for rest in ("", "/{item_id}")}
    assert set(document["paths"]) == expected
    assert "x-missing-upstreams" not in document
    for route in ROUTES:
        item = document["paths"][route.prefix]
        assert set(item) == {"get", "post"}
        assert item["get"]["tags"] == [route.service]
        # The path really leads back where it came from.
        assert route_request(route.prefix + "/x").path == route.upstream_prefix + "/x"
    assert set(document["components"]["schemas"]) == {"Error"} | {f"{name}_thing"
                                                                 for name in UPSTREAMS}


def test_the_gateways_token_rule_and_its_own_answers_are_in_the_document():
    document = public_api_document(GATEWAY_OWN, {name: canned_document(name)
                                                 for name in UPSTREAMS}, {})
    browse = document["paths"]["/api/products"]["get"]
    assert "security" not in browse and "401" not in browse["responses"]  # public
    create = document["paths"]["/api/products"]["post"]
    assert create["security"] == [{"bearer": []}] and "401" in create["responses"]
    for status in ("429", "502", "503", "504"):
        assert status in browse["responses"]


def test_an_upstream_without_a_document_is_named_and_the_rest_is_served():
    documents = {name: canned_document(name) for name in UPSTREAMS if name != "payments"}
    documents["email"] = {"status": "ok"}  # answered, but not with an OpenAPI document
    document = public_api_document(GATEWAY_OWN, documents,
                                   {"payments": "payments answered 503"})
    assert document["x-missing-upstreams"] == {"payments": "payments answered 503",
                                               "email": "no OpenAPI document"}
    assert "payments (payments answered 503)" in document["info"]["description"]
    assert "/api/orders" in document["paths"] and "/api/payments" not in document["paths"]
    assert GATEWAY_OWN["paths"].keys() == {"/api/dashboard"}  # its input is left as it was
