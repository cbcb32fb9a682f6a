"""Orders' MongoDB adapter: orders (with their outbox) and their status history.

A transition is one conditional write on the order (`{"_id": id, "status": from}`), which also
appends its events to the outbox: two threads racing to move the same order cannot both win, and
a transition is never announced unless it happened. The history is one document per transition
in `order_history` (the embedded MongoDB cannot `$push` subdocuments), keyed by order and target
status so writing it twice keeps one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from patterns.outbox import Outbox
from patterns.clock import utc_now_ms as now
from patterns.clock import iso_utc as iso
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

    def confirm(self, order_id: str, *, payment_id: str, reservation_id: str) -> bool:
        return self.transition(order_id, CONFIRMED, payment_id=payment_id,
                               reservation_id=reservation_id)

    def cancel(self, order_id: str, reason: str) -> bool:
        return self.transition(order_id, CANCELLED, reason=reason)

    def transition(self, order_id: str, target: str, *, reason: str | None = None,
                   **fields: Any) -> bool:
        """Move the order to `target` if its state machine allows; False when it is already
        there (a repeat) or gone."""
        order = self.get(order_id)
        if order is None or order["status"] == target:
            return False
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
            return True
        return self.transition(order_id, target, reason=reason, **fields)  # raced: look again

    def history_of(self, order_id: str) -> list[dict[str, Any]]:
        entries = self.history.find({"order_id": order_id}).sort("at", ASCENDING)
        return [{"from": entry["from"], "to": entry["to"], "reason": entry.get("reason"),
                 "at": iso(entry["at"])} for entry in entries]

    def page(self, user_id: str | None, page: int, limit: int
             ) -> tuple[list[dict[str, Any]], int]:
        criteria = {"user_id": user_id} if user_id else {}
        total = self.orders.count_documents(criteria)
        found = (self.orders.find(criteria).sort("created_at", DESCENDING)
                 .skip((page - 1) * limit).limit(limit))
        return [public(order) for order in found], total

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
    are kept with the orders (as long as a client could retry)."""

    def __init__(self, placements: Collection) -> None:
        self.placements = placements

    def claim(self, placement_id: str, order_id: str, fingerprint: str) -> dict[str, Any] | None:
        """Take the key for a new order; the earlier placement when it was taken already."""
        try:
            self.placements.insert_one({"_id": placement_id, "order_id": order_id,
                                        "fingerprint": fingerprint, "status": None,
                                        "body": None, "created_at": now()})
        except DuplicateKeyError:
            return self.placements.find_one({"_id": placement_id})
        return None

    def get(self, placement_id: str) -> dict[str, Any] | None:
        return self.placements.find_one({"_id": placement_id})

    def answered(self, placement_id: str, status: int, body: Any) -> None:
        self.placements.update_one({"_id": placement_id},
                                   {"$set": {"status": status, "body": body}})
