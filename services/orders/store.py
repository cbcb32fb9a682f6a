"""Orders' MongoDB adapter: orders (with their outbox) and their status history.

A transition is one conditional write on the order (`{"_id": id, "status": from}`), which also
appends its events to the outbox: two threads racing to move the same order cannot both win, and
a transition is never announced unless it happened. The history is one document per transition
in `order_history` (the embedded MongoDB cannot `$push` subdocuments), keyed by order and target
status so writing it twice keeps one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from patterns.outbox import Outbox
from patterns.clock import utc_now_ms as now
from patterns.clock import iso_utc as iso
from patterns.paging import read_page
from services.orders import domain, events
from services.orders.domain import CANCELLED, CONFIRMED


def public(order: Mapping[str, Any]) -> dict[str, Any]:
    """An order as the API shows it."""
    return {"id": order["_id"], "user_id": order["user_id"], "items": order["items"],
            "total_cents": order["total_cents"], "status": order["status"],
            "reason": order.get("reason"), "saga_id": order.get("saga_id"),
            "reservation_id": order.get("reservation_id"), "payment_id": order.get("payment_id"),
            "created_at": iso(order["created_at"]), "updated_at": iso(order["updated_at"])}


class OrderStore:
    def __init__(self, outbox: Outbox, history: Collection) -> None:
        self.outbox = outbox
        self.orders: Collection = outbox.collection
        self.history = history
        self.orders.create_index([("user_id", ASCENDING), ("created_at", DESCENDING)])
        self.history.create_index("order_id")

    def get(self, order_id: str) -> dict[str, Any] | None:
        return self.orders.find_one({"_id": order_id})

    def create(self, order: dict[str, Any]) -> bool:
        """Store a new pending order and announce it; False if it exists already."""
        try:
            self.outbox.insert(order, events.order_created(order))
        except DuplicateKeyError:
            return False
        self._record_history(order["_id"], None, order["status"], None, order["created_at"])
        return True

    def confirm(self, order_id: str, *, payment_id: str,
                reservation_id: str) -> dict[str, Any] | None:
        return self.transition(order_id, CONFIRMED, payment_id=payment_id,
                               reservation_id=reservation_id)

    def cancel(self, order_id: str, reason: str) -> dict[str, Any] | None:
        return self.transition(order_id, CANCELLED, reason=reason)

    def transition(self, order_id: str, target: str, *, reason: str | None = None,
                   **fields: Any) -> dict[str, Any] | None:
        """Move the order to `target` if its state machine allows, and return it as this write
        left it (no need to read it back); None when it is already there (a repeat) or gone."""
        order = self.get(order_id)
        if order is None or order["status"] == target:
            return None
        domain.check_transition(order["status"], target)
        moment = now()
        changes = {"status": target, "updated_at": moment, **fields}
        if reason is not None:
            changes["reason"] = reason
        moved = self.outbox.update({"_id": order_id, "status": order["status"]},
                                   {"$set": changes},
                                   *events.transition_events(order, target, reason))
        if moved:
            self._record_history(order_id, order["status"], target, reason, moment)
            return {**order, **changes}
        return self.transition(order_id, target, reason=reason, **fields)  # raced: look again

    def history_of(self, order_id: str) -> list[dict[str, Any]]:
        entries = self.history.find({"order_id": order_id}).sort("at", ASCENDING)
        return [{"from": entry["from"], "to": entry["to"], "reason": entry.get("reason"),
                 "at": iso(entry["at"])} for entry in entries]

    def page(self, user_id: str | None, page: int, limit: int
             ) -> tuple[list[dict[str, Any]], int]:
        criteria = {"user_id": user_id} if user_id else {}
        found = read_page(self.orders, criteria, sort=[("created_at", DESCENDING)],
                          skip=(page - 1) * limit, limit=limit)
        return [public(order) for order in found.items], found.total

    def _record_history(self, order_id: str, source: str | None, target: str,
                        reason: str | None, at: datetime) -> None:
        try:
            self.history.insert_one({"_id": f"{order_id}:{target}", "order_id": order_id,
                                     "from": source, "to": target, "reason": reason, "at": at})
        except DuplicateKeyError:
            pass  # recorded by an earlier attempt


class PlacementStore:
    """Idempotent order placement: one document per (customer, Idempotency-Key), made before the
    saga starts and given the answer the saga ended with. A repeat of the request finds it:
    the same answer for the same order, never a second order and a second charge. Placements
    are kept with the orders (as long as a client could retry).

    A process can die between claiming the key and creating the order: no order, no saga to
    recover, and the key would say "still running" for ever. A claim carries a token and the
    time it was made; a repeat that finds it unanswered long after any request could still be
    running takes it over (one repeat wins: the token must still match) and places the order
    itself, under the same order id."""

    def __init__(self, placements: Collection) -> None:
        self.placements = placements

    def claim(self, placement_id: str, order_id: str, fingerprint: str) -> dict[str, Any] | None:
        """Take the key for a new order; the earlier placement when it was taken already."""
        try:
            self.placements.insert_one({"_id": placement_id, "order_id": order_id,
                                        "fingerprint": fingerprint, "status": None,
                                        "body": None, "created_at": now(),
                                        "claim": domain.new_id("clm"), "claimed_at": time.time()})
        except DuplicateKeyError:
            return self.placements.find_one({"_id": placement_id})
        return None

    def take_over(self, placement: dict[str, Any], after_seconds: float) -> bool:
        """Claim again a key whose claimant has been silent for `after_seconds`; True if ours."""
        if placement.get("status") is not None or \
                time.time() - placement.get("claimed_at", 0.0) < after_seconds:
            return False
        taken = self.placements.update_one(
            {"_id": placement["_id"], "claim": placement.get("claim"), "status": None},
            {"$set": {"claim": domain.new_id("clm"), "claimed_at": time.time()}})
        return taken.modified_count == 1

    def get(self, placement_id: str) -> dict[str, Any] | None:
        return self.placements.find_one({"_id": placement_id})

    def answered(self, placement_id: str, status: int, body: Any) -> None:
        self.placements.update_one({"_id": placement_id},
                                   {"$set": {"status": status, "body": body}})
