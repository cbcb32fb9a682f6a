"""Loopback TCP servers to put behind a proxy, and small socket helpers for the tests.

Each server listens on an ephemeral 127.0.0.1 port, serves every connection on its own
thread, and remembers what it received, so a test can check both ends of a proxied connection.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Received:
    """What one accepted connection got: its bytes and when the peer's end-of-stream came."""

    data: bytearray = field(default_factory=bytearray)
    eof_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Upstream:
    """Base: accept loop + one thread per connection running `handle`."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.connections: list[Received] = []
        self._conns: list[socket.socket] = []
        self._accepted = threading.Condition()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            received = Received()
            with self._accepted:
                self.connections.append(received)
                self._conns.append(conn)
                self._accepted.notify_all()
            threading.Thread(target=self._serve, args=(conn, received), daemon=True).start()

    def _serve(self, conn: socket.socket, received: Received) -> None:
        try:
            self.handle(conn, received)
        except OSError:
            pass
        finally:
            received.done.set()
            conn.close()

    def handle(self, conn: socket.socket, received: Received) -> None:
        raise NotImplementedError

    def wait_for_connection(self, count: int = 1, timeout: float = 5.0) -> Received:
        with self._accepted:
            self._accepted.wait_for(lambda: len(self.connections) >= count, timeout)
            assert len(self.connections) >= count, "the upstream was never connected to"
            return self.connections[count - 1]

    def close(self) -> None:
        self._sock.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _read_into(conn: socket.socket, received: Received, echo: bool) -> None:
    while chunk := conn.recv(65536):
        received.data += chunk
        if echo:
            conn.sendall(chunk)
    received.eof_at = time.monotonic()


class EchoServer(Upstream):
    """Sends back everything it reads."""

    def handle(self, conn: socket.socket, received: Received) -> None:
        _read_into(conn, received, echo=True)


class SinkServer(Upstream):
    """Reads and keeps everything, answers nothing."""

    def handle(self, conn: socket.socket, received: Received) -> None:
        _read_into(conn, received, echo=False)


class GreetingServer(Upstream):
    """Speaks first (`greeting`), then reads; with `close_after`, hangs up right after speaking."""

    def __init__(self, greeting: bytes = b"HELLO\n", close_after: bool = False) -> None:
        self.greeting = greeting
        self.close_after = close_after
        super().__init__()

    def handle(self, conn: socket.socket, received: Received) -> None:
        conn.sendall(self.greeting)
        if not self.close_after:
            _read_into(conn, received, echo=False)


class ReplyAfterEofServer(Upstream):
    """Reads until the client half-closes, then answers `REPLY:<what it read>`."""

    def handle(self, conn: socket.socket, received: Received) -> None:
        _read_into(conn, received, echo=False)
        conn.sendall(b"REPLY:" + bytes(received.data))


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def recv_until_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def round_trip(sock: socket.socket, message: bytes) -> float:
    """Send `message` to an echo upstream and time until all of it is back (seconds)."""
    started = time.monotonic()
    sock.sendall(message)
    assert recv_exactly(sock, len(message)) == message
    return time.monotonic() - started


def fastest_round_trip(sock: socket.socket, message: bytes, tries: int = 5) -> float:
    """The fastest of `tries` round trips: a toxic's delay is in every one of them, a pause of
    a busy machine only in some. For "no delay" checks, compared with the toxic's latency."""
    return min(round_trip(sock, message) for _ in range(tries))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False
