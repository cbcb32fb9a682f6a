"""Wrong: an ejected instance never comes back, even after it recovered — one bad minute and
the service runs on fewer instances for good.

breaks: back_after_cool_off
"""

from __future__ import annotations

import math

from exercises.load_balancer.reference import Balancer as Reference


class Balancer(Reference):
    def report(self, instance: str, ok: bool) -> None:
        super().report(instance, ok)
        if instance in self.ejected_until:
            self.ejected_until[instance] = math.inf
