"""Orders' rules, with no I/O: the order's life cycle, its price, and why a saga gave up.

Life cycle (a small state machine; every transition is recorded and announced):

    pending ──(saga confirmed it)──▶ confirmed ────(cancel: refund, return stock)────▶ cancelled
       └──────────(saga compensated: out of stock, declined, a peer down)─────────────▶ cancelled

Prices are a snapshot: each line keeps the product's price when the order was placed, so a later
price change never alters what the customer agreed to pay (and was charged).

The choreography variant (ORDER_FLOW=events) decides with the same rules: what to do when
inventory says it reserved the stock, or could not (`after_stock_reserved`, ...).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from patterns.api import ApiError, BadRequest, Conflict, NotFound, Unprocessable
from patterns.auth import Claims
from patterns.settings import SettingsError, number_from_env

PENDING, CONFIRMED, CANCELLED = "pending", "confirmed", "cancelled"
TRANSITIONS: Mapping[str, frozenset[str]] = {
    PENDING: frozenset({CONFIRMED, CANCELLED}),
    CONFIRMED: frozenset({CANCELLED}),
    CANCELLED: frozenset(),
}
ORCHESTRATION, EVENTS = "orchestration", "events"


@dataclass(frozen=True)
class OrdersConfig:
    """Orders' own knobs, read from the environment (ORDER_FLOW, ORDER_TAKEOVER_AFTER,
    SAGA_RECOVERY_INTERVAL)."""

    flow: str = ORCHESTRATION  # how an order is placed: a saga, or events (choreography)
    # Past this, an unanswered placement with no order is one whose process died before
    # creating the order: far longer than any request may run (the gateway gives up at 30 s).
    takeover_after: float = 120.0
    recovery_interval: float = 10.0  # seconds between passes over unfinished sagas

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OrdersConfig:
        defaults = cls()
        flow = environ.get("ORDER_FLOW") or defaults.flow
        if flow not in (ORCHESTRATION, EVENTS):
            raise SettingsError(f"ORDER_FLOW is {ORCHESTRATION!r} or {EVENTS!r}, not {flow!r}")
        return cls(flow=flow,
                   takeover_after=number_from_env(environ, "ORDER_TAKEOVER_AFTER",
                                                  defaults.takeover_after),
                   recovery_interval=number_from_env(environ, "SAGA_RECOVERY_INTERVAL",
                                                     defaults.recovery_interval))


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# -- why an order did not go through ----------------------------------------------------------

class OrderFailed(ApiError):
    """The saga gave up and compensated; `reason` is the short, stored form of why."""

    status, code = 503, "order_failed"
    reason = "order_failed"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, reason=self.reason, **details)


class InsufficientStock(OrderFailed):
    status, code, reason = 409, "insufficient_stock", "insufficient_stock"


class PaymentDeclined(OrderFailed):
    status, code, reason = 402, "payment_declined", "payment_declined"


class PeerUnavailable(OrderFailed):
    """A peer did not answer (down, timed out, its circuit open): the order could not be
    finished now, and what was done is undone."""

    status, code = 503, "peer_unavailable"

    def __init__(self, peer: str, message: str, *, may_have_applied: bool = True) -> None:
        self.reason = f"{peer}_unavailable"
        self.may_have_applied = may_have_applied  # could the peer have done it all the same?
        super().__init__(message, peer=peer)


class PeerRejected(OrderFailed):
    """A peer refused a call it should have taken: a contract mismatch, not the customer's fault."""

    status, code, reason = 502, "peer_rejected", "peer_rejected"


class UnknownProduct(Unprocessable):
    code = "unknown_product"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class OrderInProgress(Conflict):
    code = "order_in_progress"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


# -- placing an order once per Idempotency-Key -------------------------------------------------

def placement_id(user_id: str, key: str) -> str:
    """One placement per customer and key: two customers may pick the same key."""
    return "plc_" + hashlib.sha256(f"{user_id}\n{key}".encode()).hexdigest()[:24]


