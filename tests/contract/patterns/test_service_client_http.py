"""The service-to-service HTTP client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from patterns.breaker import CircuitBreaker, CircuitOpenError, State
from patterns.clock import FakeClock
from patterns.http import (BulkheadFull, ServiceClient, ServiceError, ServiceUnavailable,
                           may_have_arrived)
from patterns.retry import Retry, RetryBudget


class Peer:
    """A small WSGI app standing in for another service; it counts what it receives."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.arrived = threading.Semaphore(0)
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        request = Request(environ)
        with self.lock:
            self.hits[request.path] += 1
        return self.route(request)(environ, start_response)

    def route(self, request: Request) -> Response:
        kind = request.path.split("/")[1]
        if kind == "headers":
            return as_json(dict(request.headers))
        if kind == "args":
            return as_json(request.args.to_dict(flat=False))
        if kind == "echo":
            return as_json({"method": request.method, "body": request.get_json(silent=True)})
        if kind == "status":  # /status/<code>/<unique id>
            status = int(request.path.split("/")[2])
            return as_json({"error": f"status {status}"}, status)
        if kind == "text-error":
            return Response("plain failure", status=500)
        if kind == "empty":
            return Response(status=204)
        if kind == "slow":
            time.sleep(float(request.args["seconds"]))
            return as_json({"slow": True})
        if kind == "held":  # waits until the test lets it go
            self.arrived.release()
            self.release.wait(timeout=10)
            return as_json({"held": True})
        return as_json({"error": "no route"}, 404)


