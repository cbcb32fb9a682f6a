"""Small stand-ins for products and inventory that keep their documented contracts
(docs/services.md), for testing orders alone. They record every call, so a test can tell
"called twice" from "applied twice", and can be switched `down` (every answer a 503).

- products: `GET /api/v1/products/<id>` -> product {id, name, price_cents, active} or 404.
- inventory: `POST /api/v1/inventory/reservations` {order_id, items} + Idempotency-Key -> 201
  reservation (all items or none: 409 insufficient_stock; a repeated key gets the first answer);
  `POST .../reservations/<id>/release|commit`; `POST .../reservations/<id>/return` +
  Idempotency-Key (a committed reservation's units back to available; not committed: 409);
  `GET .../reservations/<id>`;
  `GET /api/v1/inventory/<product_id>`.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, jsonify, request


def _error(status: int, code: str, message: str, **details: Any):
    return jsonify(error={"code": code, "message": message, **details}), status


def refusal(reservation: dict | None, status: str) -> tuple[int, dict] | None:
    """Inventory's answer when `reservation` is missing or not in `status`; None if it may go on."""
    if reservation is None:
        return 404, {"error": {"code": "not_found", "message": "no reservation"}}
    if reservation["status"] != status:
        return 409, {"error": {"code": "conflict",
                               "message": f"reservation is {reservation['status']}"}}
    return None


def _down_switch(app: Flask, state: Any) -> None:
    @app.before_request
    def maybe_down():
        state.calls.append((request.method, request.path, request.headers.get("Idempotency-Key")))
        if state.down:
            return _error(503, "unavailable", "switched off by the test")
        return None


@dataclass
class Catalogue:
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)
    down: bool = False

    def add(self, product_id: str, price_cents: int, active: bool = True) -> str:
        self.products[product_id] = {"id": product_id, "name": f"Product {product_id}",
                                     "price_cents": price_cents, "active": active}
        return product_id

    def app(self) -> Flask:
        app = Flask("products-stand-in")
        _down_switch(app, self)

        @app.get("/api/v1/products/<product_id>")
        def get_product(product_id: str):
            product = self.products.get(product_id)
            return jsonify(product) if product else _error(404, "not_found", "no such product")

        return app


@dataclass
class Stockroom:
    available: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)
    reservations: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)  # idempotency key -> answer
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)
    down: bool = False
    lose_answers: int = 0  # this many next answers are lost: the work is done, a 502 goes back
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stock(self, product_id: str, available: int) -> None:
        self.available[product_id] = available
        self.reserved.setdefault(product_id, 0)

    def posts(self, suffix: str) -> list[tuple[str, str, str | None]]:
        return [call for call in self.calls if call[0] == "POST" and call[1].endswith(suffix)]

    def app(self) -> Flask:
        app = Flask("inventory-stand-in")
        _down_switch(app, self)

        def once(work):
            """Answer a repeated Idempotency-Key with the first answer, doing nothing."""
            key = request.headers.get("Idempotency-Key")
            with self.lock:
                if key and key in self.answers:
                    status, body = self.answers[key]
                    return jsonify(body), status
                status, body = work()
                if key:
                    self.answers[key] = (status, body)
                if self.lose_answers:
                    self.lose_answers -= 1
                    return _error(502, "bad_gateway", "the answer was lost on the way back")
                return jsonify(body), status

        @app.post("/api/v1/inventory/reservations")
        def reserve():
            body = request.get_json()

            def work():
                for item in body["items"]:
                    if self.available.get(item["product_id"], 0) < item["quantity"]:
                        return 409, {"error": {"code": "insufficient_stock",
                                               "message": f"not enough {item['product_id']}",
                                               "product_id": item["product_id"]}}
                for item in body["items"]:
                    self.available[item["product_id"]] -= item["quantity"]
                    self.reserved[item["product_id"]] += item["quantity"]
                reservation = {"id": f"res_{uuid.uuid4().hex[:12]}", "order_id": body["order_id"],
                               "items": body["items"], "status": "reserved"}
                self.reservations[reservation["id"]] = reservation
                return 201, reservation

            return once(work)

        @app.post("/api/v1/inventory/reservations/<reservation_id>/<any(release, commit):verb>")
        def settle(reservation_id: str, verb: str):
            def work():
                reservation = self.reservations.get(reservation_id)
                refused = refusal(reservation, "reserved")
                if refused:
                    return refused
                for item in reservation["items"]:
                    self.reserved[item["product_id"]] -= item["quantity"]
                    if verb == "release":
                        self.available[item["product_id"]] += item["quantity"]
                reservation["status"] = "released" if verb == "release" else "committed"
                return 200, reservation

            return once(work)

        @app.post("/api/v1/inventory/reservations/<reservation_id>/return")
        def return_sold(reservation_id: str):
            def work():
                reservation = self.reservations.get(reservation_id)
                refused = refusal(reservation, "committed")
                if refused:
                    return refused
                for item in reservation["items"]:
                    self.available[item["product_id"]] += item["quantity"]
                reservation["status"] = "returned"
                return 200, reservation

            return once(work)

        @app.get("/api/v1/inventory/reservations/<reservation_id>")
        def get_reservation(reservation_id: str):
            reservation = self.reservations.get(reservation_id)
            return jsonify(reservation) if reservation else _error(404, "not_found", "none")

        @app.get("/api/v1/inventory/<product_id>")
        def get_stock(product_id: str):
            if product_id not in self.available:
                return _error(404, "not_found", "no such product")
            return jsonify({"product_id": product_id, "available": self.available[product_id],
                            "reserved": self.reserved[product_id], "low_stock_threshold": 5})

        return app
