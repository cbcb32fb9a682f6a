"""Wrong: reads the registry once, at the first call, and keeps that list forever: an instance
that was shut down keeps getting calls, a new one never gets any.

breaks: deregistered_gets_no_traffic
"""

from __future__ import annotations

import math

from exercises.load_balancer.reference import Balancer as Reference


class Balancer(Reference):
    def pick(self) -> str:
        self.refresh_every = math.inf
        return super().pick()
