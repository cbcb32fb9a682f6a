"""Permanent failures are dead-lettered at once, and `microlab dlq` shows, replays and purges them
(the whole sandbox: email asks users about a user that does not exist)."""

from __future__ import annotations

import subprocess
import time

import pytest

from microlab.launcher import SandboxProcess
from patterns.bus import Bus
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def dlq(sandbox: SandboxProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return sandbox.cli("dlq", *args, timeout=60)


def dead_letters(sandbox: SandboxProcess) -> int:
    listed = dlq(sandbox, "list").stdout.splitlines()
    row = next((line for line in listed if line.split()[:1] == ["email.events"]), "email.events 0")
    return int(row.split()[-1])


def test_an_event_for_an_unknown_user_is_dead_lettered_at_once_and_can_be_replayed(
        sandbox: SandboxProcess, amqp_url: str) -> None:
    bus = Bus(amqp_url, namespace=sandbox.namespace)
    try:
        began = time.monotonic()
        bus.publish("orders", "order.confirmed", {
            "order_id": "ord_000000000dlq", "user_id": "usr_nobodyhere0", "total_cents": 100,
            "occurred_at": "2026-12-04T00:00:00+00:00"})
        wait_for(lambda: dead_letters(sandbox) == 1, 30, "the event in email.events.dead")
        # At once: email retries transient failures every 2 s, 30 times; a 404 is not one.
        assert time.monotonic() - began < 10

        shown = dlq(sandbox, "show", "email.events")
        assert shown.returncode == 0, shown.stderr
        assert "order.confirmed" in shown.stdout and "permanent" in shown.stdout
        assert "404" in shown.stdout
        assert dead_letters(sandbox) == 1  # show leaves them in place

        replayed = dlq(sandbox, "replay", "email.events")
        assert "1 message(s) sent back to email.events" in replayed.stdout
        # The user still does not exist: back in the dead-letter queue, attempts from 1 again.
        wait_for(lambda: dead_letters(sandbox) == 1, 30, "the replayed event dead-lettered again")
        assert "permanent" in dlq(sandbox, "show", "email.events").stdout
    finally:
        bus.close()
        purged = dlq(sandbox, "purge", "email.events")
    assert "1 message(s) removed" in purged.stdout
    assert dead_letters(sandbox) == 0
    checked = subprocess.run(sandbox.command("check"), capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout


def test_an_unknown_queue_is_a_clear_error(sandbox: SandboxProcess) -> None:
    answer = dlq(sandbox, "show", "no.such.queue")
    assert answer.returncode == 1
    assert "microlab dlq list" in answer.stderr and "Traceback" not in answer.stderr
