"""Checks made before anything starts, each failing with one clear message saying what to do.

A learner who forgot to start RabbitMQ should read "start it like this", not a pika traceback.
"""

from __future__ import annotations

import errno
import shutil
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions

from microlab.topology import LOOPBACK, PortPlan


class PreflightError(Exception):
    """Something the sandbox needs is missing; the message says how to get it."""

    exit_code = 3


def redact(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


RABBITMQ_HOWTO = """\
Start RabbitMQ with one of:
  docker compose up -d rabbitmq                              (compose mode)
  sudo apt-get install rabbitmq-server && sudo rabbitmq-server -detached   (Debian/Ubuntu)
  brew install rabbitmq && brew services start rabbitmq      (macOS)
or point AMQP_URL at a broker that is running."""


def check_rabbitmq(amqp_url: str, timeout: float = 3.0) -> None:
    """Open (and close) one AMQP connection, so a wrong password fails here too."""
    parameters = pika.URLParameters(amqp_url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = timeout
    parameters.stack_timeout = timeout
    parameters.blocked_connection_timeout = timeout
    try:
        pika.BlockingConnection(parameters).close()
    except pika.exceptions.ProbableAuthenticationError:
        raise PreflightError(
            f"RabbitMQ at {redact(amqp_url)} refused the user and password in AMQP_URL.\n"
            "Fix the credentials in AMQP_URL (the default is guest/guest).") from None
    except (pika.exceptions.AMQPError, OSError) as error:
        reason = type(error).__name__ if not str(error) else str(error)
        raise PreflightError(
            f"RabbitMQ is not reachable at {redact(amqp_url)} ({reason}).\n"
            f"{RABBITMQ_HOWTO}") from None


def check_executables(names: tuple[str, ...] = ("nx-27017", "gunicorn")) -> None:
    """Our own dependencies come from requirements.txt; `make up` installs them."""
    venv_bin = str(Path(sys.executable).parent)
    missing = [name for name in names if not shutil.which(name, path=venv_bin)
               and not shutil.which(name)]
    if missing:
        raise PreflightError(
            f"missing program(s): {', '.join(missing)}.\n"
            "Install the project's requirements: `make up` creates .venv and does it, or run\n"
            "  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt")


def check_ports_free(plan: PortPlan, skip: tuple[str, ...] = ("rabbitmq",)) -> None:
    """Every port the run will bind must be free now, or we would fail half-way up."""
    wanted = [(name, port) for name, port in plan.ports.items() if name not in skip]
    wanted += list(plan.proxy_ports.items())
    busy = []
    for name, port in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers themselves do: a port held only by connections in TIME_WAIT (a
            # sandbox stopped a moment ago) is free to listen on.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                busy.append(f"{port} ({name})")
    if busy:
        raise PreflightError(
            f"port(s) already in use: {', '.join(busy)}.\n"
            "Another sandbox may be running: `microlab down` stops it. Or start this one\n"
            "elsewhere: `microlab up --port-offset 100`, or `microlab up --free-ports`.")
