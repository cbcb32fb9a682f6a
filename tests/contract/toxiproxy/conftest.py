"""Conformance suite for the Toxiproxy API (groups A–H of the conformance test list).

The suite runs against TOXIPROXY_URL when it is set (for instance a real `toxiproxy-server`
sharing this host's network, so it can reach the loopback upstreams), and otherwise against our
own server (`microlab.chaosproxy`) started in this process on a free port. The tests are the
same either way; the few places where our server deliberately differs (documented in
docs/chaos-proxy.md) check `compat`, and tests that would crash the real server are skipped.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest
import requests

from microlab.chaosproxy import ChaosProxyServer
from tests.contract.toxiproxy.toxiproxy_upstreams import (
    EchoServer,
    GreetingServer,
    ReplyAfterEofServer,
    SinkServer,
)


class ToxiproxyApi:
    """Thin `requests` helper in the Go client's style (no retries, no hidden state)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "toxiproxy-cli"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0", **extra: Any) -> dict:
        response = self.post("/proxies", json={"name": name, "listen": listen, "upstream": upstream, **extra})
        assert response.status_code == 201, response.text
        return response.json()

    def add_toxic(self, proxy: str, toxic_type: str, stream: str = "downstream",
                  toxicity: float = 1.0, name: str | None = None, **attributes: int) -> dict:
        body = {"type": toxic_type, "stream": stream, "toxicity": toxicity, "attributes": attributes}
        if name:
            body["name"] = name
        response = self.post(f"/proxies/{proxy}/toxics", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def update_toxic(self, proxy: str, toxic: str, **body: Any) -> dict:
        response = self.patch(f"/proxies/{proxy}/toxics/{toxic}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        assert self.delete(f"/proxies/{proxy}/toxics/{toxic}").status_code == 204

    def set_enabled(self, proxy: str, enabled: bool) -> dict:
        response = self.patch(f"/proxies/{proxy}", json={"enabled": enabled})
        assert response.status_code == 200, response.text
        return response.json()

    def delete_all(self) -> None:
        for name in self.get("/proxies").json():
            self.delete(f"/proxies/{requests.utils.quote(name, safe='')}")


def listen_port(proxy: dict) -> int:
    return int(proxy["listen"].rsplit(":", 1)[1])


@pytest.fixture(scope="session")
def toxiproxy_url() -> Iterator[str]:
    url = os.environ.get("TOXIPROXY_URL")
    if url:
        yield url
        return
    with ChaosProxyServer("127.0.0.1", 0) as server:
        yield server.url


@pytest.fixture(scope="session")
def compat() -> bool:
    """True when the suite runs against our own server rather than a real Toxiproxy."""
    return not os.environ.get("TOXIPROXY_URL")


@pytest.fixture
def api(toxiproxy_url: str) -> Iterator[ToxiproxyApi]:
    client = ToxiproxyApi(toxiproxy_url)
    client.delete_all()
    yield client
    client.delete_all()
    client.session.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    server = SinkServer()
    yield server
    server.close()


@pytest.fixture
def greeter() -> Iterator[GreetingServer]:
    server = GreetingServer()
    yield server
    server.close()


@pytest.fixture
def replier() -> Iterator[ReplyAfterEofServer]:
    server = ReplyAfterEofServer()
    yield server
    server.close()


@pytest.fixture
def echo_proxy(api: ToxiproxyApi, echo: EchoServer) -> tuple[str, int]:
    """A proxy named `echo` in front of an echo server: (name, listen port)."""
    return "echo", listen_port(api.create_proxy("echo", echo.address))
