"""The inventory service: stock per product, and reservations that never oversell.

    GET  /api/v1/inventory/<product_id>             → {product_id, available, reserved, sold,
                                                       low_stock_threshold}
    POST /api/v1/inventory/<product_id>/adjust      (admin) {operation: add|subtract, quantity}
                                                    → stock (subtracting below zero: 409)
    POST /api/v1/inventory/reservations             (admin) {order_id, items: [{product_id,
                                                    quantity}]} + Idempotency-Key → 201
                                                    reservation, or 409 insufficient_stock
    GET  /api/v1/inventory/reservations/<id>        (admin) → reservation
    POST /api/v1/inventory/reservations/<id>/release  (admin) → reservation (released)
    POST /api/v1/inventory/reservations/<id>/commit   (admin) → reservation (committed)
    POST /api/v1/inventory/reservations/<id>/return   (admin) + Idempotency-Key → reservation
                                                      (returned: its sold units back on sale)

Reservations are for the orders service, which calls with a service token carrying the admin
role: a customer holding stock directly (through the gateway) could lock up the shop.

A reservation takes all its lines or none. The Idempotency-Key is required: a repeat with the
same key gets the first answer (201 or 409, same body) without touching stock again; the same
key with a different body is a 409. Release and commit need no key: they are idempotent by
nature (the second call finds the reservation already in that state). Return (the order was
cancelled after it was confirmed) takes a key, as a refund does: a repeat with the key gets the
same answer; returning a reservation that is not committed, or was returned by another request,
is a 409, so sold units come back once.

Two ways to reserve, for the two saga styles of the lesson: the orders saga calls the HTTP API
(orchestration), or inventory reacts to `order.created` events marked `"flow": "events"`
(choreography) and answers with `stock.reserved` or `stock.reservation_failed`. Events and
consumers are in `events.py`; the rules in `domain.py`; the conditional writes that keep stock
consistent under concurrency and crashes in `store.py`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flask import Flask, request
from pymongo.errors import PyMongoError

from patterns.api import Api, BadRequest, NotFound
from patterns.auth import Claims
from patterns.service import ServiceKit
from patterns.settings import ServiceSettings
from services.inventory import events
from services.inventory.domain import (ADJUSTMENTS, LINES_MAX, QUANTITY_MAX, Status,
                                       new_reservation_id)
from services.inventory.store import ReservationStore, StockStore

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
VISIBLE_ASCII = r"^[\x21-\x7e]+$"  # ids and keys: a UUID, an order id, ...
IDEMPOTENCY_KEY = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": VISIBLE_ASCII}
# A reservation still pending after this long was abandoned half-way (its process died, or its
# database connection did, and no retry came); the sweeper releases it every SWEEP_EVERY.
ABANDONED_AFTER = timedelta(seconds=30)
SWEEP_EVERY = 15.0

ID = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": VISIBLE_ASCII}
QUANTITY = {"type": "integer", "minimum": 1, "maximum": QUANTITY_MAX}
ADJUSTMENT = {
    "type": "object", "additionalProperties": False, "required": ["operation", "quantity"],
    "properties": {"operation": {"type": "string", "enum": sorted(ADJUSTMENTS)},
                   "quantity": QUANTITY},
}
RESERVATION_REQUEST = {
    "type": "object", "additionalProperties": False, "required": ["order_id", "items"],
    "properties": {
        "order_id": ID,
        "items": {"type": "array", "minItems": 1, "maxItems": LINES_MAX, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["product_id", "quantity"],
            "properties": {"product_id": ID, "quantity": QUANTITY}}},
    },
}
STOCK = {
    "type": "object",
    "required": ["product_id", "available", "reserved", "sold", "low_stock_threshold"],
    "properties": {"product_id": {"type": "string"},
                   **{counter: {"type": "integer", "minimum": 0}
                      for counter in ("available", "reserved", "sold", "low_stock_threshold")}},
}
RESERVATION = {
    "type": "object",
    "required": ["id", "order_id", "items", "status", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"}, "order_id": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "product_id": {"type": "string"}, "quantity": {"type": "integer"}}}},
        "status": {"type": "string", "enum": [str(status) for status in Status]},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
    },
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: ServiceSettings, *, now: Callable[[], datetime] = utc_now,
               new_id: Callable[[], str] = new_reservation_id) -> Flask:
    kit = ServiceKit(settings, title="inventory",
                     description="Stock per product; reservations that take all items or none.")
    stock = StockStore(kit.outbox("stock"), now=now)
    reservations = ReservationStore(kit.outbox("reservations"), stock, now=now, new_id=new_id)
    start_sweeping_abandoned(kit, reservations)
    api = kit.api

    @api.get("/api/v1/inventory/<product_id>", summary="A product's stock", response=STOCK)
    def get_stock(product_id: str) -> dict:
        found = stock.find(product_id)
        if found is None:
            raise NotFound(f"no stock record for product {product_id}")
        return found.public_view()

    @api.post("/api/v1/inventory/<product_id>/adjust", body=ADJUSTMENT, auth="admin",
              errors=(409,), summary="Add stock, or take some away (never below zero)",
              response=STOCK)
    def adjust_stock(product_id: str, body: dict, user: Claims) -> dict:
        adjusted = stock.adjust(product_id, ADJUSTMENTS[body["operation"]], body["quantity"])
        log.info("stock adjusted", extra={"product_id": product_id, "by": user.subject,
                                          "operation": body["operation"],
                                          "quantity": body["quantity"]})
        return adjusted.public_view()

    @api.post("/api/v1/inventory/reservations", body=RESERVATION_REQUEST, auth="admin",
              status=201, errors=(409,), summary="Reserve an order's items: all of them or none",
              response=RESERVATION)
    def reserve_stock(body: dict, user: Claims) -> dict:
        return reservations.reserve(body["order_id"], body["items"], key=idempotency_key())

    declare_header(api, "/api/v1/inventory/reservations", "post", IDEMPOTENCY_HEADER,
                   IDEMPOTENCY_KEY, "Names this request: a repeat gets the first answer.")

    @api.get("/api/v1/inventory/reservations/<reservation_id>", auth="admin",
             summary="A reservation", response=RESERVATION)
    def get_reservation(reservation_id: str, user: Claims) -> dict:
        return reservations.find(reservation_id).public_view()

    @api.post("/api/v1/inventory/reservations/<reservation_id>/release", auth="admin",
              errors=(409,), summary="Give a reservation's stock back (idempotent)",
              response=RESERVATION)
    def release_reservation(reservation_id: str, user: Claims) -> dict:
        return reservations.release(reservation_id).public_view()

    @api.post("/api/v1/inventory/reservations/<reservation_id>/commit", auth="admin",
              errors=(409,), summary="Turn a reservation's stock into sold stock (idempotent)",
              response=RESERVATION)
    def commit_reservation(reservation_id: str, user: Claims) -> dict:
        return reservations.commit(reservation_id).public_view()

    @api.post("/api/v1/inventory/reservations/<reservation_id>/return", auth="admin",
              errors=(409,), summary="Put a committed reservation's sold stock back on sale "
                                     "(once per Idempotency-Key)", response=RESERVATION)
    def return_reservation(reservation_id: str, user: Claims) -> dict:
        returned = reservations.return_sold(reservation_id, key=idempotency_key())
        return returned.public_view()

    declare_header(api, "/api/v1/inventory/reservations/{reservation_id}/return", "post",
                   IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY,
                   "Names this return: a repeat gets the first answer.")

    kit.consume(events.PRODUCTS_QUEUE, events.open_stock_records(stock.create),
                ("products", "product.created"))
    kit.consume(events.ORDERS_QUEUE, events.reserve_for_orders(reservations.reserve),
                ("orders", "order.created"))
    kit.start()
    return kit.app


def start_sweeping_abandoned(kit: ServiceKit, reservations: ReservationStore) -> None:
    """Release abandoned reservations now (a restart after a crash) and then periodically."""
    stopping = threading.Event()

    def sweep() -> None:
        while not stopping.wait(SWEEP_EVERY):
            try:
                reservations.recover_abandoned(older_than=ABANDONED_AFTER)
            except PyMongoError as error:  # the database is down: try again next round
                log.warning("abandoned reservations not swept", extra={"error": str(error)})

    reservations.recover_abandoned(older_than=ABANDONED_AFTER)  # before serving: after a crash
    threading.Thread(target=sweep, name="reservation-sweeper", daemon=True).start()
    kit.on_stop(stopping.set)


def idempotency_key() -> str:
    """The request's Idempotency-Key header; 400 if it is missing or not a plain token."""
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not key:
        raise BadRequest(f"the {IDEMPOTENCY_HEADER} header is required: a retry with the same "
                         "key gets the first answer instead of moving stock twice")
    if not re.fullmatch(VISIBLE_ASCII, key) or len(key) > IDEMPOTENCY_KEY["maxLength"]:
        raise BadRequest(f"the {IDEMPOTENCY_HEADER} header must be 1-200 visible ASCII "
                         "characters (e.g. a UUID)")
    return key


def declare_header(api: Api, path: str, method: str, name: str, schema: dict,
                   description: str) -> None:
    """Document a required request header (patterns.api declares bodies and queries only)."""
    operation = api.document["paths"][path][method]
    operation["parameters"].append({"name": name, "in": "header", "required": True,
                                    "description": description, "schema": schema})
