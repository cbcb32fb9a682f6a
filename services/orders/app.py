"""The orders service: orders, placed by a saga across products, inventory and payments.

    POST /api/v1/orders               {items: [{product_id, quantity}]} (user from the token)
                                      -> 201 confirmed order | 409 / 402 / 503 with order_id and
                                      reason (the saga compensated) | 422 unknown product
                                      + Idempotency-Key (optional): the same key gets the same
                                      answer for the same order (waiting while the first runs),
                                      never a second order; another basket with it -> 409
    GET  /api/v1/orders/<id>          (owner or admin; 404 otherwise) with its status history
    GET  /api/v1/orders               mine, newest first (admin: all, or ?user_id=)
    POST /api/v1/orders/<id>/cancel   a confirmed order: refund, return the stock, cancelled
    GET  /admin/sagas?limit=20        (admin) the latest sagas of the saga log: each step's
                                      state (done, failed, compensated...) and the outcome

ORDER_FLOW=events switches placing to choreography: the order is stored pending, answered 202,
and finished by reacting to inventory's events (see events.py). The default is orchestration.

At start a background thread recovers sagas a crash left unfinished, then keeps retrying
compensations that could not run (SAGA_RECOVERY_INTERVAL seconds, 10 by default).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Flask, request

from patterns.api import PAGE_QUERY, ApiError, BadRequest, error_document, send_stored
from patterns.auth import Claims
from patterns.idempotency import ProcessedMessages, idempotent
from patterns.service import ServiceKit
from patterns.settings import ServiceSettings
from services.orders import domain, events
from services.orders.order_saga import OrderSagaLog, OrderSagas, Peers, SagaRecovery
from services.orders.store import OrderStore, PlacementStore, now, public

log = logging.getLogger(__name__)
MAX_KEY_LENGTH = 200
# How long a repeat of a placement waits for the first request's answer: within the gateway's
# 30 s read timeout for orders.
ANSWER_WAIT = 25.0

ID = {"type": "string", "minLength": 1, "maxLength": 64}
NEW_ORDER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["items"],
    "properties": {"items": {
        "type": "array", "minItems": 1, "maxItems": 20,
        "items": {"type": "object", "additionalProperties": False,
                  "required": ["product_id", "quantity"],
                  "properties": {"product_id": ID,
                                 "quantity": {"type": "integer", "minimum": 1, "maximum": 100}}},
    }},
}
ORDER = {"type": "object", "required": ["id", "user_id", "items", "total_cents", "status"]}
PAGE = {"type": "object", "required": ["items", "page", "limit", "total"]}
SAGA = {"type": "object", "required": ["id", "saga", "status", "steps", "updated_at"]}
SAGAS = {"type": "object", "required": ["items"],
         "properties": {"items": {"type": "array", "items": SAGA}}}


def create_app(settings: ServiceSettings) -> Flask:
    config = domain.OrdersConfig.from_env(os.environ)
    flow = config.flow
    kit = ServiceKit(settings, title="orders",
                     description="Orders, placed by a saga: validate, reserve, charge, confirm.")
    orders = OrderStore(kit.outbox("orders"), kit.collection("order_history"))
    peers = Peers(kit)
    saga_log = OrderSagaLog(kit.collection("sagas"))
    sagas = OrderSagas(orders, peers, saga_log)
    choreography = events.OrderChoreography(orders, peers)

    placements = PlacementStore(kit.collection("placements"))

    @kit.api.post("/api/v1/orders", body=NEW_ORDER, auth=True, status=201, response=ORDER,
                  summary="Place an order (runs the order saga; Idempotency-Key: once per key)",
                  errors=(402, 409, 422, 503))
    def place_order(body: dict[str, Any], user: Claims):
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key:
            return send_stored(*placed(domain.new_id("ord"), user.subject, body["items"]))
        if len(key) > MAX_KEY_LENGTH:
            raise BadRequest(f"the Idempotency-Key is at most {MAX_KEY_LENGTH} characters")
        placement = domain.placement_id(user.subject, key)
        fingerprint = domain.order_fingerprint(body["items"])
        earlier = placements.claim(placement, domain.new_id("ord"), fingerprint)
        if earlier is not None:
            domain.check_same_order(earlier, fingerprint)
            if (orders.get(earlier["order_id"]) is None
                    and placements.take_over(earlier, config.takeover_after)):
                log.warning("order placement taken over from a claimant that went silent",
                            extra={"order_id": earlier["order_id"]})
                return send_stored(*placed_once(placement, user.subject, body["items"]))
            return send_stored(*answer_again(earlier))
        return send_stored(*placed_once(placement, user.subject, body["items"]))

    def placed_once(placement: str, user_id: str, items: list[dict]) -> tuple[int, dict]:
        """Place the placement's order and keep the answer for the repeats, error or not."""
        order_id = placements.get(placement)["order_id"]
        try:
            status, document = placed(order_id, user_id, items)
        except ApiError as error:
            placements.answered(placement, error.status, error_document(error))
            raise
        placements.answered(placement, status, document)
        return status, document

    def placed(order_id: str, user_id: str, items: list[dict]) -> tuple[int, dict]:
        """(status, body) of a new order: confirmed by the saga, or accepted for events."""
        if flow == domain.EVENTS:
            return 202, public(accept_for_choreography(order_id, user_id, items))
        return 201, public(sagas.place(order_id, user_id, items))

    def answer_again(placement: dict[str, Any]) -> tuple[int, Any]:
        """The answer the first request with this key got (waiting for it while that request
        is still running); from the order itself when the first request's process died and
        recovery finished its saga."""
        deadline = time.monotonic() + ANSWER_WAIT
        while placement["status"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
            placement = placements.get(placement["_id"])
        if placement["status"] is not None:
            log.info("order placement repeated, answering as before",
                     extra={"order_id": placement["order_id"]})
            return placement["status"], placement["body"]
        order = orders.get(placement["order_id"])
        if order is not None and order["status"] == domain.CONFIRMED:
            return 201, public(order)
        if order is not None and order["status"] == domain.CANCELLED:
            failed = domain.OrderFailed(f"the order was cancelled: {order['reason']}",
                                        order_id=order["_id"], reason=order["reason"])
            return failed.status, error_document(failed)
        raise domain.OrderInProgress("the order placed with this Idempotency-Key is still "
                                     "running; ask again in a moment",
                                     order_id=placement["order_id"])

    def accept_for_choreography(order_id: str, user_id: str, items: list[dict]) -> dict:
        """Validate and store the order; inventory takes it from `order.created`."""
        domain.check_distinct(items)
        products = {item["product_id"]: peers.product(item["product_id"]) for item in items}
        lines, total = domain.price_items(
            items, {key: value for key, value in products.items() if value is not None})
        order = domain.new_order(order_id, user_id, lines, total, None, domain.EVENTS,
                                 now=now())
        orders.create(order)
        log.info("order accepted for choreography", extra={"order_id": order_id})
        return order

    @kit.api.get("/api/v1/orders/<order_id>", auth=True, response=ORDER,
                 summary="One order with its status history (owner or admin)")
    def get_order(order_id: str, user: Claims):
        order = domain.visible_to(orders.get(order_id), user)
        return {**public(order), "history": orders.history_of(order_id)}

    @kit.api.get("/api/v1/orders", auth=True, response=PAGE,
                 query={"user_id": ID, **PAGE_QUERY},
                 summary="My orders, newest first (admin: anyone's, or all)")
    def list_orders(query: dict[str, Any], user: Claims):
        owner = domain.listing_owner(user, query.get("user_id"))
        items, total = orders.page(owner, query["page"], query["limit"])
        return {"items": items, "page": query["page"], "limit": query["limit"], "total": total}

    @kit.api.post("/api/v1/orders/<order_id>/cancel", auth=True, response=ORDER,
                  summary="Cancel a confirmed order: refund it and return its stock",
                  errors=(409, 503))
    def cancel_order(order_id: str, user: Claims):
        order = domain.visible_to(orders.get(order_id), user)
        return public(sagas.cancel(order))

    @kit.api.get("/admin/sagas", auth="admin", response=SAGAS,
                 query={"limit": PAGE_QUERY["limit"]},
                 summary="The latest sagas, newest first: steps, compensations and outcome")
    def recent_sagas(query: dict[str, Any], user: Claims):
        return {"items": saga_log.recent(query["limit"])}

    if flow == domain.EVENTS:
        processed = ProcessedMessages(kit.collection("processed_messages"), events.INVENTORY_QUEUE)
        kit.consume(events.INVENTORY_QUEUE, idempotent(choreography, processed),
                    *events.INVENTORY_BINDINGS)
    kit.start()
    recovery = SagaRecovery(sagas, interval=config.recovery_interval).start()
    kit.on_stop(recovery.stop)
    kit.app.extensions["orders.sagas"] = sagas
    kit.app.extensions["orders.recovery"] = recovery
    return kit.app
