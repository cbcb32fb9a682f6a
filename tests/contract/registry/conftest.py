"""Fixtures of the registry contract: which Consul API the suite talks to, and clean-up.

- CONSUL_URL set: the suite runs unchanged against that agent (e.g. `hashicorp/consul` in dev
  mode). The HTTP-check tests serve their target on 127.0.0.1 of this machine, so a Consul in a
  container needs host networking (`docker run --network host hashicorp/consul agent -dev`).
- CONSUL_URL unset: the registry app is served in-process for the session on a free 127.0.0.1
  port (werkzeug, threaded), with its health checker running, and stopped afterwards.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import consul
import pytest
from werkzeug.serving import make_server

from patterns.discovery import consul_client
from patterns.settings import ServiceSettings
from services.registry.app import create_app

T = TypeVar("T")


@pytest.fixture(scope="session")
def real_consul() -> bool:
    return bool(os.environ.get("CONSUL_URL"))


@pytest.fixture(scope="session")
def consul_url(real_consul: bool) -> Iterator[str]:
    if real_consul:
        yield os.environ["CONSUL_URL"]
        return
    app = create_app(ServiceSettings(name="registry", port=0))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="registry-under-test",
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        app.extensions["registry.checker"].stop()


@pytest.fixture
def client(consul_url: str) -> consul.Consul:
    return consul_client(consul_url, timeout=10)


@pytest.fixture
def service_name() -> str:
    """A name no other test (or earlier run against a shared Consul) uses."""
    return f"contract-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cleanup(client: consul.Consul) -> Iterator[list[str]]:
    """Service IDs to deregister after the test, whatever happened."""
    service_ids: list[str] = []
    yield service_ids
    for service_id in service_ids:
        client.agent.service.deregister(service_id)


def eventually(probe: Callable[[], T | None], timeout: float = 15.0,
               interval: float = 0.1) -> T:
    """The first truthy value of `probe()`, polled until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s (last value {value!r})")
        time.sleep(interval)


class FlipServer:
    """A tiny HTTP server on 127.0.0.1 answering every GET with `status`, which tests flip."""

    def __init__(self) -> None:
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = f"status {outer.status}".encode()
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep the test output quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flip_server() -> Iterator[FlipServer]:
    server = FlipServer()
    yield server
    server.close()
