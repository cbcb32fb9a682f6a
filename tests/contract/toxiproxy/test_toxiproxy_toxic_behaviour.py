"""F. What each toxic does to real TCP traffic.

Timing bounds are generous above (a loaded 2-core CI box) but tight below: a toxic that does
nothing fails every lower bound.
"""

from __future__ import annotations

import socket
import statistics
import time

import pytest

from tests.contract.toxiproxy.conftest import ToxiproxyApi, listen_port
from tests.contract.toxiproxy.toxiproxy_upstreams import (
    EchoServer,
    GreetingServer,
    SinkServer,
    connect,
    fastest_round_trip,
    recv_exactly,
    recv_until_eof,
    round_trip,
)

SLACK = 0.08  # seconds allowed above a target


def within(measured: float, target: float, below: float = 0.005, above: float = SLACK) -> bool:
    return target - below <= measured <= target + above


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def read_eof_or_reset(sock: socket.socket) -> str:
    try:
        data = recv_until_eof(sock)
    except ConnectionResetError:
        return "RESET"
    return "EOF" if data == b"" else f"DATA {data!r}"


# latency


@pytest.mark.parametrize("up, down", [(100, 0), (0, 100), (100, 100), (0, 0)])
def test_latency_per_direction(api: ToxiproxyApi, echo_proxy, up: int, down: int) -> None:  # F42
    name, port = echo_proxy
    api.add_toxic(name, "latency", stream="upstream", latency=up)
    api.add_toxic(name, "latency", stream="downstream", latency=down)
    with connect(port) as client:
        samples = [round_trip(client, b"x" * 40000) for _ in range(3)]
    assert within(statistics.median(samples), (up + down) / 1000)


@pytest.mark.slow
@pytest.mark.parametrize("up, down", [(1000, 100), (100, 1000)])
def test_latency_bias(api: ToxiproxyApi, echo_proxy, up: int, down: int) -> None:  # F42
    name, port = echo_proxy
    api.add_toxic(name, "latency", stream="upstream", latency=up)
    api.add_toxic(name, "latency", stream="downstream", latency=down)
    with connect(port) as client:
        assert within(round_trip(client, b"bias"), 1.1, above=0.15)


def test_two_latency_toxics_add_up(api: ToxiproxyApi, echo_proxy) -> None:  # F43
    name, port = echo_proxy
    api.add_toxic(name, "latency", stream="upstream", name="first", latency=250)
    api.add_toxic(name, "latency", stream="upstream", name="second", latency=250)
    with connect(port) as client:
        assert within(round_trip(client, b"twice"), 0.5)


def test_latency_keeps_spacing_and_throughput(api: ToxiproxyApi, echo_proxy, sink: SinkServer) -> None:  # F44
    name, port = echo_proxy
    api.add_toxic(name, "latency", latency=300)
    with connect(port) as client:
        sent = []
        for number in range(5):
            sent.append(time.monotonic())
            client.sendall(b"%d" % number)
            time.sleep(0.05)
        arrivals = []
        for _ in range(5):
            recv_exactly(client, 1)
            arrivals.append(time.monotonic())
    delays = [arrived - left for arrived, left in zip(arrivals, sent)]
    assert all(within(delay, 0.3) for delay in delays), delays
    # Throughput is not capped by latency: 8 MB through a 100 ms toxic.
    sink_port = listen_port(api.create_proxy("bulk", sink.address))
    api.add_toxic("bulk", "latency", stream="upstream", latency=100)
    payload = b"z" * (8 * 1024 * 1024)
    started = time.monotonic()
    with connect(sink_port) as client:
        client.sendall(payload)
        assert wait_for(lambda: sink.connections and len(sink.connections[0].data) == len(payload), 10)
    assert time.monotonic() - started < 2.0


