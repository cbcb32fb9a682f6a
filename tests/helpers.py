"""Small helpers the test folders share: waiting for something to become true, and recording
the events a queue of the test's own receives."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from patterns.bus import Message


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
