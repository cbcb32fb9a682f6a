"""patterns.tunnel over real sockets: a werkzeug server with the tunnel in front of a small app,
and a TCP upstream that answers an upgrade with 101 and then echoes whatever comes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from patterns.breaker import CircuitBreaker
from patterns.tunnel import WebSocketTunnel

UPGRADE = (b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: gateway\r\n"
           b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc\r\n\r\n")


class EchoAfterUpgrade:
    """For each connection: reads one request head, answers 101, then echoes bytes until the
    client goes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.heads: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(1024)
        self.heads.append(head)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        while data := conn.recv(1024):
            conn.sendall(data)
        conn.close()


def serve(upstream: str, breaker: CircuitBreaker | None = None,
          max_open: int | None = None) -> Iterator[int]:
    app = Flask(__name__)

    @app.get("/socket.io/")
    def polling() -> str:
        return "polling answered by the app"

    app.wsgi_app = WebSocketTunnel(app.wsgi_app, "/socket.io/",  # type: ignore[method-assign]
                                   upstream=lambda: upstream, breaker=breaker,
                                   max_open=max_open)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


@pytest.fixture
def echo() -> EchoAfterUpgrade:
    return EchoAfterUpgrade()


@pytest.fixture
def tunnel_port(echo: EchoAfterUpgrade) -> Iterator[int]:
    yield from serve(echo.url)


def exchange(port: int, request: bytes, then: bytes = b"") -> bytes:
    """Send `request`; with `then`, read the answer's head, send `then` and read its echo;
    without, read the whole answer (the server closes the connection after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(request)
        if then:
            answer = client.recv(4096)
            client.sendall(then)
            return answer + b"|" + client.recv(4096)
        answer = b""
        while data := client.recv(4096):
            answer += data
        return answer


def test_an_upgrade_is_carried_both_ways(tunnel_port: int, echo: EchoAfterUpgrade) -> None:
    answer = exchange(tunnel_port, UPGRADE, then=b"\x81\x05hello")
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols")
    assert answer.endswith(b"|\x81\x05hello")
    head = echo.heads[0].decode()
    assert head.startswith("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n")
    assert f"Host: {echo.url.removeprefix('http://')}" in head
    assert "Upgrade: websocket" in head and "Sec-Websocket-Key: abc" in head
    assert "X-Forwarded-For: 127.0.0.1" in head


def test_plain_requests_go_to_the_app(tunnel_port: int, echo: EchoAfterUpgrade) -> None:
    answer = exchange(tunnel_port, b"GET /socket.io/ HTTP/1.1\r\nHost: gateway\r\n\r\n")
    assert b"polling answered by the app" in answer
    assert echo.heads == []


def test_an_unreachable_upstream_is_502() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for port in serve(dead):
        answer = exchange(port, UPGRADE)
        assert answer.startswith(b"HTTP/1.1 502")
        assert b'"code": "upstream_unreachable"' in answer


def test_an_open_breaker_refuses_at_once(echo: EchoAfterUpgrade) -> None:
    breaker = CircuitBreaker("notifications", failure_threshold=1)
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    for port in serve(echo.url, breaker):
        answer = exchange(port, UPGRADE)
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"circuit_open" in answer
    assert echo.heads == []


def upgraded(port: int) -> socket.socket:
    """A client whose WebSocket is open through the tunnel (it holds one of the server's
    threads until it closes)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.sendall(UPGRADE)
    assert client.recv(4096).startswith(b"HTTP/1.1 101")
    return client


def test_past_max_open_an_upgrade_is_refused_and_http_still_served(
        echo: EchoAfterUpgrade) -> None:
    for port in serve(echo.url, max_open=2):
        first, second = upgraded(port), upgraded(port)

        refused = exchange(port, UPGRADE)
        assert refused.startswith(b"HTTP/1.1 503")
        assert b'"code": "too_many_websockets"' in refused
        assert b"Retry-After: 10" in refused
        assert b"polling answered by the app" in exchange(
            port, b"GET /socket.io/ HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert len(echo.heads) == 2  # the refused one never reached the upstream

        first.close()  # its tunnel ends and gives its place back
        deadline = time.monotonic() + 5
        while (answer := exchange(port, UPGRADE, then=b"\x81\x02hi")).startswith(
                b"HTTP/1.1 503") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 101") and answer.endswith(b"|\x81\x02hi")
        second.close()
