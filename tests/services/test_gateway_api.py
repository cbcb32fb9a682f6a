"""The gateway in-process, in front of small Flask stand-ins served on loopback ports.

The stand-ins echo what reached them (method, path, query, headers, body), or answer with a
chosen status, so each test can see both sides of the gateway.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

import pytest
import redis
from flask import Flask, Response, jsonify, request

from patterns.breaker import CircuitBreaker
from patterns.settings import ServiceSettings
from services.gateway.app import create_app
from services.gateway.domain import ROUTES, UPSTREAMS, UpstreamTimeout
from services.gateway.proxy import Upstream
from tests.helpers import missing

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


# -- stand-ins ------------------------------------------------------------------------------


def stand_in(behaviour: dict[str, dict], calls: list) -> Flask:
    """One app playing any number of upstreams: `<url>/<service>` is that service's base URL
    (one server per test keeps teardown quick). By default each service echoes what it
    received; `behaviour[service]` may set `status`, `answer` (this JSON instead of the echo)
    and `delay` (seconds before answering)."""
    app = Flask("stand-in")
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    @app.route("/<service>/<path:path>", methods=methods)
    def answer(service: str, path: str) -> Response:
        how = behaviour.get(service, {})
        seen_path = "/" + path
        calls.append({"service": service, "method": request.method, "path": seen_path,
                      "query": request.query_string.decode(),
                      "authorization": request.headers.get("Authorization"),
                      "traceparent": request.headers.get("traceparent")})
        time.sleep(how.get("delay", 0))
        if path == "health" and "answer" not in how:
            return jsonify(status="ok")
        response = jsonify(how["answer"] if "answer" in how else {
            "service": service, "method": request.method, "path": seen_path,
            "query": request.query_string.decode(),
            "headers": {key.lower(): value for key, value in request.headers.items()},
            "body": request.get_data(as_text=True)})
        response.status_code = how.get("status", 200)
        response.headers["Location"] = "/api/v1/somewhere"
        response.headers["Retry-After"] = "7"
        response.headers["Idempotency-Replayed"] = "false"
        response.headers["X-Upstream-Internal"] = "secret"
        return response

    return app


@pytest.fixture
def upstreams(serve_app):
    """`peers, calls = upstreams(payments={"status": 500})`: a URL for every upstream (all
    served by one stand-in) and the list of calls that reached them."""

    def make(**behaviour: dict) -> tuple[dict[str, str], list]:
        calls: list = []
        url = serve_app(stand_in(behaviour, calls))
        return {name: f"{url}/{name}" for name in UPSTREAMS}, calls

    return make


@pytest.fixture
def echo_everywhere(upstreams) -> dict[str, str]:
    return upstreams()[0]


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def make_gateway(build_app, monkeypatch):
    """`make_gateway(peers, **env)`: the gateway app in front of `peers`, with env knobs."""

    def make(peers: dict[str, str], *, redis_url: str | None = None, **env: str) -> Flask:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = ServiceSettings(name="gateway", port=0, peers=peers, redis_url=redis_url)
        return build_app(create_app, settings)

    return make


def tokens_of(app: Flask):
    return app.extensions["kit"].tokens


def bearer(app: Flask, user_id: str = "usr_0123456789ab", *roles: str) -> dict[str, str]:
    token = tokens_of(app).issue(user_id, roles=roles or ("customer",))
    return {"Authorization": f"Bearer {token}"}


# -- routing and forwarding -----------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.prefix)
def test_each_resource_reaches_its_service_under_api_v1(route, make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere)
    answer = gateway.test_client().get(f"{route.prefix}/some/thing", headers=bearer(gateway))
    assert answer.status_code == 200
    assert answer.json["service"] == route.service
    assert answer.json["path"] == f"{route.upstream_prefix}/some/thing"


def test_method_query_body_and_headers_go_through_and_hop_by_hop_ones_do_not(
        make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere)
    auth = bearer(gateway)
    trace_id = uuid.uuid4().hex
    answer = gateway.test_client().patch(
        "/api/orders/ord_1/notes?tag=a%20b&tag=c", data=b'{"note": "caf\xc3\xa9"}',
        headers={**auth, "Content-Type": "application/json; charset=utf-8",
                 "X-Request-Id": "req-from-client", "X-Forwarded-For": "203.0.113.7",
                 "Connection": "keep-alive, X-Hop-Secret", "X-Hop-Secret": "1",
                 "Keep-Alive": "timeout=5", "X-Service-Name": "payments",
                 "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    seen = answer.json
    assert (seen["method"], seen["path"]) == ("PATCH", "/api/v1/orders/ord_1/notes")
    assert seen["query"] == "tag=a%20b&tag=c"
    assert seen["body"] == '{"note": "café"}'
    headers = seen["headers"]
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["authorization"] == auth["Authorization"]  # the service checks it again
    assert headers["x-request-id"] == "req-from-client"
    assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "localhost"
    assert headers["x-service-name"] == "gateway"
    assert trace_id in headers["traceparent"]  # the caller's trace goes on
    assert "x-hop-secret" not in headers and "keep-alive" not in headers
    assert answer.headers["X-Request-Id"] == "req-from-client"


def test_a_request_id_is_made_when_the_client_sends_none(make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere)
    answer = gateway.test_client().get("/api/products")
    assert answer.json["headers"]["x-request-id"] == answer.headers["X-Request-Id"]
    assert len(answer.headers["X-Request-Id"]) >= 16


@pytest.mark.parametrize("status", [201, 404, 409, 503])
def test_the_upstream_answer_comes_back_as_it_is(status, make_gateway, upstreams):
    gateway = make_gateway(upstreams(orders={"status": status})[0])
    answer = gateway.test_client().post("/api/orders", json={"items": []},
                                        headers=bearer(gateway))
    assert answer.status_code == status
    assert answer.json["path"] == "/api/v1/orders"
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Location"] == "/api/v1/somewhere"
    assert answer.headers["Retry-After"] == "7"
    assert answer.headers["Idempotency-Replayed"] == "false"
    assert "X-Upstream-Internal" not in answer.headers


def test_an_unknown_resource_is_a_json_404(make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere)
    for path in ("/api/widgets", "/api/widgets/1", "/api", "/api/"):
        answer = gateway.test_client().get(path, headers=bearer(gateway))
        assert answer.status_code == 404, path
        assert answer.json["error"]["code"] == "not_found"


def test_a_path_that_walks_out_of_its_route_is_refused(make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere)
    answer = gateway.test_client().get("/api/products/../users/me")
    assert answer.status_code == 400 and answer.json["error"]["code"] == "bad_request"


def test_a_body_too_large_is_a_json_413(make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere)
    answer = gateway.test_client().post("/api/orders", data=b"x" * (2 * 1024 * 1024),
                                        headers=bearer(gateway))
    assert answer.status_code == 413 and "error" in answer.json


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/users/me"), ("POST", "/api/orders"), ("POST", "/api/products"),
    ("GET", "/api/notifications"), ("GET", "/api/emails"), ("GET", "/api/inventory/prd_1"),
])
def test_a_private_route_without_a_valid_token_is_401_and_never_forwarded(
        method, path, make_gateway, upstreams):
    peers, calls = upstreams()
    gateway = make_gateway(peers)
    client = gateway.test_client()
    expired = tokens_of(gateway).issue("usr_1", ttl=-60)
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"},
                    {"Authorization": f"Bearer {expired}"}, {"Authorization": "Basic dTpw"}):
        answer = client.open(path, method=method, headers=headers, json={})
        assert answer.status_code == 401, headers
        assert answer.json["error"]["code"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert calls == []


def test_a_private_route_with_a_token_is_forwarded(make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere)
    answer = gateway.test_client().get("/api/users/me", headers=bearer(gateway))
    assert answer.status_code == 200 and answer.json["path"] == "/api/v1/users/me"


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/users/register"), ("POST", "/api/users/login"),
    ("GET", "/api/products"), ("GET", "/api/products/prd_0123456789ab"),
])
def test_public_routes_need_no_token(method, path, make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere)
    answer = gateway.test_client().open(path, method=method, json={"email": "a@b.c"})
    assert answer.status_code == 200
    assert "authorization" not in answer.json["headers"]


# -- rate limiting --------------------------------------------------------------------------


def test_past_the_burst_a_client_gets_429_with_retry_after(make_gateway, upstreams):
    peers, calls = upstreams()
    gateway = make_gateway(peers,
                           RATE_LIMIT_CAPACITY="3", RATE_LIMIT_REFILL_PER_SECOND="0.1")
    client = gateway.test_client()
    answers = [client.get("/api/products") for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [answer.headers["RateLimit-Remaining"] for answer in answers] == ["2", "1", "0", "0"]
    assert all(answer.headers["RateLimit-Limit"] == "3" for answer in answers)
    refused = answers[-1]
    assert refused.json["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    assert refused.json["error"]["retry_after"] == int(refused.headers["Retry-After"])
    assert len(calls) == 3  # the refused request never reached the service


def test_each_user_has_a_bucket_of_their_own(make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere, RATE_LIMIT_CAPACITY="2",
                           RATE_LIMIT_REFILL_PER_SECOND="0.1")
    client = gateway.test_client()
    alice, bob = bearer(gateway, "usr_alice"), bearer(gateway, "usr_bob")
    assert [client.get("/api/orders", headers=alice).status_code for _ in range(3)] \
        == [200, 200, 429]
    assert client.get("/api/orders", headers=bob).status_code == 200


def test_login_has_a_stricter_bucket_that_leaves_browsing_alone(make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere, LOGIN_RATE_LIMIT_CAPACITY="2",
                           LOGIN_RATE_LIMIT_REFILL_PER_SECOND="0.1")
    client = gateway.test_client()
    logins = [client.post("/api/users/login", json={}).status_code for _ in range(3)]
    assert logins == [200, 200, 429]
    assert client.post("/api/users/register", json={}).status_code == 429
    browse = client.get("/api/products")
    assert browse.status_code == 200 and browse.headers["RateLimit-Limit"] == "100"


@pytest.fixture
def redis_prefix():
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        missing(f"no Redis at {REDIS_URL} ({error}); start one or set REDIS_URL")
    prefix = f"microlab-test:gateway:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_two_gateways_share_one_limit_in_redis(make_gateway, echo_everywhere, redis_prefix):
    knobs = dict(RATE_LIMIT_CAPACITY="4", RATE_LIMIT_REFILL_PER_SECOND="0.1",
                 RATE_LIMIT_PREFIX=redis_prefix)
    first = make_gateway(echo_everywhere, redis_url=REDIS_URL, **knobs).test_client()
    second = make_gateway(echo_everywhere, redis_url=REDIS_URL, **knobs).test_client()
    statuses = [client.get("/api/products").status_code
                for client in (first, second, first, second, first, second)]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_a_limiter_store_that_is_down_lets_requests_through(make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere, redis_url=closed_port_url().replace("http", "redis"))
    answer = gateway.test_client().get("/api/products")
    assert answer.status_code == 200 and "RateLimit-Limit" not in answer.headers


# -- circuit breakers -----------------------------------------------------------------------


def test_an_upstream_answering_503_for_its_own_dependency_does_not_open_its_breaker(
        make_gateway, upstreams):
    # Orders answers 503 after compensating when payments is down: orders itself is healthy.
    peers, calls = upstreams(orders={"status": 503})
    gateway = make_gateway(peers, BREAKER_FAILURE_THRESHOLD="3")
    client = gateway.test_client()
    for _ in range(6):
        assert client.get("/api/orders/ord_1", headers=bearer(gateway)).status_code == 503
    assert len(calls) == 6  # every call reached orders: no breaker in the way
    assert gateway.extensions["kit"].breakers.get("orders").state == "closed"


def test_an_upstream_failing_with_500_opens_its_breaker_and_calls_then_fail_fast(
        make_gateway, upstreams):
    peers, calls = upstreams(payments={"status": 500})
    gateway = make_gateway(peers, BREAKER_FAILURE_THRESHOLD="3")
    client = gateway.test_client()
    auth = bearer(gateway)
    for _ in range(3):  # the upstream's own 500s go back to the client as they are
        failed = client.get("/api/payments/pay_1", headers=auth)
        assert failed.status_code == 500 and failed.json["service"] == "payments"

    def fastest_of_5(path: str, status: int) -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            answer = client.get(path, headers=auth)
            best = min(best, time.perf_counter() - started)
            assert answer.status_code == status, answer.json
        return best

    refused = fastest_of_5("/api/payments/pay_1", 503)
    answer = client.get("/api/payments/pay_1", headers=auth)
    error = answer.json["error"]
    assert (error["code"], error["service"]) == ("upstream_unavailable", "payments")
    assert int(answer.headers["Retry-After"]) == error["retry_after"] >= 1
    assert [call["service"] for call in calls] == ["payments"] * 3  # nothing more reached it
    # The other upstreams have breakers of their own, still closed; and failing fast costs
    # less than a call that goes through (fastest of 5 each, as a busy machine may pause one).
    forwarded = fastest_of_5("/api/orders", 200)
    assert refused < forwarded, (f"refused in {refused * 1000:.2f} ms, "
                                 f"forwarded in {forwarded * 1000:.2f} ms")


def test_4xx_answers_do_not_count_against_the_upstream(make_gateway, upstreams):
    peers, calls = upstreams(orders={"status": 404})
    gateway = make_gateway(peers, BREAKER_FAILURE_THRESHOLD="2")
    client = gateway.test_client()
    auth = bearer(gateway)
    assert [client.get("/api/orders/x", headers=auth).status_code for _ in range(5)] == [404] * 5
    assert len(calls) == 5


def test_a_stopped_upstream_is_a_quick_502(make_gateway):
    gateway = make_gateway({"orders": closed_port_url()})
    answer = gateway.test_client().get("/api/orders", headers=bearer(gateway))
    # Quick: refused, not waited for (a timeout, even a connect timeout, is a 504).
    assert answer.status_code == 502
    assert answer.json["error"]["code"] == "upstream_unreachable"
    assert answer.json["error"]["service"] == "orders"


def test_an_upstream_with_no_url_is_a_502_not_a_500(make_gateway):
    answer = make_gateway({}).test_client().get("/api/products")
    assert answer.status_code == 502 and "PRODUCTS_URL" in answer.json["error"]["message"]


def test_a_slow_upstream_is_a_504_counted_against_it(upstreams):
    peers, _ = upstreams(orders={"delay": 1})
    upstream = Upstream("orders", resolve=lambda: peers["orders"],
                        breaker=CircuitBreaker("orders"))
    with pytest.raises(UpstreamTimeout) as timed_out:
        upstream.send("GET", "/api/v1/orders", headers={}, read_timeout=0.2)
    assert timed_out.value.status == 504
    assert upstream.breaker.snapshot()["failures"] == 1
    upstream.close()


# -- the admin view of breakers -------------------------------------------------------------


def test_breakers_are_for_admins_only(make_gateway, echo_everywhere):
    gateway = make_gateway(echo_everywhere)
    client = gateway.test_client()
    assert client.get("/api/admin/breakers").status_code == 401
    customer = client.get("/api/admin/breakers", headers=bearer(gateway))
    assert customer.status_code == 403 and customer.json["error"]["code"] == "forbidden"
    assert client.post("/api/admin/breakers/orders/reset",
                       headers=bearer(gateway)).status_code == 403


def test_an_admin_sees_every_breaker_and_can_close_one(make_gateway, upstreams):
    peers, _ = upstreams(orders={"status": 502})
    gateway = make_gateway(peers, BREAKER_FAILURE_THRESHOLD="2")
    client = gateway.test_client()
    admin = bearer(gateway, "usr_admin", "customer", "admin")
    for _ in range(3):
        client.get("/api/orders", headers=admin)

    breakers = client.get("/api/admin/breakers", headers=admin)
    assert breakers.status_code == 200
    assert set(breakers.json) == set(UPSTREAMS)
    assert breakers.json["orders"]["state"] == "open"
    assert breakers.json["orders"]["rejected"] == 1
    assert breakers.json["users"]["state"] == "closed"

    reset = client.post("/api/admin/breakers/orders/reset", headers=admin)
    assert reset.status_code == 200 and reset.json["state"] == "closed"
    assert client.get("/api/orders", headers=admin).status_code == 502  # tried again
    unknown = client.post("/api/admin/breakers/nope/reset", headers=admin)
    assert unknown.status_code == 404


# -- the dashboard --------------------------------------------------------------------------


PROFILE = {"id": "usr_1", "name": "Ada"}
DASHBOARD_ANSWERS = {
    "users": {"answer": PROFILE},
    "orders": {"answer": {"items": [{"id": "ord_1"}]}},
    "notifications": {"answer": {"items": [{"id": "ntf_1", "read": False}]}},
    "products": {"answer": {"items": [{"id": "prd_1"}], "total": 1}},
}


def test_the_dashboard_gathers_every_part_with_the_callers_token(make_gateway, upstreams):
    peers, calls = upstreams(**DASHBOARD_ANSWERS)
    gateway = make_gateway(peers)
    auth = bearer(gateway, "usr_1")
    trace_id = uuid.uuid4().hex
    answer = gateway.test_client().get("/api/dashboard", headers={
        **auth, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert answer.status_code == 200
    assert answer.json == {"profile": {"id": "usr_1", "name": "Ada"},
                           "orders": [{"id": "ord_1"}],
                           "notifications": [{"id": "ntf_1", "read": False}],
                           "products": [{"id": "prd_1"}], "degraded": []}
    assert sorted((call["method"], call["path"], call["query"]) for call in calls) == [
        ("GET", "/api/v1/notifications", "unread=true&limit=5"),
        ("GET", "/api/v1/orders", "limit=5"), ("GET", "/api/v1/products", "limit=5"),
        ("GET", "/api/v1/users/me", "")]
    assert all(call["authorization"] == auth["Authorization"] for call in calls)
    # The parts run on other threads, and still belong to the caller's trace.
    assert all(trace_id in call["traceparent"] for call in calls)


def test_a_part_that_is_down_is_null_and_named_in_degraded(make_gateway, upstreams):
    peers, _ = upstreams(**DASHBOARD_ANSWERS)
    gateway = make_gateway({**peers, "notifications": closed_port_url()})
    answer = gateway.test_client().get("/api/dashboard", headers=bearer(gateway))
    assert answer.status_code == 200
    assert answer.json["notifications"] is None
    assert answer.json["degraded"] == ["notifications"]
    assert answer.json["profile"] == PROFILE


def test_a_slow_part_does_not_hold_the_dashboard(make_gateway, upstreams):
    peers, _ = upstreams(**{**DASHBOARD_ANSWERS, "users": {"answer": PROFILE, "delay": 4}})
    gateway = make_gateway(peers)
    started = time.perf_counter()
    answer = gateway.test_client().get("/api/dashboard", headers=bearer(gateway))
    assert time.perf_counter() - started < 3.0
    assert answer.status_code == 200
    assert answer.json["profile"] is None and answer.json["degraded"] == ["profile"]


def test_a_dashboard_with_every_part_down_is_503(make_gateway):
    down = closed_port_url()
    gateway = make_gateway({name: down for name in UPSTREAMS})
    answer = gateway.test_client().get("/api/dashboard", headers=bearer(gateway))
    assert answer.status_code == 503
    assert answer.json["error"]["code"] == "dashboard_unavailable"
    assert answer.json["error"]["degraded"] == ["profile", "orders", "notifications",
                                                "products"]


def test_the_dashboard_needs_a_token(make_gateway, upstreams):
    peers, calls = upstreams(**DASHBOARD_ANSWERS)
    gateway = make_gateway(peers)
    assert gateway.test_client().get("/api/dashboard").status_code == 401
    assert calls == []


# -- health and the access log --------------------------------------------------------------


def test_api_health_reports_every_upstream_in_one_word(make_gateway, upstreams):
    served, _ = upstreams(orders={"status": 503, "answer": {"status": "degraded"}})
    peers = {name: closed_port_url() for name in UPSTREAMS}
    peers.update(users=served["users"], orders=served["orders"])
    gateway = make_gateway(peers)
    answer = gateway.test_client().get("/api/health")
    assert answer.status_code == 200
    assert answer.json["status"] == "degraded"
    assert answer.json["services"] == {**{name: "down" for name in UPSTREAMS},
                                       "users": "ok", "orders": "degraded"}


def test_each_request_leaves_one_access_line_with_upstream_and_user(
        make_gateway, echo_everywhere, caplog):
    gateway = make_gateway(echo_everywhere)
    with caplog.at_level(logging.INFO, logger="access"):
        gateway.test_client().get("/api/orders", headers=bearer(gateway, "usr_42"))
    lines = [record for record in caplog.records if record.name == "access"]
    assert len(lines) == 1
    line = lines[0]
    assert (line.method, line.path, line.status) == ("GET", "/api/orders", 200)
    assert (line.upstream, line.user_id) == ("orders", "usr_42")
    assert line.duration_ms >= 0


def test_the_openapi_document_covers_the_gateways_own_routes(make_gateway):
    document = make_gateway({}).test_client().get("/openapi.json").json
    assert set(document["paths"]) == {"/admin/breakers", "/api/dashboard", "/api/health",
                                      "/api/admin/breakers",
                                      "/api/admin/breakers/{name}/reset"}
    for route in ROUTES:
        assert route.prefix in document["info"]["description"]
