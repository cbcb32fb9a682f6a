"""H. The clients learners meet, end to end: toxiproxy-python, plain requests, Chaos Toolkit."""

from __future__ import annotations

import os
from typing import Iterator
from urllib.parse import urlsplit

import pytest
import toxiproxy
from chaostoxi.proxy import actions as proxy_actions
from chaostoxi.proxy import probes as proxy_probes
from chaostoxi.toxic import actions as toxic_actions
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from tests.contract.toxiproxy.conftest import ToxiproxyApi, listen_port
from tests.contract.toxiproxy.toxiproxy_upstreams import EchoServer, connect, is_refused, round_trip


@pytest.fixture
def toxiproxy_server(api: ToxiproxyApi) -> Iterator[toxiproxy.Toxiproxy]:
    """toxiproxy-python 0.1.1 keeps host and port on a class, for the whole process: point it
    at the server under test and put the defaults back afterwards."""
    address = urlsplit(api.url)
    saved = APIConsumer.host, APIConsumer.port
    server = toxiproxy.Toxiproxy()
    server.update_api_consumer(address.hostname, address.port)
    yield server
    APIConsumer.host, APIConsumer.port = saved


def test_toxiproxy_python_end_to_end(toxiproxy_server: toxiproxy.Toxiproxy, echo: EchoServer) -> None:  # H64
    assert toxiproxy_server.running()
    assert toxiproxy_server.version().startswith(b'{"version": ')
    proxy = toxiproxy_server.create(upstream=echo.address, name="learner")
    port = int(proxy.listen.rsplit(":", 1)[1])
    assert toxiproxy_server.get_proxy("learner").upstream == echo.address

    proxy.add_toxic(type="latency", attributes={"latency": 120})
    assert set(proxy.toxics()) == {"latency_downstream"}
    assert proxy.get_toxic("latency_downstream").attributes == {"latency": 120, "jitter": 0}
    with connect(port) as client:
        assert round_trip(client, b"slow") >= 0.115
    assert proxy.destroy_toxic("latency_downstream")
    assert proxy.toxics() == {}

    with proxy.down():
        assert is_refused(port)
    with connect(port) as client:
        round_trip(client, b"back up")
    proxy.disable()
    assert toxiproxy_server.get_proxy("learner").enabled is False
    toxiproxy_server.reset()
    assert toxiproxy_server.get_proxy("learner").enabled is True

    with pytest.raises(ProxyExists):
        toxiproxy_server.create(upstream=echo.address, name="learner")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="gremlin")
    with pytest.raises(NotFound):
        proxy.destroy_toxic("never-added")
    assert toxiproxy_server.destroy(proxy)
    assert toxiproxy_server.proxies() == {}


def test_go_client_style_requests(api: ToxiproxyApi, echo: EchoServer) -> None:  # H65
    """The Go client saves a proxy by POSTing all of it back and updates toxics with PATCH."""
    proxy = api.create_proxy("go", echo.address)
    proxy["enabled"] = False
    saved = api.post("/proxies/go", json=proxy)
    assert saved.status_code == 200 and saved.json()["enabled"] is False
    proxy["enabled"] = True
    assert api.post("/proxies/go", json=proxy).json()["enabled"] is True
    api.add_toxic("go", "latency", latency=10, jitter=3)
    updated = api.patch("/proxies/go/toxics/latency_downstream", json={"attributes": {"latency": 20}})
    assert updated.json()["attributes"] == {"latency": 20, "jitter": 3}
    assert updated.json()["toxicity"] == 1


def test_chaos_toolkit_extension(api: ToxiproxyApi, echo: EchoServer) -> None:  # H66
    configuration = {"toxiproxy_url": api.url}
    assert proxy_actions.create_proxy("ctk", "127.0.0.1", echo.port, listen_host="127.0.0.1",
                                      configuration=configuration)
    port = int(configuration["ctk_PORT"])
    assert proxy_probes.proxy_exist("ctk", configuration=configuration)
    assert toxic_actions.create_latency_toxic("ctk", "slow", latency=100, configuration=configuration)
    with connect(port) as client:
        assert round_trip(client, b"ctk") >= 0.095
    assert toxic_actions.delete_toxic("ctk", "slow", configuration=configuration)
    assert toxic_actions.create_limiter_toxic("ctk", "limit", bytes_limit=3, configuration=configuration)
    assert toxic_actions.delete_toxic("ctk", "limit", configuration=configuration)
    assert proxy_actions.disable_proxy("ctk", configuration=configuration)
    assert is_refused(port)
    assert proxy_actions.enable_proxy("ctk", configuration=configuration)
    assert proxy_actions.reset(configuration=configuration)
    host_port = {"toxiproxy_host": urlsplit(api.url).hostname, "toxiproxy_port": urlsplit(api.url).port}
    assert proxy_probes.get_proxy_attribute("ctk", "enabled", configuration=host_port) is True
    proxy_actions.delete_proxy("ctk", configuration=configuration)
    assert not proxy_probes.proxy_exist("ctk", configuration=configuration)
    os.environ.pop("ctk_PORT", None)  # the extension exports the port to the environment


def test_chaos_toolkit_default_listen_host_stays_reachable(api: ToxiproxyApi, echo: EchoServer) -> None:  # H66
    """The extension asks for 0.0.0.0 by default; the proxy must still answer on loopback."""
    configuration = {"toxiproxy_url": api.url}
    assert proxy_actions.create_proxy("wild", "127.0.0.1", echo.port, configuration=configuration)
    with connect(listen_port(api.get("/proxies/wild").json())) as client:
        round_trip(client, b"wild")
    os.environ.pop("wild_PORT", None)
