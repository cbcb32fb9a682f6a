"""Sandboxes on one broker stay apart with no flag: each run dir has a namespace of its own."""

from __future__ import annotations

from pathlib import Path

import pika
import pytest

from microlab.cli import default_namespace
from microlab.launcher import SandboxProcess
from microlab.rabbit import delete_namespace

pytestmark = pytest.mark.slow


def test_the_namespace_follows_the_run_dir(tmp_path: Path) -> None:
    assert default_namespace(tmp_path / "a") == default_namespace(tmp_path / "b" / ".." / "a")
    assert default_namespace(tmp_path / "a") != default_namespace(tmp_path / "b")
    assert default_namespace(tmp_path / "a").startswith("ml-")


def test_a_sandbox_started_without_namespace_gets_its_own(tmp_path: Path, amqp_url: str) -> None:
    run_dir = tmp_path / "run"
    sandbox = SandboxProcess(run_dir, "--free-ports")  # no --namespace, as `make up`
    namespace = default_namespace(run_dir)
    try:
        sandbox.start()
        assert sandbox.state["namespace"] == namespace
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:  # the email service's queue lives under the sandbox's prefix (passive: must exist)
            connection.channel().queue_declare(f"{namespace}.email.events", passive=True)
        finally:
            connection.close()
    finally:
        sandbox.stop()
        delete_namespace(amqp_url, namespace)
