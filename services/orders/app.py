"""The orders service: orders, placed by a saga across products, inventory and payments.

    POST /api/v1/orders               {items: [{product_id, quantity}]} (user from the token)
                                      -> 201 confirmed order | 409 / 402 / 503 with order_id and
                                      reason (the saga compensated) | 422 unknown product
    GET  /api/v1/orders/<id>          (owner or admin; 404 otherwise) with its status history
    GET  /api/v1/orders               mine, newest first (admin: all, or ?user_id=)
    POST /api/v1/orders/<id>/cancel   a confirmed order: refund, then cancelled

ORDER_FLOW=events switches placing to choreography: the order is stored pending, answered 202,
and finished by reacting to inventory's events (see events.py). The default is orchestration.

At start a background thread recovers sagas a crash left unfinished, then keeps retrying
compensations that could not run (SAGA_RECOVERY_INTERVAL seconds, 10 by default).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, jsonify

from patterns.api import PAGE_QUERY
from patterns.auth import Claims
from patterns.idempotency import ProcessedMessages, idempotent
from patterns.service import ServiceKit
from patterns.settings import ServiceSettings
from services.orders import domain, events
from services.orders.order_saga import OrderSagaLog, OrderSagas, Peers, SagaRecovery
from services.orders.store import OrderStore, now, public

log = logging.getLogger(__name__)

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


def create_app(settings: ServiceSettings) -> Flask:
    kit = ServiceKit(settings, title="orders",
                     description="Orders, placed by a saga: validate, reserve, charge, confirm.")
    flow = os.environ.get("ORDER_FLOW", domain.ORCHESTRATION)
    if flow not in (domain.ORCHESTRATION, domain.EVENTS):
        raise ValueError(f"ORDER_FLOW is {domain.ORCHESTRATION!r} or {domain.EVENTS!r}, "
                         f"not {flow!r}")
    orders = OrderStore(kit.outbox("orders"), kit.collection("order_history"))
    peers = Peers(kit)
    sagas = OrderSagas(orders, peers, OrderSagaLog(kit.collection("sagas")))
    choreography = events.OrderChoreography(orders, peers)

    @kit.api.post("/api/v1/orders", body=NEW_ORDER, auth=True, status=201, response=ORDER,
                  summary="Place an order (runs the order saga)", errors=(402, 409, 422, 503))
    def place_order(body: dict[str, Any], user: Claims):
        order_id = domain.new_id("ord")
        if flow == domain.EVENTS:
            response = jsonify(public(accept_for_choreography(order_id, user.subject,
                                                              body["items"])))
            response.status_code = 202
            return response
        return public(sagas.place(order_id, user.subject, body["items"]))

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
                  summary="Cancel a confirmed order: refund it", errors=(409, 503))
    def cancel_order(order_id: str, user: Claims):
        order = domain.visible_to(orders.get(order_id), user)
        return public(sagas.cancel(order))

    if flow == domain.EVENTS:
        processed = ProcessedMessages(kit.collection("processed_messages"), events.INVENTORY_QUEUE)
        kit.consume(events.INVENTORY_QUEUE, idempotent(choreography, processed),
                    *events.INVENTORY_BINDINGS)
    kit.start()
    interval = float(os.environ.get("SAGA_RECOVERY_INTERVAL", "10"))
    recovery = SagaRecovery(sagas, interval=interval).start()
    kit.on_stop(recovery.stop)
    kit.app.extensions["orders.sagas"] = sagas
    kit.app.extensions["orders.recovery"] = recovery
    return kit.app