def test_jitter_spreads_within_bounds(api: ToxiproxyApi, echo_proxy) -> None:  # F45
    name, port = echo_proxy
    api.add_toxic(name, "latency", stream="upstream", latency=100, jitter=50)
    with connect(port) as client:
        samples = [round_trip(client, b"j") for _ in range(12)]
    assert all(0.045 <= sample <= 0.15 + SLACK for sample in samples), samples
    assert max(samples) - min(samples) > 0.02


def test_latency_then_close(api: ToxiproxyApi) -> None:  # F46
    server = GreetingServer(b"bye", close_after=True)
    try:
        port = listen_port(api.create_proxy("closer", server.address))
        api.add_toxic("closer", "latency", latency=200)
        started = time.monotonic()
        with connect(port) as client:
            assert recv_exactly(client, 3) == b"bye"
            greeted = time.monotonic()
            assert recv_until_eof(client) == b""
            closed = time.monotonic()
        assert within(greeted - started, 0.2)
        assert closed - greeted < 0.2 / 2  # the close is not held for the latency again
    finally:
        server.close()


# bandwidth


def send_and_time(api: ToxiproxyApi, sink: SinkServer, size: int, rate: int) -> float:
    port = listen_port(api.create_proxy("narrow", sink.address))
    api.add_toxic("narrow", "bandwidth", stream="upstream", rate=rate)
    payload = bytes(range(256)) * (size // 256) + b"\0" * (size % 256)
    with connect(port) as client:
        started = time.monotonic()
        client.sendall(payload)
        assert wait_for(lambda: sink.connections and len(sink.connections[0].data) >= size, 10)
        elapsed = time.monotonic() - started
    assert bytes(sink.connections[0].data) == payload
    return elapsed


def test_bandwidth_1000_kb_per_s(api: ToxiproxyApi, sink: SinkServer) -> None:  # F47
    assert within(send_and_time(api, sink, 480_000, 1000), 0.48, below=0.02, above=0.15)


@pytest.mark.slow
def test_bandwidth_100_kb_per_s_uses_1000_byte_kb(api: ToxiproxyApi, sink: SinkServer) -> None:  # F47
    assert within(send_and_time(api, sink, 200_000, 100), 2.0, below=0.03, above=0.25)


def test_bandwidth_zero_holds_data_and_connection(api: ToxiproxyApi, echo_proxy, echo: EchoServer) -> None:  # F47
    name, port = echo_proxy
    api.add_toxic(name, "bandwidth", stream="upstream", rate=0)
    with connect(port) as client:
        client.sendall(b"stuck")
        client.settimeout(0.5)
        with pytest.raises(socket.timeout):
            client.recv(10)
    assert echo.wait_for_connection().data == b""


# slow_close


def test_slow_close_delays_eof(api: ToxiproxyApi) -> None:  # F48
    server = GreetingServer(b"hi", close_after=True)
    try:
        port = listen_port(api.create_proxy("slow", server.address))
        api.add_toxic("slow", "slow_close", delay=400)
        with connect(port) as client:
            assert recv_exactly(client, 2) == b"hi"
            started = time.monotonic()
            assert recv_until_eof(client) == b""
            assert within(time.monotonic() - started, 0.4)
        with connect(port) as client:
            assert recv_exactly(client, 2) == b"hi"
            time.sleep(0.1)
            started = time.monotonic()
            api.remove_toxic("slow", "slow_close_downstream")
            assert recv_until_eof(client) == b""
            assert time.monotonic() - started < 0.2
    finally:
        server.close()


# timeout


def test_timeout_closes_idle_connection_and_drops_data(api: ToxiproxyApi, echo_proxy, echo: EchoServer) -> None:  # F49
    name, port = echo_proxy
    api.add_toxic(name, "timeout", stream="upstream", timeout=300)
    with connect(port) as client:
        for _ in range(4):  # traffic every 150 ms keeps restarting the 300 ms idle timer
            last_sent = time.monotonic()
            client.sendall(b"dropped")
            time.sleep(0.15)
        assert recv_until_eof(client) == b""
        assert within(time.monotonic() - last_sent, 0.3, below=0.01, above=0.15)
    assert echo.wait_for_connection().data == b""


@pytest.mark.parametrize("toxicity", [1.0, 0.0])
def test_timeout_zero_blackholes_until_removed(api: ToxiproxyApi, echo_proxy, echo: EchoServer, toxicity: float) -> None:  # F50
    name, port = echo_proxy
    api.add_toxic(name, "timeout", toxicity=toxicity, timeout=0)
    with connect(port) as client:
        client.sendall(b"void")  # reaches the server: the timeout toxic is downstream
        server_side = echo.wait_for_connection()
        assert wait_for(lambda: server_side.data == b"void")
        if toxicity:
            client.settimeout(0.3)
            with pytest.raises(socket.timeout):
                client.recv(10)
        else:
            assert recv_exactly(client, 4) == b"void"
        client.settimeout(5)
        started = time.monotonic()
        api.remove_toxic(name, "timeout_downstream")
        assert recv_until_eof(client) == b""
        assert server_side.done.wait(1.0)
        assert time.monotonic() - started < 1.0


def test_reset_closes_timeout_connections(api: ToxiproxyApi, echo_proxy, echo: EchoServer) -> None:  # F50
    name, port = echo_proxy
    api.add_toxic(name, "timeout", timeout=0)
    with connect(port) as client:
        client.sendall(b"x")
        assert wait_for(lambda: echo.connections and echo.connections[0].data == b"x")
        api.post("/reset")
        assert recv_until_eof(client) == b""


def test_removing_latency_before_timeout_does_not_hang(api: ToxiproxyApi, echo_proxy) -> None:  # F51
    name, port = echo_proxy
    api.add_toxic(name, "latency", name="lat", latency=1000)
    api.add_toxic(name, "timeout", name="to", timeout=0)
    with connect(port) as client:
        client.sendall(b"x" * 1000)
        time.sleep(0.1)
        started = time.monotonic()
        api.remove_toxic(name, "lat")
        assert time.monotonic() - started < 1.0


# reset_peer


@pytest.mark.parametrize("stream, delay", [("upstream", 0), ("upstream", 100), ("downstream", 100)])
def test_reset_peer_resets_after_timeout(api: ToxiproxyApi, echo_proxy, stream: str, delay: int) -> None:  # F52
    name, port = echo_proxy
    api.add_toxic(name, "reset_peer", stream=stream, timeout=delay)
    with connect(port) as client:
        if stream == "downstream":
            api.update_toxic(name, "reset_peer_downstream", toxicity=1)  # no-op update: still resets
        started = time.monotonic()
        client.sendall(b"trigger")
        assert read_eof_or_reset(client) == "RESET"
        assert within(time.monotonic() - started, delay / 1000, below=0.01, above=0.15)


def test_reset_peer_leaves_idle_connections_and_fins_live_ones(api: ToxiproxyApi, echo_proxy) -> None:  # F52
    name, port = echo_proxy
    with connect(port) as live:
        round_trip(live, b"open before the toxic")
        api.add_toxic(name, "reset_peer", stream="upstream", timeout=0)
        with connect(port) as idle:
            idle.settimeout(0.3)
            with pytest.raises(socket.timeout):
                idle.recv(10)
        live.sendall(b"trigger")
        assert read_eof_or_reset(live) == "EOF"


# slicer


def read_pieces(sock: socket.socket, total: int) -> list[int]:
    pieces = []
    while sum(pieces) < total:
        chunk = sock.recv(65536)
        assert chunk
        pieces.append(len(chunk))
    return pieces


def test_slicer_piece_sizes(api: ToxiproxyApi, echo_proxy) -> None:  # F53
    name, port = echo_proxy
    api.add_toxic(name, "slicer", average_size=10, size_variation=0, delay=20_000)
    with connect(port) as client:
        client.sendall(b"s" * 100)
        pieces = read_pieces(client, 100)
    assert all(6 <= piece <= 7 for piece in pieces[:-1]) and len(pieces) >= 12, pieces


def test_slicer_go_unit_expectations(api: ToxiproxyApi, echo_proxy) -> None:  # F53
    name, port = echo_proxy
    api.add_toxic(name, "slicer", average_size=1, size_variation=0, delay=5_000)
    with connect(port) as client:
        client.sendall(b"a" * 24)
        assert len(read_pieces(client, 24)) == 24
    api.update_toxic(name, "slicer_downstream", attributes={"average_size": 1024, "size_variation": 512,
                                                             "delay": 5_000})
    payload = bytes(range(256)) * 192  # 48 KiB: 24..72 pieces of 1024 ± 512
    with connect(port) as client:
        client.sendall(payload)
        pieces = read_pieces(client, len(payload))
    assert 24 <= len(pieces) <= 72, pieces


# limit_data


@pytest.mark.parametrize("limit, writes, expected", [
    (10, [b"0123456789abcdef"], b"0123456789"),  # chunk larger than the limit
    (16, [b"0123456789abcdef"], b"0123456789abcdef"),  # equal
    (100, [b"0123"], None),  # smaller: passes, connection stays open
    (8, [b"0123", b"4567"], b"01234567"),  # chunks adding up to the limit
    (6, [b"0123", b"4567"], b"012345"),  # second chunk overflows
    (0, [b"0123"], b""),  # nothing at all
])
def test_limit_data_downstream(api: ToxiproxyApi, echo_proxy, limit: int, writes: list[bytes], expected: bytes | None) -> None:  # F54
    name, port = echo_proxy
    api.add_toxic(name, "limit_data", bytes=limit)
    with connect(port) as client:
        for data in writes:
            client.sendall(data)
            time.sleep(0.05)
        if expected is None:
            assert recv_exactly(client, 4) == b"0123"
            client.settimeout(0.2)
            with pytest.raises(socket.timeout):
                client.recv(10)
        else:
            assert recv_until_eof(client) == expected


def test_limit_data_upstream(api: ToxiproxyApi, sink: SinkServer) -> None:  # F54
    port = listen_port(api.create_proxy("limited", sink.address))
    api.add_toxic("limited", "limit_data", stream="upstream", bytes=5)
    with connect(port) as client:
        client.sendall(b"0123456789")
        assert recv_until_eof(client) == b""
    assert sink.wait_for_connection().done.wait(2)
    assert sink.connections[0].data == b"01234"


# toxicity


def delayed(port: int, rounds: int = 3) -> list[bool]:
    with connect(port) as client:
        return [round_trip(client, b"t") > 0.04 for _ in range(rounds)]


@pytest.mark.slow
def test_toxicity_is_per_connection(api: ToxiproxyApi, echo_proxy) -> None:  # F55
    name, port = echo_proxy
    api.add_toxic(name, "latency", toxicity=0, latency=60)
    assert not any(delayed(port))
    api.update_toxic(name, "latency_downstream", toxicity=1)
    assert all(delayed(port))
    api.update_toxic(name, "latency_downstream", toxicity=0.5)
    outcomes = [delayed(port) for _ in range(30)]
    assert all(len(set(rounds)) == 1 for rounds in outcomes), "each connection is all or nothing"
    hits = sum(rounds[0] for rounds in outcomes)
    assert 5 <= hits <= 25, hits


def test_update_draws_toxicity_again_for_open_connections(api: ToxiproxyApi, echo_proxy) -> None:  # F55
    name, port = echo_proxy
    api.add_toxic(name, "latency", toxicity=0, latency=60)
    with connect(port) as client:
        assert fastest_round_trip(client, b"a") < 0.06 / 2  # toxicity 0: no 60 ms delay
        api.update_toxic(name, "latency_downstream", toxicity=1)
        assert round_trip(client, b"b") >= 0.055
