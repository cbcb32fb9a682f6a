"""Fixtures for testing one service at a time, in this process, against real infrastructure.

A service's app is built by its own `create_app(settings)` with settings made here: its own
database on the embedded MongoDB (or MONGO_URL), the real RabbitMQ under a namespace unique to
the test session (so nothing leaks into a running sandbox), and peers served in-process on
loopback ports when a test needs them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from pymongo import MongoClient
from werkzeug.serving import make_server

from microlab.rabbit import delete_namespace
from patterns.settings import ServiceSettings

NAMESPACE = f"svc-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def bus_namespace(amqp_url: str) -> Iterator[str]:
    yield NAMESPACE
    delete_namespace(amqp_url, NAMESPACE)


@pytest.fixture
def make_settings(mongo_url: str, amqp_url: str, bus_namespace: str
                  ) -> Iterator[Callable[..., ServiceSettings]]:
    """`make_settings("orders", peers={"payments": url})`: settings with a fresh database."""
    databases: list[str] = []

    def make(name: str, *, peers: dict[str, str] | None = None, **overrides) -> ServiceSettings:
        database = f"test_{name}_{uuid.uuid4().hex[:8]}"
        databases.append(database)
        values = dict(name=name, port=0, mongo_url=mongo_url, mongo_db=database,
                      amqp_url=amqp_url, bus_namespace=bus_namespace, peers=dict(peers or {}))
        values.update(overrides)
        return ServiceSettings(**values)

    yield make
    client: MongoClient = MongoClient(mongo_url)
    for database in databases:
        client.drop_database(database)
    client.close()


@pytest.fixture
def serve_app() -> Iterator[Callable[[Flask], str]]:
    """Serve a Flask app on a free loopback port in a thread; returns its base URL."""
    servers = []

    def serve(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def build_app() -> Iterator[Callable[..., Flask]]:
    """`build_app(create_app, settings)`: the service's app, its background work stopped at
    teardown (consumers, outbox relay)."""
    apps: list[Flask] = []

    def build(create_app: Callable[[ServiceSettings], Flask], settings: ServiceSettings) -> Flask:
        app = create_app(settings)
        apps.append(app)
        return app

    yield build
    for app in apps:
        kit = app.extensions.get("kit")
        if kit is not None:
            kit.stop()
