"""The preflight port check: busy means someone listens, not that a connection lingers."""

from __future__ import annotations

import socket

import pytest

from microlab.preflight import PreflightError, check_ports_free
from microlab.topology import PortPlan


def port_left_in_time_wait() -> int:
    """A port whose listener has gone, with the server side of a connection in TIME_WAIT
    (the side that closes first keeps it), as right after `make up` was stopped."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first: its end waits in TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    return port


def test_a_port_held_only_by_time_wait_counts_as_free() -> None:
    port = port_left_in_time_wait()
    with socket.socket() as plain:  # what the old check did: a plain bind fails here
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    check_ports_free(PortPlan({"users": port}))


def test_a_listening_port_is_busy_and_named() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PreflightError, match=f"{port} \\(users\\)"):
            check_ports_free(PortPlan({"users": port}))