def order_fingerprint(items: Sequence[Mapping[str, Any]]) -> str:
    """What the request asked for, so the same key with another basket is refused."""
    return hashlib.sha256(json.dumps(list(items), sort_keys=True).encode()).hexdigest()


def check_same_order(placement: Mapping[str, Any], fingerprint: str) -> None:
    if placement["fingerprint"] != fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key placed another order; use a new key "
                                   "for a new order", order_id=placement["order_id"])


# -- the order ---------------------------------------------------------------------------------

def check_transition(current: str, target: str) -> None:
    if target not in TRANSITIONS.get(current, frozenset()):
        raise InvalidTransition(f"an order cannot go from {current} to {target}",
                                order_status=current)


def check_distinct(items: Sequence[Mapping[str, Any]]) -> None:
    products = [item["product_id"] for item in items]
    if len(set(products)) != len(products):
        raise BadRequest("list each product once (put the count in its quantity)")


def price_items(items: Sequence[Mapping[str, Any]], products: Mapping[str, Mapping[str, Any]]
                ) -> tuple[list[dict[str, Any]], int]:
    """The order's lines with each product's current price, and the total, in cents."""
    lines = []
    for item in items:
        product = products.get(item["product_id"])
        if product is None:
            raise UnknownProduct(f"no product {item['product_id']!r}",
                                 product_id=item["product_id"])
        if not product.get("active", True):
            raise UnknownProduct(f"product {item['product_id']!r} is not for sale",
                                 product_id=item["product_id"])
        lines.append({"product_id": item["product_id"], "name": product.get("name", ""),
                      "quantity": item["quantity"], "price_cents": int(product["price_cents"])})
    return lines, sum(line["price_cents"] * line["quantity"] for line in lines)


def new_order(order_id: str, user_id: str, lines: Sequence[Mapping[str, Any]], total_cents: int,
              saga_id: str | None, flow: str, now: datetime) -> dict[str, Any]:
    return {"_id": order_id, "user_id": user_id, "items": [dict(line) for line in lines],
            "total_cents": total_cents, "status": PENDING, "reason": None, "saga_id": saga_id,
            "flow": flow, "reservation_id": None, "payment_id": None,
            "created_at": now, "updated_at": now}


def visible_to(order: Mapping[str, Any] | None, user: Claims) -> Mapping[str, Any]:
    """The order if the caller may see it; 404 otherwise, so ids of others' orders do not leak."""
    if order is None or not (user.has_role("admin") or order["user_id"] == user.subject):
        raise NotFound("no such order")
    return order


def check_cancellable(order: Mapping[str, Any]) -> None:
    """Only a confirmed order is cancelled on request; a pending one is still in its saga."""
    if order["status"] == PENDING:
        raise OrderInProgress("the order is still being placed; try again in a moment",
                              order_id=order["_id"])
    check_transition(order["status"], CANCELLED)


def listing_owner(user: Claims, requested: str | None) -> str | None:
    """Whose orders a listing shows: one's own; an admin may name anyone, or no one (all)."""
    if user.has_role("admin"):
        return requested
    if requested not in (None, user.subject):
        raise NotFound("no such user")
    return user.subject


# -- choreography: what orders does when inventory has spoken ----------------------------------

class Reaction(StrEnum):
    CHARGE = "charge"      # stock is held: take the money
    CANCEL = "cancel"      # no stock: cancel the order, nothing else to undo
    IGNORE = "ignore"      # a duplicate or late event: the order has moved on


def after_stock_reserved(order: Mapping[str, Any] | None) -> Reaction:
    return Reaction.CHARGE if order is not None and order["status"] == PENDING else Reaction.IGNORE


def after_reservation_failed(order: Mapping[str, Any] | None) -> Reaction:
    return Reaction.CANCEL if order is not None and order["status"] == PENDING else Reaction.IGNORE
