"""Client-side load balancer: spread calls over a service's instances, set failing ones aside.

Fill in the bodies below, then grade: `make grade EX=load_balancer`. The task, the rules the
grader checks and hints are in README.md next to this file.
"""

from __future__ import annotations

from exercises.load_balancer.world import NoHealthyInstance, Registry
from patterns.clock import Clock


class Balancer:
    """Picks the instance for each call, round robin over the instances that may take calls.

    - `registry.instances()` lists the ids registered now; ask it again once `refresh_every`
      seconds have passed since you last asked.
    - After `max_failures` failed calls *in a row* to an instance, eject it: no calls to it for
      `eject_for` seconds (`clock.monotonic()` tells the time). Then it is back, with a clean
      slate: it takes `max_failures` new failures in a row to eject it again.
    """

    def __init__(self, registry: Registry, clock: Clock, *, max_failures: int = 3,
                 eject_for: float = 10.0, refresh_every: float = 5.0) -> None:
        raise NotImplementedError

    def pick(self) -> str:
        """The id of the instance to call next. Raise `NoHealthyInstance` when no instance is
        registered or every one is ejected."""
        raise NotImplementedError

    def report(self, instance: str, ok: bool) -> None:
        """How the call to `instance` went: `ok=False` is a failure (refused, timed out, 5xx)."""
        raise NotImplementedError


__all__ = ["Balancer", "NoHealthyInstance"]
