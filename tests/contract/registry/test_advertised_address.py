"""A service bound to every interface registers the address its peers can call.

In a container a service binds HOST=0.0.0.0 and is reached at another name (ADVERTISE_HOST).
The registry refuses a wildcard address ("Invalid service address"), so a service that
advertised HOST would die at start. This starts a real service process (gunicorn, through
`patterns.serve.run_service`, as `python -m services.<name>` does) bound to 0.0.0.0 and
advertising 127.0.0.1, and checks what the registry holds and that its HTTP check passes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from patterns.discovery import Discovery, Instance
from tests.contract.registry.conftest import eventually

ROOT = Path(__file__).resolve().parents[3]

SERVICE = """
from patterns.serve import run_service
from patterns.service import ServiceKit

def create_app(settings):
    kit = ServiceKit(settings, title="advertised")
    kit.start()
    return kit.app

run_service("advertised", create_app)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


@pytest.fixture
def service(consul_url: str, service_name: str) -> Iterator[tuple[subprocess.Popen, int]]:
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.endswith("_URL") and key not in ("MICROLAB_ENV", "JWT_SECRET")}
    env.update(SERVICE_NAME=service_name, HOST="0.0.0.0", PORT=str(port),
               ADVERTISE_HOST="127.0.0.1", CONSUL_URL=consul_url,
               OTEL_TRACES_EXPORTER="none", PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-c", SERVICE], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield process, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_service_bound_to_the_wildcard_registers_its_advertised_address(
        consul_url, service_name, service):
    process, port = service
    discovery = Discovery(consul_url, timeout=10)

    def healthy() -> list[Instance] | None:
        if process.poll() is not None:  # it died at start: show why
            pytest.fail(f"the service exited with {process.returncode}:\n"
                        f"{process.stdout.read()[-3000:]}")
        return discovery.healthy(service_name)

    [instance] = eventually(healthy, timeout=30)  # every check passes, the HTTP one included
    assert (instance.address, instance.port) == ("127.0.0.1", port)
    _index, [entry] = discovery.client.health.service(service_name)
    http_check = next(check for check in entry["Checks"] if check["CheckID"].endswith(":http"))
    assert http_check["Status"] == "passing"  # the registry called the advertised address
    assert http_check["Output"].startswith(f"HTTP GET http://127.0.0.1:{port}/health: 200")

    process.terminate()  # a clean stop deregisters at once
    process.wait(timeout=15)
    assert discovery.client.health.service(service_name)[1] == []
