"""G. Toxics changing under open connections, and robustness of the server itself."""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest

from microlab.chaosproxy import ChaosProxyServer
from tests.contract.toxiproxy.conftest import ToxiproxyApi, listen_port
from tests.contract.toxiproxy.toxiproxy_upstreams import (
    EchoServer,
    SinkServer,
    connect,
    fastest_round_trip,
    is_refused,
    recv_exactly,
    recv_until_eof,
    round_trip,
)


def test_added_toxic_applies_to_open_connection(api: ToxiproxyApi, echo_proxy) -> None:  # G56
    name, port = echo_proxy
    with connect(port) as client:
        assert fastest_round_trip(client, b"a") < 0.15 / 2  # well below the toxic's 150 ms
        api.add_toxic(name, "latency", latency=150)
        assert round_trip(client, b"b") >= 0.145
        api.remove_toxic(name, "latency_downstream")
        assert fastest_round_trip(client, b"c") < 0.15 / 2


def test_no_loss_or_reordering_while_toxics_change(api: ToxiproxyApi, echo_proxy) -> None:  # G57
    name, port = echo_proxy
    count = 65_535
    payload = b"".join(struct.pack(">H", n) for n in range(count))
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            api.add_toxic(name, "latency", stream="upstream", name="lat", latency=1000)
            api.add_toxic(name, "noop", stream="downstream", name="noop")
            api.remove_toxic(name, "lat")
            api.remove_toxic(name, "noop")

    churner = threading.Thread(target=churn)
    with connect(port, timeout=30) as client:
        churner.start()
        try:
            for start in range(0, len(payload), 4096):
                client.sendall(payload[start:start + 4096])
            echoed = recv_exactly(client, len(payload))
        finally:
            stop.set()
            churner.join()
    assert echoed == payload


def test_removing_latency_releases_held_data(api: ToxiproxyApi, echo_proxy) -> None:  # G58
    name, port = echo_proxy
    api.add_toxic(name, "latency", latency=2000)
    with connect(port) as client:
        started = time.monotonic()
        client.sendall(b"held")
        time.sleep(0.3)
        api.remove_toxic(name, "latency_downstream")
        assert recv_exactly(client, 4) == b"held"
        # Released when the toxic went (0.3 s), long before its 2 s would have run out.
        assert 0.29 <= time.monotonic() - started < 2.0 / 2


def test_updating_latency_releases_the_held_chunk(api: ToxiproxyApi, echo_proxy) -> None:  # G58
    name, port = echo_proxy
    api.add_toxic(name, "latency", latency=2000)
    with connect(port) as client:
        started = time.monotonic()
        client.sendall(b"held")
        time.sleep(0.3)
        api.update_toxic(name, "latency_downstream", toxicity=1)
        assert recv_exactly(client, 4) == b"held"
        assert time.monotonic() - started < 2.0 / 2  # released, not held for the 2 s
        assert round_trip(client, b"next") >= 1.9  # later chunks get the (unchanged) delay


def test_limit_data_count_survives_update(api: ToxiproxyApi, echo_proxy) -> None:  # G59
    name, port = echo_proxy
    api.add_toxic(name, "limit_data", bytes=10)
    with connect(port) as client:
        assert round_trip(client, b"123456") < 1
        api.update_toxic(name, "limit_data_downstream", attributes={"bytes": 12})
        client.sendall(b"abcdefgh")
        assert recv_until_eof(client) == b"abcdef"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_add_connect_write_close_remove_rounds(api: ToxiproxyApi, echo_proxy, compat: bool) -> None:  # G60
    name, port = echo_proxy
    before = open_fds()
    for _ in range(300):
        api.add_toxic(name, "latency", latency=1000)
        client = connect(port)
        client.sendall(b"x")
        client.close()
        api.remove_toxic(name, "latency_downstream")
    with connect(port) as client:
        round_trip(client, b"alive")
    if compat:  # our server runs in this process, so its descriptors are counted here too
        time.sleep(0.3)
        assert open_fds() - before < 20


def test_removing_bandwidth_zero_while_streaming(api: ToxiproxyApi, sink: SinkServer) -> None:  # G61
    port = listen_port(api.create_proxy("bw", sink.address))
    for number in range(3):
        api.add_toxic("bw", "bandwidth", stream="upstream", name=f"bw{number}", rate=0)
    with connect(port) as client:
        client.sendall(b"q" * 100_000)
        time.sleep(0.1)
        started = time.monotonic()
        for number in range(3):
            api.remove_toxic("bw", f"bw{number}")
        assert time.monotonic() - started < 2
        connection = sink.wait_for_connection()
        deadline = time.monotonic() + 5
        while len(connection.data) < 100_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(connection.data) == 100_000


def test_crash_inputs_are_survived(api: ToxiproxyApi, echo_proxy, compat: bool) -> None:  # G62
    if not compat:
        pytest.skip("these inputs kill the real Toxiproxy")
    name, port = echo_proxy
    api.add_toxic(name, "bandwidth", name="negative", rate=-1)
    api.add_toxic(name, "slicer", stream="upstream", name="zero", average_size=0)
    with connect(port) as client:
        client.sendall(b"data")
        client.settimeout(0.3)
        try:
            client.recv(10)
        except TimeoutError:
            pass
    assert api.get("/version").status_code == 200
    api.remove_toxic(name, "negative")
    with connect(port) as client:
        round_trip(client, b"fine")


def test_server_stop_leaves_nothing_behind(echo: EchoServer) -> None:  # G63
    threads_before = threading.active_count()
    server = ChaosProxyServer("127.0.0.1", 0).start()
    api = ToxiproxyApi(server.url)
    port = listen_port(api.create_proxy("p", echo.address))
    client = connect(port)
    round_trip(client, b"x")
    api_port = server.port
    server.stop()
    assert recv_until_eof(client) == b""
    assert is_refused(port) and is_refused(api_port)
    assert threading.active_count() <= threads_before + 1  # the echo server's handler may linger
    client.close()
