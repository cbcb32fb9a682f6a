"""Fixtures every test folder may use."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from microlab.embedded_mongo import running_mongo, wait_for_mongo
from microlab.launcher import SandboxProcess
from microlab.rabbit import delete_namespace

# Code under test in this process (in-process apps, clients) exports no spans; the sandbox's
# services get their own exporter from the supervisor.
os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The RabbitMQ the tests use; the whole-sandbox tests need one (CI starts it)."""
    return AMQP_URL


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MONGO_URL when set (a real MongoDB), else one embedded server for the whole session."""
    url = os.environ.get("MONGO_URL")
    if url:
        wait_for_mongo(url, timeout=10)
        yield url
        return
    with running_mongo(tmp_path_factory.mktemp("mongo")) as embedded_url:
        yield embedded_url


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory, amqp_url: str) -> Iterator[SandboxProcess]:
    """The whole sandbox, up once per test session on free ports, torn down at the end; shared
    by the integration and browser tests."""
    # Breakers retry after 3 s instead of 30, so tests can watch a recovery.
    runner = SandboxProcess(tmp_path_factory.mktemp("sandbox") / "run",
                            env={"BREAKER_RECOVERY_TIMEOUT": "3"})
    runner.start()
    try:
        yield runner
    finally:
        code = runner.stop()
        delete_namespace(amqp_url, runner.namespace)
        assert code == 0, f"microlab up exited with {code}:\n{runner.output()[-3000:]}"
