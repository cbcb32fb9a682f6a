"""I. Proxy metrics: `-proxy-metrics` and `GET /metrics` in Prometheus text, as the real server.

Against a real Toxiproxy (TOXIPROXY_URL) these run only if it was started with `-proxy-metrics`
(its /metrics is a 404 otherwise); against ours, a second server is started with the flag.
"""

from __future__ import annotations

import re
import time
from typing import Iterator

import pytest
import requests

from microlab.chaosproxy import ChaosProxyServer
from microlab.chaosproxy.metrics import go_float
from tests.contract.toxiproxy.conftest import ToxiproxyApi, listen_port
from tests.contract.toxiproxy.toxiproxy_upstreams import EchoServer, connect, recv_exactly

SAMPLE = re.compile(r'^(toxiproxy_proxy_(?:received|sent)_bytes_total)\{direction="(\w+)",'
                    r'listener="([^"]*)",proxy="([^"]*)",upstream="([^"]*)"\} (\S+)$')


@pytest.fixture(scope="module")
def metrics_url(toxiproxy_url: str, compat: bool) -> Iterator[str]:
    if not compat:
        if requests.get(f"{toxiproxy_url}/metrics", timeout=10).status_code == 404:
            pytest.skip("the real server runs without -proxy-metrics")
        yield toxiproxy_url
        return
    with ChaosProxyServer("127.0.0.1", 0, proxy_metrics=True) as server:
        yield server.url


@pytest.fixture
def mapi(metrics_url: str) -> Iterator[ToxiproxyApi]:
    client = ToxiproxyApi(metrics_url)
    client.delete_all()
    yield client
    client.delete_all()
    client.session.close()


def samples(api: ToxiproxyApi, proxy: str) -> dict[tuple[str, str], tuple[str, str, float]]:
    """{(metric, direction): (listener, upstream, value)} for one proxy's series."""
    response = api.get("/metrics")
    assert response.status_code == 200
    found = {}
    for line in response.text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(4) == proxy:
            metric, direction, listener, _, upstream, value = match.groups()
            found[(metric, direction)] = (listener, upstream, float(value))
    return found


def wait_for_samples(api: ToxiproxyApi, proxy: str, count: int = 4) -> dict:
    deadline = time.monotonic() + 5
    while len(found := samples(api, proxy)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_closed_connection_counts_both_directions(mapi: ToxiproxyApi, echo: EchoServer) -> None:  # I1
    proxy = mapi.create_proxy("counted", echo.address)
    with connect(listen_port(proxy)) as client:
        client.sendall(b"hello world")
        assert recv_exactly(client, 11) == b"hello world"
    found = wait_for_samples(mapi, "counted")
    for metric in ("toxiproxy_proxy_received_bytes_total", "toxiproxy_proxy_sent_bytes_total"):
        for direction in ("upstream", "downstream"):
            assert found[(metric, direction)] == (proxy["listen"], echo.address, 11.0)


def test_open_connection_counts_nothing_until_it_ends(mapi: ToxiproxyApi, echo: EchoServer) -> None:  # I2
    proxy = mapi.create_proxy("open", echo.address)
    client = connect(listen_port(proxy))
    client.sendall(b"ping")
    assert recv_exactly(client, 4) == b"ping"
    time.sleep(0.2)
    assert samples(mapi, "open") == {}
    client.close()
    assert wait_for_samples(mapi, "open")[("toxiproxy_proxy_sent_bytes_total", "downstream")][2] == 4


def test_sent_is_after_the_toxics(mapi: ToxiproxyApi, echo: EchoServer) -> None:  # I3
    proxy = mapi.create_proxy("limited", echo.address)
    mapi.add_toxic("limited", "limit_data", stream="upstream", bytes=5)
    with connect(listen_port(proxy)) as client:
        client.sendall(b"hello world")
        time.sleep(0.2)
    found = wait_for_samples(mapi, "limited", count=2)
    assert found[("toxiproxy_proxy_received_bytes_total", "upstream")][2] == 11
    assert found[("toxiproxy_proxy_sent_bytes_total", "upstream")][2] == 5


def test_prometheus_text_format(mapi: ToxiproxyApi, echo: EchoServer) -> None:  # I4
    proxy = mapi.create_proxy("big", echo.address)
    payload = b"x" * 1_000_000
    with connect(listen_port(proxy)) as client:
        client.sendall(payload)
        assert recv_exactly(client, len(payload)) == payload
    wait_for_samples(mapi, "big")
    response = mapi.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    for metric in ("toxiproxy_proxy_received_bytes_total", "toxiproxy_proxy_sent_bytes_total"):
        assert f"# TYPE {metric} counter" in lines
        assert any(line.startswith(f"# HELP {metric}") for line in lines)
    # Go writes a million as 1e+06, not 1000000 or 1000000.0.
    assert any(line.endswith(" 1e+06") and 'proxy="big"' in line for line in lines)


def test_metrics_route_is_404_without_the_flag(api: ToxiproxyApi, compat: bool) -> None:  # I5
    if not compat:
        pytest.skip("whether the real server has -proxy-metrics is not known here")
    response = api.get("/metrics")
    assert response.status_code == 404
    assert response.content == b"404 page not found\n"


@pytest.mark.parametrize("value, text", [(0, "0"), (1, "1"), (11, "11"), (123456, "123456"),
                                         (1_000_000, "1e+06"), (1_234_567, "1.234567e+06"),
                                         (0.5, "0.5"), (0.00001, "1e-05"), (1e21, "1e+21")])
def test_values_are_formatted_as_go_does(value: float, text: str) -> None:  # I6
    assert go_float(value) == text
