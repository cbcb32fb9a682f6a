"""The gateway's adapter to its upstreams: one pooled HTTP session and one circuit breaker each.

Protects against: an upstream that is down or slow holding every gateway thread (a connect
timeout, a read timeout per route, and a breaker that answers 503 at once while it is open),
and a request that takes effect twice. Nothing is retried here: a POST whose answer was lost
may have been applied, and only the client knows whether repeating it is safe (it can send an
Idempotency-Key and retry). `patterns.http.ServiceClient` is built for calls whose JSON answer
the caller reads; a proxy must hand back any status, body and headers untouched, so this
module uses the same pieces (pooled `requests.Session`, `CircuitBreaker`) for raw forwarding.

    users = Upstream("users", resolve=lambda: "http://127.0.0.1:3001",
                     breaker=breakers.get("users"))
    answer = users.send("GET", "/api/v1/users/me", headers=headers, read_timeout=10)

What the breaker counts: a 5xx answer and no answer (refused, reset, timed out). A 4xx is a
healthy upstream refusing a bad request, so it counts as a success. So is a 503: the upstream
is up and says it cannot do this now, usually because one of *its* dependencies is down (orders
answers 503 when payments is, after compensating). Counting it would let one dependency's
outage open the gateway's breaker for a healthy service too: the cascade breakers exist to
stop. Any answer is still returned to the client as the upstream sent it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError

from patterns.api import BadRequest
from patterns.breaker import CircuitBreaker, CircuitOpenError
from services.gateway.domain import UpstreamTimeout, UpstreamUnavailable, UpstreamUnreachable

# Characters sent as they are: those a path segment may hold (RFC 3986 pchar), and in a query
# string every reserved one plus '%', so escapes the client already made are not made twice.
_PATH_SAFE = "/:@!$&'()*+,;=~"
_QUERY_SAFE = "!#$%&'()*+,/:;=?@[]~"


class _ServerError(Exception):
    """A 5xx answer (but 503): counted against the breaker, then returned as it is."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"upstream answered {response.status_code}")
        self.response = response


class UnexpectedAnswer(Exception):
    """The upstream answered, but not with the 2xx JSON the gateway asked for."""


class Upstream:
    def __init__(self, name: str, *, resolve: Callable[[], str], breaker: CircuitBreaker,
                 connect_timeout: float = 1.0, pool_size: int = 16) -> None:
        self.name = name
        self.breaker = breaker
        self.connect_timeout = connect_timeout
        self._resolve = resolve
        self.session = requests.Session()
        self.session.trust_env = False  # upstreams are addressed directly, never via a proxy
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def send(self, method: str, path: str, *, headers: Mapping[str, str],
             query: bytes = b"", body: bytes | None = None,
             read_timeout: float = 10.0) -> requests.Response:
        """Forward one request through the breaker, once; return whatever the upstream answered.

        Raises `UpstreamUnavailable` (circuit open), `UpstreamUnreachable` (no connection) or
        `UpstreamTimeout` (no answer in time)."""
        url = self._base_url() + quote(path, safe=_PATH_SAFE)
        if query:
            url += "?" + quote(query, safe=_QUERY_SAFE)
        try:
            prepared = self.session.prepare_request(
                requests.Request(method, url, headers=dict(headers), data=body or None))
        except (ValueError, requests.RequestException) as error:
            # A header or URL the HTTP client refuses: the request's fault, not the upstream's.
            raise BadRequest(f"the request cannot be forwarded: {error}") from None
        timeout = (min(self.connect_timeout, read_timeout), read_timeout)
        try:
            return self.breaker.call(self._send, prepared, timeout)
        except CircuitOpenError as error:
            raise UpstreamUnavailable(self.name, error.retry_after) from None
        except _ServerError as error:
            return error.response
        except requests.Timeout:
            raise UpstreamTimeout(self.name, read_timeout) from None
        except (requests.ConnectionError, ChunkedEncodingError) as error:
            raise UpstreamUnreachable(self.name, type(error).__name__) from None

    def get_json(self, path: str, *, params: Mapping[str, str], headers: Mapping[str, str],
                 timeout: float) -> Any:
        """GET a JSON document through the breaker; `UnexpectedAnswer` for anything else."""
        answer = self.send("GET", path, query=urlencode(params).encode(), headers=headers,
                           read_timeout=timeout)
        if not 200 <= answer.status_code < 300:
            raise UnexpectedAnswer(f"{self.name} answered {answer.status_code}")
        try:
            return answer.json()
        except ValueError:
            raise UnexpectedAnswer(f"{self.name} answered without JSON") from None

    def probe(self, *, headers: Mapping[str, str], timeout: float) -> int | None:
        """The status of the upstream's /health, or None when it does not answer.

        Bypasses the breaker: a health report should say how the upstream is now, and polling
        it should neither trip nor close anyone's circuit."""
        try:
            return self.session.get(self._base_url() + "/health", headers=dict(headers),
                                    timeout=(timeout, timeout)).status_code
        except (requests.RequestException, UpstreamUnreachable):
            return None

    def close(self) -> None:
        self.session.close()

    def _base_url(self) -> str:
        try:
            return self._resolve().rstrip("/")
        except ConnectionError as error:  # e.g. discovery found no healthy instance
            raise UpstreamUnreachable(self.name, str(error)) from None

    def _send(self, prepared: requests.PreparedRequest,
              timeout: tuple[float, float]) -> requests.Response:
        response = self.session.send(prepared, timeout=timeout, allow_redirects=False)
        if response.status_code >= 500 and response.status_code != 503:
            raise _ServerError(response)
        return response
