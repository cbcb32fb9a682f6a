"""Reference solution: a round-robin balancer that ejects an instance after `max_failures`
failures in a row, lets it back after `eject_for` seconds, and re-reads the registry every
`refresh_every` seconds."""

from __future__ import annotations

import math

from exercises.load_balancer.world import NoHealthyInstance, Registry
from patterns.clock import Clock


class Balancer:
    def __init__(self, registry: Registry, clock: Clock, *, max_failures: int = 3,
                 eject_for: float = 10.0, refresh_every: float = 5.0) -> None:
        self.registry = registry
        self.clock = clock
        self.max_failures = max_failures
        self.eject_for = eject_for
        self.refresh_every = refresh_every
        self.instances: list[str] = []
        self.fetched_at = -math.inf
        self.failures: dict[str, int] = {}
        self.ejected_until: dict[str, float] = {}
        self.turn = 0

    def pick(self) -> str:
        now = self.clock.monotonic()
        if now - self.fetched_at >= self.refresh_every:
            self.instances = self.registry.instances()
            self.fetched_at = now
        usable = [name for name in self.instances
                  if self.ejected_until.get(name, -math.inf) <= now]
        if not usable:
            raise NoHealthyInstance("every instance is ejected" if self.instances
                                    else "no instance registered")
        self.turn += 1
        return usable[(self.turn - 1) % len(usable)]

    def report(self, instance: str, ok: bool) -> None:
        if ok:
            self.failures[instance] = 0
            return
        self.failures[instance] = self.failures.get(instance, 0) + 1
        if self.failures[instance] >= self.max_failures:
            self.failures[instance] = 0
            self.ejected_until[instance] = self.clock.monotonic() + self.eject_for
