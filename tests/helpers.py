"""Small helpers the test folders share: waiting for something to become true, recording the
events a queue of the test's own receives (and knowing when nothing more is on its way), and
skipping a test whose infrastructure is missing, except in CI where that must fail."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

import pytest
import requests

from patterns.bus import Message, Publisher
from patterns.outbox import Outbox


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy, and return that; fail after
    `timeout` seconds (generous: these machines are shared)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or condition}")


def passing_instances(sandbox: Any, service: str) -> list[dict]:
    """The instances of `service` the sandbox's registry lists as passing every check."""
    return requests.get(f"{sandbox.urls['registry']}/v1/health/service/{service}",
                        params={"passing": "1"}, timeout=5).json()


class EventRecorder:
    """A consumer handler that keeps every message; tests wait for the ones they expect."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)

    def matching(self, match: Callable[[Message], bool]) -> list[Message]:
        with self._lock:
            return [message for message in self.messages if match(message)]

    def wait_for(self, match: Callable[[Message], bool], count: int = 1,
                 timeout: float = 15.0) -> list[Message]:
        """At least `count` messages matching `match` (all of them, once there are enough)."""
        return wait_for(lambda: (found if len(found := self.matching(match)) >= count else None),
                        timeout, what=f"{count} matching event(s)")

    def settle(self, bus: Publisher, exchange: str, routing_key: str, *,
               relayed: Callable[[], bool] = lambda: True, timeout: float = 15.0) -> None:
        """Return once everything published before this call has been recorded, so that a test
        can say "only one" without sleeping: wait until `relayed()` (e.g. the service's outbox
        is empty: all its events are with the broker), then publish a marker to `exchange` as
        `routing_key` (which this recorder's queue must be bound to) and wait for it. A queue
        hands its messages over in order: once the marker is in, so is whatever came before.
        The marker is not kept in `messages`."""
        wait_for(relayed, timeout, what="the outbox to be relayed")
        marker = bus.publish(exchange, routing_key, {"marker": True},
                             message_id=f"marker-{uuid.uuid4().hex}")
        self.wait_for(lambda message: message.id == marker, timeout=timeout)
        with self._lock:
            self.messages = [m for m in self.messages if m.id != marker]


def relayed(database: Any, *collections: str) -> Callable[[], bool]:
    """For `EventRecorder.settle`: true once the outboxes of these collections of a service's
    database are empty, i.e. the relay has handed every event written so far to the broker."""
    return lambda: all(Outbox(database[name]).pending() == 0 for name in collections)


def missing(what: str) -> NoReturn:
    """A test needs `what` (a server, a tool) and it is not there: skipped on a learner's
    machine, but a failure in CI (`CI=true`), where a skip would pass a check that never ran."""
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(f"{what}, and CI must run this test")
    pytest.skip(what)
