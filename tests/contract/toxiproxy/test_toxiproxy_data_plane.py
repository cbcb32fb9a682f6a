"""E. The data plane without toxics: relaying, upstream failures, disable, delete, no half-close."""

from __future__ import annotations

import gc
import socket
import statistics
import time

import pytest

from microlab.chaosproxy.connection import Connection
from tests.contract.toxiproxy.conftest import ToxiproxyApi, listen_port
from tests.contract.toxiproxy.toxiproxy_upstreams import (
    EchoServer,
    ReplyAfterEofServer,
    SinkServer,
    connect,
    free_port,
    is_refused,
    recv_exactly,
    recv_until_eof,
    round_trip,
)


def test_bytes_relayed_unchanged_and_close_reaches_server(api: ToxiproxyApi, echo: EchoServer,
                                                          echo_proxy: tuple[str, int]) -> None:  # E36
    big = bytes(range(256)) * 256  # 64 KiB
    with connect(echo_proxy[1]) as client:
        round_trip(client, b"hello world")
        client.sendall(big)
        assert recv_exactly(client, len(big)) == big
        client.sendall(b"two-")
        time.sleep(0.05)
        client.sendall(b"part")
        assert recv_exactly(client, 8) == b"two-part"
    received = echo.wait_for_connection()
    assert received.done.wait(5) and received.eof_at is not None
    assert bytes(received.data) == b"hello world" + big + b"two-part"


def test_upstream_down_accepts_then_closes(api: ToxiproxyApi) -> None:  # E37
    port = listen_port(api.create_proxy("dead", f"127.0.0.1:{free_port()}"))
    started = time.monotonic()
    with connect(port) as client:
        assert recv_until_eof(client) == b""
    assert time.monotonic() - started < 1.0


def test_disable_refuses_and_closes_toxics_survive(api: ToxiproxyApi, echo_proxy: tuple[str, int]) -> None:  # E38
    name, port = echo_proxy
    api.add_toxic(name, "latency", latency=150)
    client = connect(port)
    round_trip(client, b"x")
    api.set_enabled(name, False)
    assert recv_until_eof(client) == b""
    assert is_refused(port)
    assert api.set_enabled(name, True)["toxics"][0]["attributes"]["latency"] == 150
    with connect(port) as again:
        assert round_trip(again, b"slow") >= 0.14


def test_no_half_close(api: ToxiproxyApi, replier: ReplyAfterEofServer) -> None:  # E39
    with connect(replier.port) as direct:
        direct.sendall(b"req")
        direct.shutdown(socket.SHUT_WR)
        assert recv_until_eof(direct) == b"REPLY:req"
    port = listen_port(api.create_proxy("half", replier.address))
    with connect(port) as proxied:
        proxied.sendall(b"req")
        proxied.shutdown(socket.SHUT_WR)
        try:
            reply = recv_until_eof(proxied)
        except ConnectionResetError:
            reply = b""
        assert reply == b""


def test_delete_drops_data_held_by_latency(api: ToxiproxyApi, echo_proxy: tuple[str, int]) -> None:  # E40
    name, port = echo_proxy
    api.add_toxic(name, "latency", latency=3000)
    with connect(port) as client:
        client.sendall(b"held")
        time.sleep(0.2)
        started = time.monotonic()
        api.delete(f"/proxies/{name}")
        assert recv_until_eof(client) == b""
        assert time.monotonic() - started < 3.0 / 2  # dropped, not delivered after the 3 s


def test_bare_proxy_adds_little_latency(api: ToxiproxyApi, echo: EchoServer, echo_proxy: tuple[str, int]) -> None:  # E41
    with connect(echo.port) as direct, connect(echo_proxy[1]) as proxied:
        direct_times, proxied_times = [], []
        for _ in range(100):  # interleaved: a busy spell of the machine slows both alike
            direct_times.append(round_trip(direct, b"ping"))
            proxied_times.append(round_trip(proxied, b"ping"))
    added = statistics.median(proxied_times) - statistics.median(direct_times)
    assert added < 0.005, f"median added latency {added * 1000:.2f} ms"


def test_many_connections_at_once(api: ToxiproxyApi, sink: SinkServer) -> None:  # E (robustness)
    port = listen_port(api.create_proxy("many", sink.address))
    clients = [connect(port) for _ in range(50)]
    for number, client in enumerate(clients):
        client.sendall(f"{number:03d}".encode())
    for client in clients:
        client.close()
    sink.wait_for_connection(50)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum(len(c.data) for c in sink.connections) < 150:
        time.sleep(0.02)
    assert sorted(bytes(c.data) for c in sink.connections) == [f"{n:03d}".encode() for n in range(50)]


def connections_to(upstream: str) -> int:
    """Our proxy's connections to `upstream` that the garbage collector knows of in this
    process: live, or garbage not yet freed."""
    return sum(isinstance(thing, Connection) and thing._upstream == upstream
               for thing in gc.get_objects())


@pytest.mark.parametrize("ending", ["client closes", "proxy disabled", "through a toxic"])
def test_a_closed_connection_is_freed_at_once(api: ToxiproxyApi, compat: bool, echo: EchoServer,
                                              ending: str) -> None:  # E (memory; ours only)
    """A connection's objects go when it closes, not at the garbage collector's next full pass:
    left in reference cycles, closed connections piled up between passes and the proxy's memory
    climbed by 10 % in a soak."""
    if not compat:
        pytest.skip("counts our own server's objects, in this process")
    port = listen_port(api.create_proxy("freed", echo.address))
    if ending == "through a toxic":
        api.add_toxic("freed", "latency", latency=1)
    gc.collect()
    gc.disable()  # so that only reference counting frees anything from here on
    try:
        clients = [connect(port) for _ in range(20)]
        for client in clients:
            round_trip(client, b"ping")
        assert connections_to(echo.address) == 20
        if ending == "proxy disabled":
            api.set_enabled("freed", False)
        for client in clients:
            client.close()
        echo.wait_for_connection(20)
        assert all(received.done.wait(5) for received in echo.connections)
        deadline = time.monotonic() + 5
        while connections_to(echo.address) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert connections_to(echo.address) == 0, "closed connections left to the garbage collector"
    finally:
        gc.enable()