def as_json(data, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


@pytest.fixture(scope="module")
def peer():
    app = Peer()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app.url = f"http://127.0.0.1:{server.server_port}"
    yield app
    app.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex


def client(peer, **settings) -> ServiceClient:
    return ServiceClient("inventory", peer.url, **settings)


def no_wait_retry(**settings) -> Retry:
    return Retry(attempts=3, clock=FakeClock(), **settings)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_get_json_returns_the_parsed_body(peer):
    assert client(peer).get_json("/echo", params={"sku": "a"}) == {"method": "GET", "body": None}


def test_query_parameters_travel_and_those_set_to_none_are_left_out(peer):
    sent = client(peer).get_json("/args", params={"sku": "a b&c", "tag": ["x", "y"],
                                                  "page": 2, "status": None})
    assert sent == {"sku": ["a b&c"], "tag": ["x", "y"], "page": ["2"]}


def test_post_put_and_delete_json(peer):
    inventory = client(peer)
    assert inventory.post_json("/echo", {"qty": 2}) == {"method": "POST", "body": {"qty": 2}}
    assert inventory.put_json("/echo", {"qty": 3}) == {"method": "PUT", "body": {"qty": 3}}
    assert inventory.delete_json("/echo")["method"] == "DELETE"
    assert inventory.get_json("/empty") is None


def test_context_headers_and_caller_name_travel_with_the_call(peer):
    incoming = {
        "X-Request-Id": "req-123",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    inventory = client(peer, caller="orders", context=lambda: incoming)

    received = inventory.get_json("/headers")

    assert received["X-Request-Id"] == "req-123"
    assert received["Traceparent"] == incoming["traceparent"]
    assert received["X-Service-Name"] == "orders"


def test_base_url_can_come_from_a_resolver_asked_on_every_call(peer):
    asked = []

    def resolve() -> str:
        asked.append(1)
        return peer.url

    inventory = ServiceClient("inventory", resolve=resolve)
    inventory.get_json("/echo")
    inventory.get_json("/echo")
    assert len(asked) == 2


def test_an_error_answer_raises_service_error_with_status_and_body(peer, unique):
    with pytest.raises(ServiceError) as raised:
        client(peer).get_json(f"/status/409/{unique}")

    error = raised.value
    assert (error.status, error.service, error.method) == (409, "inventory", "GET")
    assert error.body == {"error": "status 409"}
    assert error.url.endswith(f"/status/409/{unique}")
    assert not error.retryable


def test_a_non_json_error_body_is_kept_as_text(peer):
    with pytest.raises(ServiceError) as raised:
        client(peer).get_json("/text-error")
    assert raised.value.body == "plain failure"


def test_a_read_timeout_raises_service_unavailable_quickly(peer):
    inventory = client(peer, read_timeout=0.2)

    started = time.perf_counter()
    with pytest.raises(ServiceUnavailable) as raised:
        inventory.get_json("/slow", params={"seconds": 2})

    assert time.perf_counter() - started < 2 / 2  # gave up long before the peer answered
    assert isinstance(raised.value, ConnectionError)
    assert "Timeout" in raised.value.reason


def test_a_refused_connection_raises_service_unavailable():
    nobody = ServiceClient("inventory", f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(ServiceUnavailable) as raised:
        nobody.get_json("/anything")
    # Refused at once, not timed out; and surely never arrived, so nothing happened there.
    assert "Timeout" not in raised.value.reason
    assert raised.value.may_have_arrived is False


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_idempotent_calls_are_retried_on_5xx(peer, unique, method):
    retry = no_wait_retry()
    path = f"/status/503/{unique}"

    with pytest.raises(ServiceError) as raised:
        client(peer, retry=retry).request(method, path)

    assert raised.value.status == 503
    assert peer.hits[path] == 3
    assert retry.stats.retries == 2


def test_a_post_is_sent_only_once(peer, unique):
    path = f"/status/503/{unique}"
    with pytest.raises(ServiceError):
        client(peer, retry=no_wait_retry()).post_json(path, {"amount": 10})
    assert peer.hits[path] == 1


def test_a_post_with_an_idempotency_key_is_retried(peer, unique):
    path = f"/status/503/{unique}"
    with pytest.raises(ServiceError):
        client(peer, retry=no_wait_retry()).post_json(path, {"amount": 10}, idempotency_key=unique)
    assert peer.hits[path] == 3


def test_client_errors_are_not_retried(peer, unique):
    path = f"/status/404/{unique}"
    with pytest.raises(ServiceError):
        client(peer, retry=no_wait_retry()).get_json(path)
    assert peer.hits[path] == 1


def test_connection_errors_are_retried():
    retry = no_wait_retry()
    nobody = ServiceClient("inventory", f"http://127.0.0.1:{closed_port()}", retry=retry)

    with pytest.raises(ServiceUnavailable):
        nobody.get_json("/anything")
    assert retry.stats.attempts == 3


def test_a_shared_budget_limits_retries_across_clients(peer, unique):
    budget = RetryBudget(ratio=0, min_per_second=0.1, window=10)  # room for exactly 1 retry
    first = client(peer, retry=no_wait_retry(budget=budget))
    second = client(peer, retry=no_wait_retry(budget=budget))

    for inventory in (first, second):
        with pytest.raises(ServiceError):
            inventory.get_json(f"/status/503/{unique}")

    assert peer.hits[f"/status/503/{unique}"] == 3  # 2 requests + the budget's single retry
    assert second.retry.stats.budget_rejections == 1


def test_outages_open_the_breaker_but_client_errors_do_not(peer, unique):
    breaker = CircuitBreaker("inventory", failure_threshold=2)
    inventory = client(peer, breaker=breaker)

    for _ in range(5):
        with pytest.raises(ServiceError):
            inventory.get_json(f"/status/404/{unique}")
    assert breaker.state is State.CLOSED

    for _ in range(2):
        with pytest.raises(ServiceError):
            inventory.get_json(f"/status/500/{unique}")
    assert breaker.state is State.OPEN

    with pytest.raises(CircuitOpenError):
        inventory.get_json(f"/echo/{unique}")
    assert peer.hits[f"/echo/{unique}"] == 0, "an open breaker does not call the peer"


def test_an_open_breaker_is_not_retried(peer, unique):
    breaker = CircuitBreaker("inventory", failure_threshold=1)
    retry = no_wait_retry()
    inventory = client(peer, breaker=breaker, retry=retry)

    with pytest.raises(CircuitOpenError):
        inventory.get_json(f"/status/503/{unique}")  # fails, opens, the retry is refused at once

    assert peer.hits[f"/status/503/{unique}"] == 1
    assert retry.stats.attempts == 2


def test_the_bulkhead_rejects_the_call_beyond_its_limit(peer):
    inventory = client(peer, max_concurrent=2)
    peer.release.clear()

    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(inventory.get_json, "/held") for _ in range(2)]
        for _ in held:
            assert peer.arrived.acquire(timeout=5), "the held calls never reached the peer"

        started = time.perf_counter()
        with pytest.raises(BulkheadFull):
            inventory.get_json("/echo")
        assert time.perf_counter() - started < 0.5, "a full bulkhead fails fast"

        peer.release.set()
        assert [call.result(timeout=5) for call in held] == [{"held": True}] * 2

    assert inventory.get_json("/echo")["method"] == "GET", "slots are given back"


def test_a_call_says_whether_it_may_have_reached_the_peer(peer, unique):
    refused = ServiceClient("nowhere", f"http://127.0.0.1:{closed_port()}", retry=no_wait_retry())
    with pytest.raises(ServiceUnavailable) as never_left:
        refused.post_json("/charges", {}, idempotency_key=unique)
    assert may_have_arrived(never_left.value) is False  # no connection, no charge

    breaker = CircuitBreaker("payments", failure_threshold=1)
    flaky = client(peer, breaker=breaker, retry=no_wait_retry())
    with pytest.raises(CircuitOpenError) as opened:
        flaky.post_json(f"/status/503/{unique}", {}, idempotency_key=unique)
    assert may_have_arrived(opened.value) is True  # the first attempt got there
