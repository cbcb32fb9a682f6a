"""Wrong: counts every failure ever, not failures in a row, so an instance that fails now and
then (one call in two) is ejected although it answers most calls.

breaks: round_robin_fair
"""

from __future__ import annotations

from exercises.load_balancer.reference import Balancer as Reference


class Balancer(Reference):
    def report(self, instance: str, ok: bool) -> None:
        if not ok:
            super().report(instance, ok)  # a success no longer resets the count
