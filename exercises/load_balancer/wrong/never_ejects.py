"""Wrong: counts nothing, so a dead instance keeps getting its share of the calls.

breaks: ejected_gets_no_traffic
"""

from __future__ import annotations

from exercises.load_balancer.reference import Balancer as Reference


class Balancer(Reference):
    def report(self, instance: str, ok: bool) -> None:
        pass  # "round robin already spreads the damage"
