"""What inventory publishes (exchange `inventory`) and what it consumes.

Publishes, through the outbox, in the same write as the change each one announces:

    stock.reserved             reservation_id, order_id, items          → notifications
    stock.released             reservation_id, order_id, items          → notifications
    stock.returned             reservation_id, order_id, items          → notifications
    stock.low                  product_id, available, threshold         → notifications, email
    stock.reservation_failed   order_id, reason, items (+ product_id, reservation_id)
                                                                        → orders (choreography)

Consumes:

    products/product.created on `inventory.products` — opens the product's stock record at 0,
        or at `initial_stock` when the event carries one (the demo catalogue). Idempotent by
        construction: the record's `_id` is the product id, so a duplicate changes nothing.
    orders/order.created on `inventory.orders` — only orders placed with `"flow": "events"`
        (choreography): reserves their items with the order id as the Idempotency-Key, so a
        redelivered event repeats the first answer and its event instead of reserving twice.
        Orders in the default, orchestrated flow reserve over HTTP; their event is ignored here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator

from patterns.bus import Handler, Message, PermanentError
from patterns.outbox import Event
from services.inventory.domain import (LINES_MAX, QUANTITY_MAX, InsufficientStock, Reservation,
                                       Stock, iso)

log = logging.getLogger(__name__)

EXCHANGE = "inventory"
PRODUCTS_QUEUE = "inventory.products"
ORDERS_QUEUE = "inventory.orders"
EVENTS_FLOW = "events"

ID = {"type": "string", "minLength": 1, "maxLength": 100}
LINE = {"type": "object", "required": ["product_id", "quantity"],
        "properties": {"product_id": ID,
                       "quantity": {"type": "integer", "minimum": 1, "maximum": QUANTITY_MAX}}}
PRODUCT_CREATED = Draft202012Validator({
    "type": "object", "required": ["product_id"],
    "properties": {"product_id": ID,
                   "initial_stock": {"type": "integer", "minimum": 0, "maximum": QUANTITY_MAX}}})
ORDER_CREATED = Draft202012Validator({
    "type": "object", "required": ["order_id", "items"],
    "properties": {"order_id": ID,
                   "items": {"type": "array", "minItems": 1, "maxItems": LINES_MAX,
                             "items": LINE}}})


# -- published -----------------------------------------------------------------------------------

def stock_reserved(reservation: Reservation, at: datetime) -> Event:
    return Event(EXCHANGE, "stock.reserved", _reservation_facts(reservation, at))


def stock_released(reservation: Reservation, at: datetime) -> Event:
    return Event(EXCHANGE, "stock.released", _reservation_facts(reservation, at))


def stock_returned(reservation: Reservation, at: datetime) -> Event:
    return Event(EXCHANGE, "stock.returned", _reservation_facts(reservation, at))


def stock_low(stock: Stock, at: datetime) -> Event:
    return Event(EXCHANGE, "stock.low", {
        "product_id": stock.product_id, "available": stock.available,
        "threshold": stock.low_stock_threshold, "occurred_at": iso(at)})


def stock_reservation_failed(reservation: Reservation, shortage: InsufficientStock,
                             at: datetime) -> Event:
    return Event(EXCHANGE, "stock.reservation_failed", {
        "order_id": reservation.order_id, "reason": shortage.code,
        "product_id": shortage.product_id, "reservation_id": reservation.id,
        "items": [line.view() for line in reservation.lines], "occurred_at": iso(at)})


def _reservation_facts(reservation: Reservation, at: datetime) -> dict:
    return {"reservation_id": reservation.id, "order_id": reservation.order_id,
            "items": [line.view() for line in reservation.lines], "occurred_at": iso(at)}


# -- consumed ------------------------------------------------------------------------------------

# The handlers are given the store operation they need, not the store: the stores build their
# events with this module's builders, so this module does not import them back.

def open_stock_records(create_stock: Callable[[Stock], bool]) -> Handler:
    """product.created → a stock record for the new product (`StockStore.create`)."""

    def open_stock_record(message: Message) -> None:
        _require_valid(PRODUCT_CREATED, message)
        product = message.body
        record = Stock.new(product["product_id"], available=product.get("initial_stock", 0))
        if create_stock(record):
            log.info("stock record opened", extra={
                "product_id": record.product_id, "available": record.available})

    return open_stock_record


def reserve_for_orders(reserve: Callable[..., Any]) -> Handler:
    """order.created with "flow": "events" → reserve its items, announce either outcome
    (`ReservationStore.reserve`)."""

    def reserve_stock_for_order(message: Message) -> None:
        order = message.body
        if not isinstance(order, dict) or order.get("flow") != EVENTS_FLOW:
            return  # orchestrated: the orders saga reserves over HTTP
        _require_valid(ORDER_CREATED, message)
        try:
            reserve(order["order_id"], order["items"], key=order["order_id"],
                    announce_failure=True)
        except InsufficientStock as shortage:
            log.info("order's stock not reserved", extra={
                "order_id": order["order_id"], "product_id": shortage.product_id})

    return reserve_stock_for_order


def _require_valid(validator: Draft202012Validator, message: Message) -> None:
    """A payload we cannot read is a permanent error: the bus dead-letters it at once."""
    problems = [error.message for error in validator.iter_errors(message.body)]
    if problems:
        raise PermanentError(f"{message.routing_key} {message.id} is not valid: "
                         f"{'; '.join(problems)[:300]}")
