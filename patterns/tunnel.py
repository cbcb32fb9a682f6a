"""WebSocket through a proxy: an upgrade request is tunnelled, byte for byte, to the upstream.

Protects against: a reverse proxy that understands only request → answer, which is what an
HTTP client library gives it. A WebSocket starts as an HTTP request (`Upgrade: websocket`) and
then turns the connection into a two-way stream that neither side closes for minutes, so a
proxy carrying it must stop speaking HTTP: open a TCP connection to the upstream, send it the
client's request head, and from then on copy bytes both ways until either side closes. The
upstream does the handshake itself (101 Switching Protocols, Sec-WebSocket-Accept) and checks
what it always checks (Socket.IO's token in the first packet), so the tunnel needs to know
nothing about WebSocket frames.

    app.wsgi_app = WebSocketTunnel(app.wsgi_app, "/socket.io/", upstream=lambda: notifications_url)

Everything else (and an upgrade on another path) goes to the wrapped app. Knobs:

- `upstream` — a callable returning the upstream's base URL (`http://host:port`), asked once per
  connection, so discovery and the chaos proxy's edges work as for any other call;
- `breaker` (none) — a `patterns.breaker.CircuitBreaker`: while it is open the upgrade is refused
  with 503 at once; a failed connect counts against it;
- `max_open` (unlimited) — a bulkhead (`patterns.http.Bulkhead`): at most this many tunnels open
  at once; one more is refused with 503 `too_many_websockets` and Retry-After, and a Socket.IO
  client simply stays on long-polling;
- `connect_timeout` (1 s).

The client's socket is taken from the WSGI server (`gunicorn.socket`, `werkzeug.socket`); each
open tunnel holds the request's thread (and one more for the other direction) until it closes.
That is why `max_open` matters: a server with 16 threads and no cap stops answering anything
once 16 browser tabs hold a WebSocket each.
When the tunnel ends, the server is told to drop the connection rather than write an HTTP
answer on it, the same way python-engineio ends its own WebSockets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

from patterns.breaker import CircuitBreaker, CircuitOpenError
from patterns.http import Bulkhead, BulkheadFull

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CHUNK = 64 * 1024
RETRY_FULL_AFTER = 10  # seconds a client refused for too many tunnels is asked to wait


def request_head(environ: dict[str, Any], host: str) -> bytes:
    """The client's request line and headers, rebuilt from the WSGI environ, for `host`."""
    target = quote(environ.get("PATH_INFO", "/"), safe="/:@!$&'()*+,;=~")
    if environ.get("QUERY_STRING"):
        target += "?" + environ["QUERY_STRING"]
    lines = [f"{environ['REQUEST_METHOD']} {target} HTTP/1.1", f"Host: {host}"]
    for key, value in environ.items():
        if key.startswith("HTTP_") and key not in ("HTTP_HOST", "HTTP_X_FORWARDED_FOR"):
            lines.append(f"{key[5:].replace('_', '-').title()}: {value}")
    forwarded = [environ.get("HTTP_X_FORWARDED_FOR"), environ.get("REMOTE_ADDR")]
    lines.append(f"X-Forwarded-For: {', '.join(part for part in forwarded if part)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _copy(source: socket.socket, destination: socket.socket) -> None:
    """Copy until either side ends, then end both (which also ends the other direction)."""
    try:
        while data := source.recv(CHUNK):
            destination.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, destination):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class WebSocketTunnel:
    def __init__(self, app: WsgiApp, path: str, *, upstream: Callable[[], str],
                 breaker: CircuitBreaker | None = None, max_open: int | None = None,
                 connect_timeout: float = 1.0) -> None:
        self.app = app
        self.path = path
        self.upstream = upstream
        self.breaker = breaker
        self.slots = Bulkhead(f"{path} websockets", max_open) if max_open else None
        self.connect_timeout = connect_timeout

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        client = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
        if (environ.get("PATH_INFO") != self.path or client is None
                or environ.get("HTTP_UPGRADE", "").lower() != "websocket"):
            return self.app(environ, start_response)
        try:
            with self.slots or contextlib.nullcontext():
                return self._tunnel(environ, start_response, client)
        except BulkheadFull as error:
            return _refuse(start_response, "503 Service Unavailable", "too_many_websockets",
                           f"{error}; stay on long-polling or try again later",
                           retry_after=RETRY_FULL_AFTER)

    def _tunnel(self, environ: dict[str, Any], start_response: Callable[..., Any],
                client: socket.socket) -> Iterable[bytes]:
        try:
            address = urlsplit(self.upstream())
            host, port = address.hostname or "127.0.0.1", address.port or 80
            if self.breaker is not None:
                upstream = self.breaker.call(socket.create_connection, (host, port),
                                             self.connect_timeout)
            else:
                upstream = socket.create_connection((host, port), self.connect_timeout)
        except CircuitOpenError as error:
            return _refuse(start_response, "503 Service Unavailable", "circuit_open", str(error))
        except (OSError, LookupError) as error:
            return _refuse(start_response, "502 Bad Gateway", "upstream_unreachable",
                           f"cannot reach {self.path} upstream: {error}")
        upstream.settimeout(None)
        client.settimeout(None)
        try:
            upstream.sendall(request_head(environ, f"{host}:{port}"))
            back = threading.Thread(target=_copy, args=(upstream, client), daemon=True,
                                    name="websocket-tunnel")
            back.start()
            _copy(client, upstream)
            back.join()
        finally:
            upstream.close()
        # The connection was the WebSocket's: the server must close it, not answer on it.
        if "gunicorn.socket" in environ:
            raise StopIteration()
        raise ConnectionError("websocket tunnel closed")


def _refuse(start_response: Callable[..., Any], status: str, code: str, message: str,
            retry_after: int | None = None) -> list[bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    start_response(status, headers)
    return [body]
