"""Fixtures every test folder may use."""

from __future__ import annotations

import os
import socket

import pytest

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
