"""Service-to-service HTTP: one client that times out, retries safely, and fails fast.

Protects against: a peer that never answers (without a timeout the caller's thread waits forever),
a peer that blips (a retry hides it), a peer that is down (a breaker stops calling it), a peer that
is slow (a bulkhead caps how many of our threads it can hold), and a request that cannot be
followed across services (the request id and trace context travel with every call).

Knobs (`ServiceClient(service, base_url, ...)`):

- `base_url` or `resolve` — where the peer lives: a fixed URL, or a callable returning one,
  asked before every attempt (service discovery plugs in here).
- `connect_timeout` (1 s), `read_timeout` (5 s) — how long to wait for a connection and then for
  each chunk of the answer. Both expire as `ServiceUnavailable`.
- `caller` (none) — our own name, sent as `X-Service-Name` so the peer's logs say who called.
- `context` (nothing) — a callable returning the headers of the current request to pass on:
  `X-Request-Id`, `traceparent` (W3C trace context) and friends. Tracing plugs in here.
- `retry` (none) — a `patterns.retry.Retry`, used only for idempotent calls: GET, HEAD, PUT,
  DELETE, OPTIONS, and POST carrying an `Idempotency-Key`. A POST without one is sent once: it
  may have taken effect even if the answer was lost. Share one `RetryBudget` between clients.
- `breaker` (none) — a `patterns.breaker.CircuitBreaker` for this peer. Only outages count
  against it (connection errors, timeouts, 5xx); a 4xx is an answer from a healthy peer.
- `max_concurrent` (unlimited) — the bulkhead: at most this many calls in flight to this peer;
  one more fails at once with `BulkheadFull` instead of queueing.

Errors: `ServiceError(status, body, service, method, url)` for any answer >= 400 (its
`retryable` is true for 502/503/504); `ServiceUnavailable` (a `ConnectionError`) when no answer
came: refused, reset, timed out. A call passes through retry → bulkhead → breaker → the wire, so
each attempt is counted by the breaker and no thread sleeps between retries holding a bulkhead
slot.

    inventory = ServiceClient(
        "inventory", "http://127.0.0.1:5004", caller="orders",
        retry=Retry(attempts=3, budget=budget), breaker=breakers.get("inventory"),
    )
    stock = inventory.get_json("/api/v1/stock/sku-1")
    inventory.post_json("/api/v1/reservations", {"sku": "sku-1", "qty": 2},
                        idempotency_key=order_id)
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import threading
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

import urllib3
from urllib3 import BaseHTTPResponse, HTTPHeaderDict, PoolManager
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, LocationValueError,
                                NewConnectionError, ReadTimeoutError)

from patterns.breaker import CircuitBreaker, CircuitOpenError
from patterns.retry import Retry

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRYABLE_STATUSES = frozenset({502, 503, 504})

Headers = Mapping[str, str]


class ServiceError(Exception):
    """The peer answered with an error status."""

    def __init__(self, status: int, body: Any, service: str, method: str, url: str) -> None:
        super().__init__(f"{service} answered {status} to {method} {url}: {body!r}"[:500])
        self.status = status
        self.body = body
        self.service = service
        self.method = method
        self.url = url

    @property
    def retryable(self) -> bool:
        """True for the statuses that usually mean "try again soon" (502, 503, 504)."""
        return self.status in RETRYABLE_STATUSES


class ServiceUnavailable(ConnectionError):
    """No answer came: the connection was refused or dropped, or a timeout expired.

    `may_have_arrived` tells a lost answer from a request that never left: False only when no
    attempt could have reached the peer (no connection was ever made), so whatever the request
    asked for surely did not happen. A timed-out charge may have been made all the same."""

    def __init__(self, service: str, method: str, url: str, reason: str,
                 may_have_arrived: bool = True) -> None:
        super().__init__(f"{service} unavailable for {method} {url}: {reason}")
        self.service = service
        self.method = method
        self.url = url
        self.reason = reason
        self.may_have_arrived = may_have_arrived


def may_have_arrived(error: Exception) -> bool:
    """After `ServiceClient.request` raised `error`, could the request have reached the peer (so
    what it asked for may have happened)? Only a call that surely never left says no."""
    if isinstance(error, ServiceError):
        return True  # the peer answered: it got the request
    return getattr(error, "may_have_arrived", True)


def _why(error: HTTPError) -> tuple[str, bool]:
    """What went wrong on the wire, and whether the request may have reached the peer: not
    when the connection itself failed (refused, or not made in time)."""
    if isinstance(error, NewConnectionError):  # refused (a subclass of the connect timeout)
        return "ConnectionError", False
    if isinstance(error, ConnectTimeoutError):
        return "ConnectTimeout", False
    if isinstance(error, ReadTimeoutError):
        return "ReadTimeout", True
    return "ConnectionError", True  # reset, closed mid-answer


class BulkheadFull(Exception):
    """Too many calls to this peer are already in flight; this one was not sent."""

    def __init__(self, name: str, max_concurrent: int) -> None:
        super().__init__(f"bulkhead '{name}' is full ({max_concurrent} calls in flight)")
        self.name = name
        self.max_concurrent = max_concurrent


class Bulkhead:
    """Lets at most `max_concurrent` callers in at once (`with bulkhead:`); the rest fail fast."""

    def __init__(self, name: str, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.name = name
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def __enter__(self) -> Bulkhead:
        if not self._slots.acquire(blocking=False):
            raise BulkheadFull(self.name, self.max_concurrent)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._slots.release()


def is_idempotent(method: str, headers: Headers) -> bool:
    """Whether sending this request twice is as good as sending it once."""
    method = method.upper()
    return method in IDEMPOTENT_METHODS or (
        method == "POST" and "Idempotency-Key" in HTTPHeaderDict(headers)
    )


def no_context() -> Headers:
    """The default `context`: no incoming request, nothing to pass on."""
    return {}


class ServiceClient:
    def __init__(
        self,
        service: str,
        base_url: str | None = None,
        *,
        resolve: Callable[[], str] | None = None,
        caller: str | None = None,
        connect_timeout: float = 1.0,
        read_timeout: float = 5.0,
        context: Callable[[], Headers] = no_context,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        max_concurrent: int | None = None,
        pool: PoolManager | None = None,
    ) -> None:
        if (base_url is None) == (resolve is None):
            raise ValueError("give either base_url or resolve")
        self.service = service
        self.caller = caller
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self.retry = retry
        self.breaker = breaker
        self.bulkhead = Bulkhead(service, max_concurrent) if max_concurrent else None
        self._resolve = resolve or (lambda: base_url)
        self._context = context
        # urllib3 directly rather than requests on top of it: a third less CPU per call, and a
        # service makes several calls for each request it serves.
        self.pool = pool or PoolManager(num_pools=4, maxsize=max(10, max_concurrent or 0))

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Headers | None = None,
    ) -> BaseHTTPResponse:
        """Send one request (retried if idempotent); return the response (read whole: `.status`,
        `.headers`, `.data`, `.json()`) or raise for >= 400."""
        method = method.upper()
        outgoing = self._outgoing_headers(headers or {})

        arrived = False  # could any attempt have reached the peer?

        def attempt() -> tuple[BaseHTTPResponse, str]:
            nonlocal arrived
            try:
                return self._send_guarded(method, path, params, json, outgoing)
            except ServiceUnavailable as error:
                arrived = arrived or error.may_have_arrived
                raise
            except ServiceError:
                arrived = True
                raise

        try:
            if self.retry is not None and is_idempotent(method, outgoing):
                response, url = self.retry.call(attempt)
            else:
                response, url = attempt()
        except (ServiceUnavailable, CircuitOpenError, BulkheadFull) as error:
            # Said of the whole call: an earlier attempt may have arrived even if the last one
            # found the circuit open or the connection refused.
            error.may_have_arrived = arrived
            raise
        if response.status >= 400:  # a 4xx: the peer is fine, the request was not
            raise _service_error(self.service, method, url, response)
        return response

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return json_of(self.request("GET", path, params=params))

    def post_json(self, path: str, body: Any, *, idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return json_of(self.request("POST", path, json=body, headers=headers))

    def put_json(self, path: str, body: Any) -> Any:
        return json_of(self.request("PUT", path, json=body))

    def delete_json(self, path: str) -> Any:
        return json_of(self.request("DELETE", path))

    def close(self) -> None:
        self.pool.clear()

    def _outgoing_headers(self, headers: Headers) -> dict[str, str]:
        outgoing = {"Accept": "application/json"}
        if self.caller:
            outgoing["X-Service-Name"] = self.caller
        return {**outgoing, **self._context(), **headers}

    def _send_guarded(
        self, method: str, path: str, params: Any, json: Any, headers: Headers
    ) -> tuple[BaseHTTPResponse, str]:
        with self.bulkhead or contextlib.nullcontext():
            if self.breaker is None:
                return self._send(method, path, params, json, headers)
            return self.breaker.call(self._send, method, path, params, json, headers)

    def _send(
        self, method: str, path: str, params: Any, json: Any, headers: Headers
    ) -> tuple[BaseHTTPResponse, str]:
        """One attempt on the wire: the answer and the URL asked. Raises for outages only (no
        answer, or 5xx)."""
        url = self._resolve().rstrip("/") + path
        query = {name: value for name, value in (params or {}).items() if value is not None}
        if query:  # a parameter set to None is left out, as requests did
            url += ("&" if "?" in url else "?") + urlencode(query, doseq=True)
        body = None
        if json is not None:
            body = jsonlib.dumps(json, allow_nan=False).encode()
            headers = {**headers, "Content-Type": "application/json"}
        try:
            # retries=False: our Retry decides (urllib3 would retry on its own, and follow
            # redirects); errors come as they happened, not wrapped.
            response = self.pool.request(method, url, body=body, headers=headers,
                                         timeout=self.timeout, retries=False)
        except LocationValueError:
            raise  # a malformed URL is our mistake, not an outage of the peer
        except HTTPError as exc:
            reason, arrived = _why(exc)
            raise ServiceUnavailable(self.service, method, url, reason,
                                     may_have_arrived=arrived) from exc
        if response.status >= 500:
            raise _service_error(self.service, method, url, response)
        return response, url


def _service_error(service: str, method: str, url: str,
                   response: BaseHTTPResponse) -> ServiceError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.data.decode(errors="replace")
    return ServiceError(response.status, body, service, method, url)


def json_of(response: BaseHTTPResponse) -> Any:
    """The answer's JSON body; None for an empty one (a 204)."""
    return response.json() if response.data else None
