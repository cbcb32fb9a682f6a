"""What orders announces (exchange `orders`) and, in the choreography variant, what it consumes.

Published, each through the order document's outbox in the same write as the change:

- `order.created`        — order_id, user_id, items [{product_id, quantity, price_cents}],
                           total_cents, flow ("orchestration" or "events": inventory reserves
                           stock on this event only when the flow is "events")
- `order.status_changed` — order_id, user_id, from, to (every transition)
- `order.confirmed`      — order_id, user_id, total_cents
- `order.cancelled`      — order_id, user_id, reason

Consumed when ORDER_FLOW=events, on queue `orders.inventory`:

- `stock.reserved` (inventory) — charge the order over HTTP; captured: commit the reservation
  and confirm; declined: release the reservation and cancel.
- `stock.reservation_failed` (inventory) — cancel the order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from patterns.bus import Message, PermanentError
from patterns.outbox import Event
from services.orders import domain
from services.orders.domain import CANCELLED, CONFIRMED, PaymentDeclined, Reaction

log = logging.getLogger(__name__)

EXCHANGE = "orders"
INVENTORY_QUEUE = "orders.inventory"
INVENTORY_BINDINGS = (("inventory", "stock.reserved"), ("inventory", "stock.reservation_failed"))


def _occurred_at() -> str:
    return datetime.now(UTC).isoformat()


def order_created(order: Mapping[str, Any]) -> Event:
    return Event(EXCHANGE, "order.created", {
        "order_id": order["_id"], "user_id": order["user_id"],
        "items": [{"product_id": line["product_id"], "quantity": line["quantity"],
                   "price_cents": line["price_cents"]} for line in order["items"]],
        "total_cents": order["total_cents"], "flow": order["flow"],
        "occurred_at": _occurred_at()})


def transition_events(order: Mapping[str, Any], target: str, reason: str | None) -> list[Event]:
    """`order.status_changed`, plus `order.confirmed` or `order.cancelled`."""
    base = {"order_id": order["_id"], "user_id": order["user_id"]}
    events = [Event(EXCHANGE, "order.status_changed", {
        **base, "from": order["status"], "to": target, "occurred_at": _occurred_at()})]
    if target == CONFIRMED:
        events.append(Event(EXCHANGE, "order.confirmed", {
            **base, "total_cents": order["total_cents"], "occurred_at": _occurred_at()}))
    elif target == CANCELLED:
        events.append(Event(EXCHANGE, "order.cancelled", {
            **base, "reason": reason, "occurred_at": _occurred_at()}))
    return events


# -- choreography ------------------------------------------------------------------------------

class Orders(Protocol):
    def get(self, order_id: str) -> dict[str, Any] | None: ...

    def confirm(self, order_id: str, *, payment_id: str, reservation_id: str) -> bool: ...

    def cancel(self, order_id: str, reason: str) -> bool: ...


class PaymentsAndStock(Protocol):
    """The HTTP calls the choreography makes (`order_saga.Peers` in the app)."""

    def charge(self, order: Mapping[str, Any], key: str) -> str: ...

    def commit_reservation(self, reservation_id: str, key: str) -> None: ...

    def release_reservation(self, reservation_id: str, key: str) -> None: ...


class OrderChoreography:
    """Orders' part when no one orchestrates: react to inventory's outcome, then finish the order.

    Each reaction is idempotent: the order's status says whether it was done, and every remote
    call carries a key derived from the order, so a redelivered event changes nothing twice.
    A peer that does not answer raises: the bus retries the message later."""

    def __init__(self, orders: Orders, peers: PaymentsAndStock) -> None:
        self.orders = orders
        self.peers = peers

    def __call__(self, message: Message) -> None:
        if message.routing_key == "stock.reserved":
            self.stock_reserved(message.body)
        elif message.routing_key == "stock.reservation_failed":
            self.reservation_failed(message.body)
        else:
            raise PermanentError(f"orders does not consume {message.routing_key!r}")

    def stock_reserved(self, event: Mapping[str, Any]) -> None:
        order = self.orders.get(event["order_id"])
        if domain.after_stock_reserved(order) is Reaction.IGNORE:
            log.info("stock.reserved ignored", extra={"order_id": event["order_id"]})
            return
        order_id, reservation_id = order["_id"], event["reservation_id"]
        try:
            payment_id = self.peers.charge(order, key=f"{order_id}:charge")
        except PaymentDeclined:
            self.peers.release_reservation(reservation_id, key=f"{order_id}:release")
            self.orders.cancel(order_id, PaymentDeclined.reason)
            log.info("order cancelled: payment declined", extra={"order_id": order_id})
            return
        self.peers.commit_reservation(reservation_id, key=f"{order_id}:commit")
        self.orders.confirm(order_id, payment_id=payment_id, reservation_id=reservation_id)
        log.info("order confirmed by choreography", extra={"order_id": order_id})

    def reservation_failed(self, event: Mapping[str, Any]) -> None:
        order = self.orders.get(event["order_id"])
        if domain.after_reservation_failed(order) is Reaction.IGNORE:
            return
        self.orders.cancel(order["_id"], "insufficient_stock")
        log.info("order cancelled: no stock", extra={"order_id": order["_id"],
                                                     "detail": event.get("reason")})
