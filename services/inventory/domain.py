"""Inventory's rules: how units move between counters, and what a reservation may become.

No I/O here. `store.py` turns each rule into one conditional MongoDB update, so the database
enforces it even when requests race; the unit tests run the same rules in memory.

Stock. A product's units sit in one of three counters:

    available ──reserve──▶ reserved ──commit──▶ sold
        ▲  ▲                  │                   │
        │  └──────release─────┘                   │
        └──────────return (a cancelled order)─────┘
    restock adds to available; write_off takes from it (breakage, a stock count).

A movement that would take a counter below zero is refused (`InsufficientStock`, 409): stock is
never negative, and nothing is reserved that is not there.

Low stock. A product is low when `available <= low_stock_threshold`. The alert (`stock.low`) is
raised once when it becomes low and re-armed when it climbs above the threshold again, so a
run of reservations below the threshold raises one alert, not one each. A record created
already low (a new product at 0) is treated as already alerted: nothing dropped.

Reservations. All of an order's lines are reserved, or none:

    pending ──all lines taken──▶ reserved ──commit──▶ committed ──return──▶ returned
       │  └──a line short──▶ rejected      └─release─▶ released
       └──────────release (an abandoned attempt)──────▶ released

Release and commit are idempotent: asking again for the state a reservation is already in
changes nothing. Releasing a committed reservation, or committing a released one, is a 409.
Return puts a committed reservation's sold units back on sale (its order was cancelled); like a
refund it is done once per Idempotency-Key, and anything but a committed reservation is a 409.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from patterns.api import Conflict
from patterns.clock import iso_utc as iso

DEFAULT_LOW_STOCK_THRESHOLD = 10  # the lesson's minimum stock level
QUANTITY_MAX = 1_000_000
LINES_MAX = 50


def new_reservation_id() -> str:
    return f"res_{secrets.token_hex(6)}"


# -- stock ---------------------------------------------------------------------------------------

COUNTERS = ("available", "reserved", "sold")


@dataclass(frozen=True)
class Movement:
    """Units moving between counters: `deltas` says how each counter changes per unit."""

    name: str
    deltas: Mapping[str, int]

    def changes(self, quantity: int) -> dict[str, int]:
        """How much each counter changes when `quantity` units move."""
        return {counter: delta * quantity for counter, delta in self.deltas.items()}

    def requires(self, quantity: int) -> dict[str, int]:
        """What each counter must hold at least for the move to leave it non-negative."""
        return {counter: -delta * quantity for counter, delta in self.deltas.items()
                if delta < 0}


RESERVE = Movement("reserve", {"available": -1, "reserved": +1})
RELEASE = Movement("release", {"available": +1, "reserved": -1})
COMMIT = Movement("commit", {"reserved": -1, "sold": +1})
RETURN = Movement("return", {"sold": -1, "available": +1})
RESTOCK = Movement("restock", {"available": +1})
WRITE_OFF = Movement("write_off", {"available": -1})

ADJUSTMENTS = {"add": RESTOCK, "subtract": WRITE_OFF}


class InsufficientStock(Conflict):
    """Fewer units than asked for: the product and both numbers travel in the error body."""

    code = "insufficient_stock"

    def __init__(self, product_id: str, requested: int, available: int) -> None:
        super().__init__(f"not enough stock for {product_id}: {requested} requested, "
                         f"{available} available", product_id=product_id,
                         requested=requested, available=available)
        self.product_id = product_id


@dataclass(frozen=True)
class Stock:
    product_id: str
    available: int = 0
    reserved: int = 0
    sold: int = 0
    low_stock_threshold: int = DEFAULT_LOW_STOCK_THRESHOLD
    low_stock_alerted: bool = False

    @classmethod
    def new(cls, product_id: str, available: int = 0,
            low_stock_threshold: int = DEFAULT_LOW_STOCK_THRESHOLD) -> Stock:
        """A new stock record; one that starts low counts as alerted (nothing dropped)."""
        return cls(product_id, available=available, low_stock_threshold=low_stock_threshold,
                   low_stock_alerted=available <= low_stock_threshold)

    @property
    def is_low(self) -> bool:
        return self.available <= self.low_stock_threshold

    def move(self, movement: Movement, quantity: int) -> Stock:
        """The stock after the movement; `InsufficientStock` if a counter would go negative."""
        for counter, needed in movement.requires(quantity).items():
            if getattr(self, counter) < needed:
                raise InsufficientStock(self.product_id, quantity, self.available)
        changes = movement.changes(quantity)
        return replace(self, **{counter: getattr(self, counter) + change
                                for counter, change in changes.items()})

    def public_view(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "available": self.available,
                "reserved": self.reserved, "sold": self.sold,
                "low_stock_threshold": self.low_stock_threshold}


class LowStockSignal(StrEnum):
    ALERT = "alert"  # it just became low: raise stock.low
    REARM = "rearm"  # it is above the threshold again: the next drop alerts


def low_stock_signal(stock: Stock) -> LowStockSignal | None:
    """What the low-stock alert should do now, given the counters and whether it fired."""
    if stock.is_low and not stock.low_stock_alerted:
        return LowStockSignal.ALERT
    if not stock.is_low and stock.low_stock_alerted:
        return LowStockSignal.REARM
    return None


# -- reservations --------------------------------------------------------------------------------

class Status(StrEnum):
    PENDING = "pending"
    RESERVED = "reserved"
    REJECTED = "rejected"
    RELEASED = "released"
    COMMITTED = "committed"
    RETURNED = "returned"


@dataclass(frozen=True)
class Line:
    product_id: str
    quantity: int

    def view(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "quantity": self.quantity}


def merge_lines(items: Iterable[Mapping[str, Any]]) -> tuple[Line, ...]:
    """One line per product (quantities of repeated products added), in first-seen order."""
    quantities: dict[str, int] = {}
    for item in items:
        quantities[item["product_id"]] = quantities.get(item["product_id"], 0) + item["quantity"]
    return tuple(Line(product_id, quantity) for product_id, quantity in quantities.items())


def fingerprint(order_id: str, items: Iterable[Mapping[str, Any]]) -> str:
    """What a request asked for, so a reused idempotency key with another body is caught."""
    canonical = json.dumps({"order_id": order_id,
                            "items": [line.view() for line in merge_lines(items)]},
                           sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def status_after_release(status: Status) -> Status:
    """Release: the units go back to available. Nothing to give back after a rejection."""
    if status in (Status.COMMITTED, Status.RETURNED):
        raise Conflict(f"the reservation is {status}: its stock was sold, not held")
    if status == Status.REJECTED:
        return status
    return Status.RELEASED


def status_after_commit(status: Status) -> Status:
    """Commit: the reserved units are sold."""
    if status in (Status.RESERVED, Status.COMMITTED):
        return Status.COMMITTED
    raise Conflict(f"the reservation is {status}: only a reserved one can be committed")


def status_after_return(status: Status) -> Status:
    """Return: the sold units go back to available. Only a committed reservation has sold units;
    a returned one has none left (a repeat of the same request is answered before this rule)."""
    if status == Status.COMMITTED:
        return Status.RETURNED
    raise Conflict(f"the reservation is {status}: only a committed one can be returned",
                   reservation_status=str(status))


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        super().__init__(f"the Idempotency-Key {key!r} was used for a different request; "
                         "use a new key for a new request")


@dataclass(frozen=True)
class Reservation:
    id: str
    order_id: str
    lines: tuple[Line, ...]
    status: Status
    created_at: datetime
    updated_at: datetime

    def public_view(self) -> dict[str, Any]:
        return {"id": self.id, "order_id": self.order_id,
                "items": [line.view() for line in self.lines], "status": str(self.status),
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at)}
